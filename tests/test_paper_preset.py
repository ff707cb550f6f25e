"""``--preset paper`` and the three PPO-loop flags it sets (issue 18, point 1).

Each flag is tested twice: its arithmetic against a hand computation on a tiny rollout
(:mod:`agents.ppo_math`), and in the agent, where flipping it alone must change training while
two runs with the same flags stay bit-identical (so the difference is the flag's).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from agents import ppo_continual
from agents.config import OMEGA_SCALE, parse_args
from agents.ppo_math import build_optimizer, compute_gae, normalize_advantages, optimizer_covers
from agents.network import Agent
from envs.atari import PAPER_GAMES

GAMMA, LAM = 0.9, 0.5


def test_gae_without_truncation_matches_the_recursion_written_out():
    # one env, 3 steps; a game ends after step 1 (the observation of step 2 starts a new game)
    r = torch.tensor([[1.0], [2.0], [0.5]])
    v = torch.tensor([[0.3], [0.7], [0.2]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    next_value, next_done = torch.tensor([0.4]), torch.tensor([0.0])
    adv, ret = compute_gae(r, v, dones, next_value, next_done, GAMMA, LAM)
    d2 = 0.5 + GAMMA * 0.4 - 0.2
    d1 = 2.0 - 0.7  # terminal: no bootstrap
    d0 = 1.0 + GAMMA * 0.7 - 0.3
    expected = [d0 + GAMMA * LAM * d1, d1, d2]
    assert adv[:, 0].tolist() == pytest.approx(expected)
    assert ret[:, 0].tolist() == pytest.approx([e + x for e, x in zip(expected, [0.3, 0.7, 0.2])])


def test_bootstrapped_truncation_adds_the_discounted_final_value_and_still_cuts_the_trace():
    r = torch.tensor([[1.0], [2.0], [0.5]])
    v = torch.tensor([[0.3], [0.7], [0.2]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])  # step 1 was cut by the time limit
    next_value, next_done = torch.tensor([0.4]), torch.tensor([0.0])
    v_final = 5.0  # value of the cut game's final observation
    final = torch.tensor([[0.0], [v_final], [0.0]])
    adv, ret = compute_gae(r, v, dones, next_value, next_done, GAMMA, LAM, final_values=final)
    d2 = 0.5 + GAMMA * 0.4 - 0.2
    d1 = 2.0 + GAMMA * v_final - 0.7  # bootstrapped target r + gamma V(final)
    d0 = 1.0 + GAMMA * 0.7 - 0.3
    expected = [d0 + GAMMA * LAM * d1, d1, d2]  # step 2's advantage does not flow into step 1
    assert adv[:, 0].tolist() == pytest.approx(expected)
    assert ret[1, 0].item() == pytest.approx(2.0 + GAMMA * v_final)
    plain, _ = compute_gae(r, v, dones, next_value, next_done, GAMMA, LAM)
    assert not torch.allclose(adv, plain)


def test_batch_normalization_differs_from_per_minibatch_normalization():
    adv = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    whole = normalize_advantages(adv)
    mean, std = sum(adv.tolist()) / 6, float(np.std(adv.numpy(), ddof=1))
    assert whole.tolist() == pytest.approx([(a - mean) / std for a in adv.tolist()], rel=1e-6)
    per_mb = torch.cat([normalize_advantages(adv[:3]), normalize_advantages(adv[3:])])
    assert per_mb.tolist() == pytest.approx([-1, 0, 1, -1, 0, 1])
    assert not torch.allclose(whole, per_mb)


def test_sequence_optimizer_keeps_one_state_and_adds_each_new_head():
    agent = Agent((4,), 8, "minatar")
    agent.add_head(3)
    opt = build_optimizer(agent.trunk, agent.heads, 0, 1e-3, per_game=False)
    assert len(opt.param_groups) == 2
    agent.add_head(5)
    optimizer_covers(opt, agent.heads)
    assert len(opt.param_groups) == 3 and opt.param_groups[2]["params"][0] is agent.heads[1][0].weight
    per_game = build_optimizer(agent.trunk, agent.heads, 1, 1e-3, per_game=True)
    ids = {id(p) for g in per_game.param_groups for p in g["params"]}
    assert id(agent.heads[1][0].weight) in ids and id(agent.heads[0][0].weight) not in ids


def test_preset_paper_sets_the_authors_values_and_cleanrl_stays_the_default():
    paper = parse_args(ppo_continual.Args, ["--preset", "paper"])
    assert paper.clip_coef == 0.2 and not paper.optimizer_per_game and paper.norm_adv_scope == "batch"
    # their Atari envs never get TimeLimitMask (the outer wrapper is MaxAndSkipEnv): a cut game is a game over;
    # gym's NoFrameskip-v4 TimeLimit (400k frames) caps training and evaluation games alike
    assert not paper.bootstrap_time_limits and paper.train_max_frames == 400_000 and paper.eval_max_frames == 400_000
    assert paper.eval_greedy and paper.trunk_init == "torch_default"  # deterministic=True; CNNBase without init_
    assert paper.rho == 1.0 and paper.mu == 0.1 and paper.agscl_lambda == 1000 * OMEGA_SCALE
    assert paper.importance_obs == 20 * 128
    plain = parse_args(ppo_continual.Args, [])
    assert plain.clip_coef == 0.1 and plain.optimizer_per_game and plain.norm_adv_scope == "minibatch"
    assert not plain.bootstrap_time_limits and not plain.eval_greedy and plain.trunk_init == "orthogonal"
    flags = parse_args(ppo_continual.Args, ["--preset", "paper", "--optimizer-per-game", "--norm-adv-scope", "minibatch",
                                             "--bootstrap-time-limits", "--clip-coef", "0.1", "--trunk-init", "orthogonal"])
    assert flags.optimizer_per_game and flags.norm_adv_scope == "minibatch" and flags.bootstrap_time_limits
    assert flags.trunk_init == "orthogonal"
    assert flags.clip_coef == 0.1


def test_bad_norm_adv_scope_is_one_line_and_exit_2(tmp_path, capsys):
    assert ppo_continual.main(["--norm-adv-scope", "epoch", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "invalid choice 'epoch' for argument '--norm-adv-scope'" in err  # not tyro's box


def test_paper_fig7_config_is_the_figure_7_grid_under_the_preset(tmp_path):
    from sweep.spec import build_spec, load_toml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = build_spec(load_toml(os.path.join(root, "bench", "configs", "paper_fig7.toml")), None, None, None, [], [])
    trials = spec.trials(tmp_path)
    by_method = {m: [t for t in trials if t.method == m] for m in ("finetune", "ewc", "mas", "agscl", "packnet")}
    assert {m: len(t) for m, t in by_method.items()} == {"finetune": 3, "ewc": 9, "mas": 6, "agscl": 6, "packnet": 3}
    assert {t.params for t in by_method["agscl"]} == {(("agscl_lambda", 2100.0),), (("agscl_lambda", 21000.0),)}
    assert all(t.reference is not None for m in ("ewc", "mas", "agscl", "packnet") for t in by_method[m])
    for trial in trials:
        args = parse_args(ppo_continual.Args, list(trial.argv(tmp_path)))
        assert args.preset == "paper" and args.games == PAPER_GAMES and args.steps_per_game == (10_000_000,)
        assert args.num_envs == 128 and not args.optimizer_per_game and args.seed in (1, 2, 3)


# -- in the agent: MinAtar, tiny ------------------------------------------------------------
needs_minatar = pytest.mark.skipif(importlib.util.find_spec("minatar") is None,
                                   reason='the MinAtar suite needs pip install -e ".[minatar]"')

TINY = ["--suite", "minatar", "--steps-per-game", "128", "--num-envs", "4", "--num-steps", "32",
        "--num-minibatches", "4", "--update-epochs", "2", "--eval-every", "0", "--eval-episodes", "1",
        "--random-episodes", "1", "--eval-envs", "1", "--eval-max-frames", "20", "--importance-obs", "32",
        "--importance-batch", "32", "--seed", "7", "--torch-threads", "1", "--method", "finetune",
        "--no-fewer-syncs", "--checkpoint-every", "0"]


def _run(tmp_path, name: str, *extra: str, games: tuple[str, ...] = ("Breakout",)) -> dict:
    rc = ppo_continual.main([*TINY, "--games", *games, "--runs-dir", str(tmp_path), "--run-name", name, *extra])
    assert rc == 0
    return torch.load(os.path.join(tmp_path, name, "ckpt", "latest.pt"), weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a["agent"][k], b["agent"][k]) for k in a["agent"])


@needs_minatar
@pytest.mark.parametrize("flag, extra", [
    ("norm-adv-scope", ["--norm-adv-scope", "batch"]),
    ("bootstrap-time-limits", ["--bootstrap-time-limits"]),
    ("clip-coef", ["--clip-coef", "0.2"]),
])
def test_each_flag_changes_training_and_nothing_else_does(tmp_path, flag, extra):
    # Breakout games last tens of steps: a 6-step training cap truncates many of them
    cap = ["--train-max-frames", "6"]
    base = _run(tmp_path, "base", *cap)
    again = _run(tmp_path, "again", *cap)
    flipped = _run(tmp_path, "flipped", *cap, *extra)
    assert _same(base, again)  # the runs are deterministic
    assert not _same(base, flipped), f"--{flag} changed nothing"


@needs_minatar
def test_one_adam_for_the_sequence_carries_its_moments_across_games(tmp_path):
    games = ("Breakout", "Asterix")
    per_game = _run(tmp_path, "per_game", games=games)
    sequence = _run(tmp_path, "sequence", "--no-optimizer-per-game", games=games)
    updates = 1 * 2 * 4  # per game: 1 update x 2 epochs x 4 minibatches
    assert per_game["optimizer"] is None  # a fresh Adam per game: nothing carried past the game
    first = torch.load(os.path.join(tmp_path, "sequence", "ckpt", "game0.pt"), weights_only=True)
    state = sequence["optimizer"]["state"]
    assert len(sequence["optimizer"]["param_groups"]) == 3  # trunk, head 0, head 1
    trunk_ids = sequence["optimizer"]["param_groups"][0]["params"]
    assert first["optimizer"]["state"][trunk_ids[0]]["step"].item() == updates
    assert state[trunk_ids[0]]["step"].item() == 2 * updates  # the trunk's Adam steps ran on through game 2
    head0 = sequence["optimizer"]["param_groups"][1]["params"][0]
    assert state[head0]["step"].item() == updates  # game 1's head got no gradient in game 2: Adam left it alone
    assert torch.equal(first["agent"]["heads.0.0.weight"], sequence["agent"]["heads.0.0.weight"])
    assert not _same(per_game, sequence)


@needs_minatar
def test_minatar_reports_the_truncated_games_final_observation():
    from envs.minatar import MinAtarVecEnv

    capped, free = MinAtarVecEnv("Breakout", 2, seed=3, max_episode_steps=5), MinAtarVecEnv("Breakout", 2, seed=3)
    capped.reset(), free.reset()
    for t in range(5):
        a = np.array([1, 2])
        obs_c, _, term, trunc, info = capped.step(a)
        obs_f, _, term_f, _, _ = free.step(a)
        assert not term_f.any()
    assert trunc.all() and not term.any()
    assert np.array_equal(info["final_obs"], obs_f)  # the games' own next observation, before the reset
    assert not np.array_equal(obs_c, obs_f)  # the returned observation already starts new games


@pytest.mark.parametrize("trunk_init", ["orthogonal", "torch_default"])
def test_trunk_init_builds_the_trunk_and_agscls_redraw_the_same_way(trunk_init):
    """``torch_default`` is PyTorch's Kaiming-uniform (a = sqrt 5): every weight and bias within
    1/sqrt(fan_in), biases not zero; ``orthogonal`` is cleanrl's: W W^T = 2 I on each layer's
    rows, zero biases. AGS-CL's (I.2) re-draw uses the same initializer."""
    from agents.config import build_agent_and_method

    torch.manual_seed(0)
    args = parse_args(ppo_continual.Args, ["--suite", "minatar", "--method", "agscl", "--trunk-init", trunk_init])
    agent, method = build_agent_and_method(args, torch.device("cpu"), 2)
    layers = [m for m in agent.trunk if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    fresh = [torch.nn.Linear(l.weight[0].numel(), l.weight.shape[0]) for l in layers]  # (I.2)'s draw on a same-sized layer
    for drawn in fresh:
        method.init_fn(drawn)
    for layer in layers + fresh:
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        fan_in = w.shape[1]
        if trunk_init == "torch_default":
            assert w.abs().max() <= 1 / fan_in ** 0.5 and layer.bias.abs().max() <= 1 / fan_in ** 0.5
            assert (layer.bias != 0).all()
        else:
            assert torch.allclose(w @ w.T, 2 * torch.eye(w.shape[0]), atol=1e-4) and (layer.bias == 0).all()


def test_autoreset_steps_get_no_advantage_and_the_games_around_them_are_unchanged():
    """A scripted next-step-autoreset rollout (issue 25, item 9): game A is steps 0-2 (step 2
    ends it), step 3 only restarts (its action ignored, reward 0), game B is steps 4-5. GAE must
    be that of the two games written out by hand, with step 3 left out (advantage 0, return = its value)."""
    r = torch.tensor([[1.0], [2.0], [0.5], [0.0], [1.5], [-1.0]])
    v = torch.tensor([[0.3], [0.7], [0.2], [0.9], [0.4], [0.6]])
    dones = torch.tensor([[0.0], [0.0], [0.0], [1.0], [0.0], [0.0]])  # step 3's observation follows a game end
    autoreset = torch.tensor([[0.0], [0.0], [0.0], [1.0], [0.0], [0.0]])
    next_value, next_done = torch.tensor([0.8]), torch.tensor([0.0])
    adv, ret = compute_gae(r, v, dones, next_value, next_done, GAMMA, LAM, autoreset=autoreset)
    gl = GAMMA * LAM
    a2 = 0.5 - 0.2  # game A's last step: terminal
    a1 = 2.0 + GAMMA * 0.2 - 0.7 + gl * a2
    a0 = 1.0 + GAMMA * 0.7 - 0.3 + gl * a1
    b5 = -1.0 + GAMMA * 0.8 - 0.6
    b4 = 1.5 + GAMMA * 0.6 - 0.4 + gl * b5
    assert adv[:, 0].tolist() == pytest.approx([a0, a1, a2, 0.0, b4, b5])
    assert ret[3, 0].item() == pytest.approx(0.9)
    plain, _ = compute_gae(r, v, dones, next_value, next_done, GAMMA, LAM)
    assert plain[3, 0].item() == pytest.approx(0.0 + GAMMA * 0.4 - 0.9 + gl * b4)  # what the spurious step had
    assert torch.equal(plain[[0, 1, 2, 4, 5]], adv[[0, 1, 2, 4, 5]])
