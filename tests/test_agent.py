"""agents/ppo_continual.py on real Atari games, tiny: two games of 128 steps each.

The runs are shared between tests through one module-level cache (each run costs seconds).
Games: DemonAttack (6 actions) then CrazyClimber (9 actions): random play scores points in
both within the 150-step evaluation cap, so the normalized returns are well defined.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from agents import config, ppo_continual
from envs.atari import PAPER_GAMES
from reporting import plot_continual
from reporting.results import boundary_evaluations, gain_over_random, load_results, shifted_ratio

pytestmark = [pytest.mark.atari, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMES = ("DemonAttack", "CrazyClimber")
ACTIONS = (6, 9)
TINY = [
    "--games", *GAMES, "--steps-per-game", "128", "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
    "--update-epochs", "2", "--channels", "8", "16", "16", "--hidden", "64", "--eval-episodes", "2", "--eval-envs", "2",
    "--eval-max-frames", "600", "--eval-every", "64", "--checkpoint-every", "64", "--importance-obs", "64",
    "--importance-batch", "32", "--seed", "3",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(name, *extra)``: the directory of a tiny two-game run, trained once per module."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("runs")
    done: dict[str, str] = {}

    def get(name: str, *extra: str) -> str:
        if name not in done:
            rc = ppo_continual.main([*TINY, "--runs-dir", str(base), "--run-name", name, *extra])
            assert rc == 0
            done[name] = str(base / name)
        return done[name]

    get.base = base
    return get


def scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})  # all event files, purges applied
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def check_two_game_run(run_dir: str, method: str) -> dict:
    res = load_results(run_dir)
    assert res["games"] == list(GAMES) and res["config"]["method"] == method
    assert res["progress"]["status"] == "finished" and res["progress"]["global_step"] == 256
    assert res["action_counts"] == list(ACTIONS)
    a = res["score_matrix"]
    assert a[0][0] is not None and a[1][0] is not None and a[1][1] is not None and a[0][1] is None
    # the timeline: a mid-game and an end-of-game evaluation per game, all learned games each time
    assert [(e["global_step"], e["boundary"]) for e in res["timeline"]] == [(64, False), (128, True), (192, False), (256, True)]
    for entry in res["timeline"]:
        assert list(entry["scores"]) == list(GAMES[: entry["game"] + 1])
        for stats in entry["scores"].values():
            r = np.array(stats["returns"])
            assert stats["episodes"] == len(r) == 2
            assert np.isclose(stats["mean"], r.mean()) and np.isclose(stats["std"], r.std())
            assert stats["min"] == r.min() and stats["max"] == r.max()
    last = res["timeline"][-1]["scores"]
    assert a[1] == [last[g]["mean"] for g in GAMES]
    assert [r["game"] for r in res["regularizer"]] == [0, 1] and all("stored_floats" in r for r in res["regularizer"])
    assert [g["steps"] for g in res["games_info"]] == [128, 128]
    assert [v["kind"] for v in res["versions"]] == ["start"] and res["versions"][0]["global_step"] == 0
    for key in ("python", "torch", "envpool", "ale_py"):
        assert res["versions"][0][key]
    # heads of both games exist, each sized to its game's actions
    ckpt = torch.load(os.path.join(run_dir, "ckpt", "latest.pt"), weights_only=True)
    assert [ckpt["agent"][f"heads.{g}.0.weight"].shape[0] for g in range(2)] == list(ACTIONS)
    assert [ckpt["agent"][f"heads.{g}.1.weight"].shape[0] for g in range(2)] == [1, 1]
    assert ckpt["game"] == 2 and ckpt["global_step"] == 256
    for g in range(2):
        assert torch.load(os.path.join(run_dir, "ckpt", f"game{g}.pt"), weights_only=True)["game"] == g + 1
    tb = scalars(run_dir)
    for tag in ("charts/SPS", "charts/learning_rate", "losses/value_loss", "losses/policy_loss", "losses/entropy",
                "losses/approx_kl", "regularizer/stored_floats", f"eval/{GAMES[0]}/return", f"eval/{GAMES[1]}/return",
                f"eval/{GAMES[0]}/return_std"):
        assert tag in tb, tag
    assert [s for s, _ in tb[f"eval/{GAMES[0]}/return"]] == [64, 128, 192, 256]
    assert [s for s, _ in tb[f"eval/{GAMES[1]}/return"]] == [192, 256]
    # the learning rate restarts at each game (anneal within a game)
    lr = dict(tb["charts/learning_rate"])
    assert lr[64] == lr[192] == pytest.approx(2.5e-4) and lr[128] == lr[256] == pytest.approx(1.25e-4)
    return res


@pytest.mark.parametrize("method", ["finetune", "ewc", "online_ewc", "mas", "agscl"])
def test_every_method_runs_two_games(runs, method):
    run_dir = runs(method, "--method", method)
    res = check_two_game_run(run_dir, method)
    floats = [r["stored_floats"] for r in res["regularizer"]]
    if method == "finetune":
        assert floats == [0, 0]
    elif method == "agscl":
        assert floats[0] == floats[1] == 8 + 16 + 16 + 64  # one importance per trunk node
        assert 0 <= res["regularizer"][1]["sparsity"] <= 1 and "frozen_groups" in res["regularizer"][1]
    else:
        assert floats[0] > 0


def test_ale_backend_runs(tmp_path):
    rc = ppo_continual.main([*TINY, "--games", "DemonAttack", "--backend", "ale", "--runs-dir", str(tmp_path), "--run-name", "ale"])
    assert rc == 0
    res = load_results(str(tmp_path / "ale"))
    assert res["config"]["backend"] == "ale" and res["score_matrix"][0][0] is not None


def _groups(agent_state: dict, names: list[str]) -> torch.Tensor:
    """Per trunk node: its incoming weights and bias, flattened and concatenated over layers."""
    rows = []
    for name in names:
        w = agent_state[f"{name}.weight"]
        rows.append(torch.cat([w.reshape(w.shape[0], -1), agent_state[f"{name}.bias"].unsqueeze(1)], dim=1))
    return rows


TRUNK = ["trunk.0", "trunk.2", "trunk.4", "trunk.7"]


def test_agscl_large_lambda_freezes_important_groups_finetune_moves_them(runs):
    ags = runs("ags_frozen", "--method", "agscl", "--agscl-lambda", "1e9")
    after1 = torch.load(os.path.join(ags, "ckpt", "game0.pt"), weights_only=True)
    after2 = torch.load(os.path.join(ags, "ckpt", "game1.pt"), weights_only=True)
    omega = after1["method"]["omega"]
    frozen = 0
    for o, g1, g2 in zip(omega, _groups(after1["agent"], TRUNK), _groups(after2["agent"], TRUNK)):
        important = o > 0
        frozen += int(important.sum())
        assert torch.equal(g1[important], g2[important])  # bit-identical
    assert frozen > 10
    ft = runs("finetune", "--method", "finetune")
    f1 = torch.load(os.path.join(ft, "ckpt", "game0.pt"), weights_only=True)["agent"]
    f2 = torch.load(os.path.join(ft, "ckpt", "game1.pt"), weights_only=True)["agent"]
    moved = torch.cat([(a != b).any(dim=1) for a, b in zip(_groups(f1, TRUNK), _groups(f2, TRUNK))])
    assert moved.float().mean() > 0.7, moved.float().mean()  # most groups move in game 2 (dead ReLUs may not)


def _reference_beating_random(ft: str, where) -> str:
    """The fine-tuning run with its random-policy scores set below its best scores: 128 steps
    teach nothing, and a reference must beat the random policy to normalize by it."""
    res = load_results(ft)
    for g in GAMES:
        best = max(e["scores"][g]["mean"] for e in res["timeline"] if g in e["scores"])
        res["random"][g]["mean"] = best - 50.0
    where.mkdir()
    (where / "results.json").write_text(json.dumps(res))
    return str(where)


def test_reference_run_normalizes_and_plot_draws_figure7(runs, tmp_path, capsys):
    ft = _reference_beating_random(runs("finetune", "--method", "finetune"), tmp_path / "ft")
    ags = runs("agscl_ref", "--method", "agscl", "--reference-run", ft)
    ref = load_results(ft)
    ref_max = {g: max(e["scores"][g]["mean"] for e in ref["timeline"] if g in e["scores"]) for g in GAMES}
    res = load_results(ags)
    assert res["reference"]["max_return"] == ref_max
    assert res["reference"]["random_return"] == {g: ref["random"][g]["mean"] for g in GAMES}
    # every run is shifted and scaled by the reference's random-policy score (one map per game); a game
    # whose reference gain over it is within noise has no normalized return
    rand = {g: res["reference"]["random_return"][g] for g in GAMES}
    gain = {g: gain_over_random({"mean": ref_max[g], "se": res["reference"]["max_se"][g]},
                                {"mean": rand[g], "se": res["reference"]["random_se"][g]}) for g in GAMES}
    tb = dict(scalars(ags)["eval/accumulated_normalized_return"])
    for entry in res["timeline"]:
        expected = sum((s["mean"] - rand[g]) / gain[g] for g, s in entry["scores"].items() if not np.isnan(gain[g]))
        assert entry["accumulated_normalized"] == pytest.approx(expected)
        assert tb[entry["global_step"]] == pytest.approx(expected, rel=1e-6)

    out = tmp_path / "fig.png"
    capsys.readouterr()
    assert plot_continual.main([ags, ft, "--reference", ft, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line.split(",") for line in (tmp_path / "fig.csv").read_text().splitlines()]
    header, row = rows[0], rows[1]
    a = np.array(res["score_matrix"], dtype=float)

    entries = boundary_evaluations(res)
    ref_entries = boundary_evaluations(ref)

    def ratio(num, top, random):  # through the noise rule: (value - R) / (top - R), or nan
        value = shifted_ratio(num, top, random)
        return "nan" if np.isnan(value) else pytest.approx(value, abs=1e-3)

    def cell(name):
        value = row[header.index(name)]
        return "nan" if value == "nan" else float(value)

    for j, g in enumerate(GAMES):
        own_best = entries[j + int(np.argmax(a[j:, j]))][j]
        assert cell(f"P_{g}") == ratio(a[j, j], ref_entries[j][j], ref["random"][g])  # the reference's R
        assert cell(f"S_{g}") == ratio(a[1, j], own_best, res["random"][g])
    assert float(row[header.index("accumulated_normalized")]) == pytest.approx(res["timeline"][-1]["accumulated_normalized"], abs=1e-3)
    assert "agscl_ref" in printed and str(out) in printed
    # the fine-tuning reference against itself: plasticity 1 on every game it learned above random
    ft_row = rows[2]
    assert all(float(ft_row[header.index(f"P_{g}")]) == 1.0 for g in GAMES
               if not np.isnan(gain_over_random(ref_entries[GAMES.index(g)][GAMES.index(g)], ref["random"][g])))


def test_plot_rejects_a_reference_that_does_not_cover_the_games(runs, tmp_path, capsys):
    ft = runs("finetune", "--method", "finetune")
    other = tmp_path / "other"
    other.mkdir()
    res = load_results(ft)
    res["timeline"] = [dict(e, scores={GAMES[0]: e["scores"][GAMES[0]]}) for e in res["timeline"]]
    (other / "results.json").write_text(json.dumps(res))
    assert plot_continual.main([ft, "--reference", str(other), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not cover games CrazyClimber" in err
    assert plot_continual.main([str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "x.png").exists()


def _game_boundary_written(run_dir) -> bool:
    return (run_dir / "ckpt" / "game0.pt").exists()


def _mid_game_two_evaluated(run_dir) -> bool:
    try:
        timeline = json.loads((run_dir / "results.json").read_text())["timeline"]
    except (OSError, ValueError):
        return False
    return any(e["global_step"] == 192 for e in timeline)


@pytest.mark.parametrize("kill_when", [_game_boundary_written, _mid_game_two_evaluated])
def test_kill_after_first_game_and_resume(runs, tmp_path, kill_when):
    """Killed at the game boundary, or inside game 2 with only the boundary checkpoint (so
    game-2 progress and its TensorBoard events must be redone and the stale ones purged)."""
    reference = load_results(runs("agscl", "--method", "agscl"))
    extra = ["--checkpoint-every", "0"] if kill_when is _mid_game_two_evaluated else []
    cmd = [sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), *TINY, "--method", "agscl",
           "--runs-dir", str(tmp_path), "--run-name", "killed", *extra]
    run_dir = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 240
        while not kill_when(run_dir):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline
            time.sleep(0.05)
        assert proc.poll() is None  # still inside game 2
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    interrupted = json.loads((run_dir / "results.json").read_text())
    assert interrupted["progress"]["status"] == "running"
    if extra:
        assert 192 in [s for s, _ in scalars(str(run_dir))["charts/SPS"]]  # game-2 events to be purged
    rc = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--resume", str(run_dir)],
                        cwd=ROOT, capture_output=True, text=True, env=env).returncode
    assert rc == 0
    res = load_results(str(run_dir))
    assert res["progress"] == reference["progress"]
    assert [(e["global_step"], e["boundary"], list(e["scores"])) for e in res["timeline"]] == [
        (e["global_step"], e["boundary"], list(e["scores"])) for e in reference["timeline"]]
    assert [g["steps"] for g in res["games_info"]] == [g["steps"] for g in reference["games_info"]]
    assert [[v is None for v in row] for row in res["score_matrix"]] == [[v is None for v in row] for row in reference["score_matrix"]]
    assert set(res) == set(reference)
    # the first game was not trained again: its end-of-game result survived the kill unchanged
    assert res["score_matrix"][0] == interrupted["score_matrix"][0]
    assert res["timeline"][:2] == interrupted["timeline"][:2]
    tb = scalars(str(run_dir))
    assert [s for s, _ in tb["charts/SPS"]] == [64, 128, 192, 256]  # no gap, no duplicate after the restart
    assert [s for s, _ in tb[f"eval/{GAMES[1]}/return"]] == [192, 256]
    # resuming a finished run does nothing
    out = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--resume", str(run_dir)],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "already finished" in out.stdout


def test_nonfinite_loss_stops_with_last_checkpoint_intact(tmp_path, monkeypatch, capsys):
    from agscl.base import FineTune

    def penalty(self):
        value = float("nan") if self.tasks_learned >= 1 else 0.0
        return torch.tensor(value)

    monkeypatch.setattr(FineTune, "penalty", penalty)
    rc = ppo_continual.main([*TINY, "--method", "finetune", "--runs-dir", str(tmp_path), "--run-name", "nan"])
    err = capsys.readouterr().err
    assert rc == 1
    latest = tmp_path / "nan" / "ckpt" / "latest.pt"
    assert "non-finite loss" in err and str(latest) in err and "intact" in err
    ckpt = torch.load(latest, weights_only=True)
    assert ckpt["game"] == 1 and ckpt["update"] == 0 and ckpt["global_step"] == 128
    assert all(torch.isfinite(t).all() for t in ckpt["agent"].values())
    assert load_results(str(tmp_path / "nan"))["progress"]["status"].startswith("stopped")


BAD = [
    (["--games", "Boxng"], "did you mean Boxing"),
    (["--games", "StarGunner", "stargunner"], "appears twice"),
    (["--method", "agscl", "--rho", "1.5"], "rho=1.5"),
    (["--method", "agscl", "--eta", "0"], "eta=0"),
    (["--method", "ewc", "--ewc-lambda", "-1"], "--ewc-lambda=-1"),
    (["--method", "online_ewc", "--ewc-gamma", "2"], "gamma=2"),
    (["--num-minibatches", "3"], "does not divide"),
    (["--steps-per-game", "10"], "at least one PPO batch"),
    (["--eval-episodes", "0"], "--eval-episodes=0"),
    (["--learning-rate", "nan"], "--learning-rate=nan"),
    (["--resume", "/nonexistent/run"], "no such run directory"),
    (["--reference-run", "/nonexistent/run"], "does not exist"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_is_one_line_and_exit_2_before_any_environment(extra, message, tmp_path, monkeypatch, capsys):
    def no_env(*a, **k):
        raise AssertionError("an environment was built")

    monkeypatch.setattr(ppo_continual.Run, "make_env", no_env)
    rc = ppo_continual.main([*TINY, "--runs-dir", str(tmp_path), "--run-name", "x", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert os.listdir(tmp_path) == []


def test_existing_runs_are_never_overwritten(runs, tmp_path, capsys):
    ft = runs("finetune", "--method", "finetune")
    before = {n: os.path.getmtime(os.path.join(ft, n)) for n in os.listdir(ft)}
    rc = ppo_continual.main([*TINY, "--runs-dir", os.path.dirname(ft), "--run-name", "finetune"])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert {n: os.path.getmtime(os.path.join(ft, n)) for n in os.listdir(ft)} == before
    # a reference that lacks a game, and a corrupt checkpoint
    rc = ppo_continual.main([*TINY, "--games", "DemonAttack", "Pong", "--runs-dir", str(tmp_path), "--run-name", "y",
                             "--reference-run", ft])
    assert rc == 2 and "not this run's DemonAttack Pong" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "ckpt").mkdir(parents=True)
    (broken / "ckpt" / "latest.pt").write_bytes(b"not a checkpoint")
    rc = ppo_continual.main(["--resume", str(broken)])
    assert rc == 2 and "corrupt" in capsys.readouterr().err
    assert (broken / "ckpt" / "latest.pt").read_bytes() == b"not a checkpoint"


def test_cli_bad_input_exits_2_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--games", "Boxng",
                          "--runs-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "python -m envs --list" in out.stderr
    help_text = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--help"],
                               cwd=ROOT, capture_output=True, text=True).stdout
    assert "2100" in help_text and "21" in help_text  # the lambda rescaling is documented


def test_preset_paper_sets_the_authors_configuration_and_flags_override_it():
    args = config.parse_args(ppo_continual.Args, ["--preset", "paper", "--num-envs", "16"])
    assert args.num_envs == 16 and args.num_steps == 64 and args.update_epochs == 10 and args.num_minibatches == 64
    assert args.learning_rate == 3e-4 and args.ent_coef == 0.0 and args.games == PAPER_GAMES
    assert config.trunk_channels(args) == (128, 256, 128) and args.hidden == 512
    assert args.agscl_lambda == 1000 * 21 and args.mu == 0.1 and args.clip_coef == 0.2  # docs/paper_preset.md
    plain = config.parse_args(ppo_continual.Args, [])
    assert plain.num_envs == 8 and plain.num_steps == 128 and plain.learning_rate == 2.5e-4 and plain.ent_coef == 0.01


def test_end_task_gets_the_requested_number_of_scaled_observations(tmp_path, monkeypatch):
    from agscl.base import FineTune

    seen: list[torch.Tensor] = []
    original = FineTune.end_task

    def spy(self, task, inputs):
        seen.extend(batch.detach().clone() for batch in inputs)
        seen.extend(batch.detach().clone() for batch in inputs)  # re-iterable: a second pass gives the same data
        original(self, task, inputs)

    monkeypatch.setattr(FineTune, "end_task", spy)
    rc = ppo_continual.main([*TINY, "--games", "DemonAttack", "--method", "finetune", "--importance-obs", "50",
                             "--importance-batch", "16", "--runs-dir", str(tmp_path), "--run-name", "spy"])
    assert rc == 0
    first, second = seen[: len(seen) // 2], seen[len(seen) // 2 :]
    assert [b.shape[0] for b in first] == [16, 16, 16, 2]
    x = torch.cat(first)
    assert torch.equal(x, torch.cat(second)) and x.dtype == torch.float32 and x.shape[1:] == (4, 84, 84)
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.max()) > 0.2  # obs / 255, not raw bytes
    assert torch.allclose(torch.round(x * 255), x * 255, atol=1e-3)  # exactly the stored bytes, scaled


def test_collect_observations_plays_the_game_with_the_given_head():
    from agents.network import Agent
    from envs import make_atari

    torch.manual_seed(0)
    agent = Agent((8, 16, 16), 32)
    agent.add_head(6)
    env = make_atari("DemonAttack", 2, seed=1)
    first = env.reset()
    obs, last = ppo_continual.collect_observations(agent, env, first, 0, 7, torch.device("cpu"))
    env.close()
    assert obs.shape == (7, 4, 84, 84) and obs.dtype == torch.uint8
    assert torch.equal(obs[:2], torch.from_numpy(first))  # the current observations come first
    assert not torch.equal(obs[2:4], obs[:2])  # then the game moves on
    batches = list(ppo_continual.ScaledBatches(obs, 3, torch.device("cpu"), 1 / 255))
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    assert torch.allclose(torch.cat(batches) * 255, obs.float())


def test_named_sequence_instead_of_games():
    for argv in (["--sequence", "paper"], ["--games", "paper"]):
        assert config.validate(config.parse_args(ppo_continual.Args, argv)) == list(PAPER_GAMES)


def test_the_step_after_each_game_over_gets_no_advantage(tmp_path, monkeypatch):
    """Issue 25, item 9, through the agent on real Atari: games capped at 20 steps, so every
    rollout holds autoreset steps; each has advantage 0 and follows a game end (dones 1)."""
    seen = []
    real = ppo_continual.compute_gae

    def spy(rewards, values, dones, next_value, next_done, gamma, lam, final_values=None, autoreset=None):
        adv, ret = real(rewards, values, dones, next_value, next_done, gamma, lam, final_values, autoreset)
        seen.append((dones.clone(), None if autoreset is None else autoreset.clone(), adv.clone(), rewards.clone()))
        return adv, ret

    monkeypatch.setattr(ppo_continual, "compute_gae", spy)
    rc = ppo_continual.main([*TINY, "--games", "DemonAttack", "--steps-per-game", "192", "--train-max-frames", "80",
                             "--runs-dir", str(tmp_path), "--run-name", "auto"])
    assert rc == 0 and len(seen) == 3
    marked = 0
    for dones, autoreset, adv, rewards in seen:
        assert autoreset is not None
        rows = autoreset.bool()
        marked += int(rows.sum())
        assert (dones[rows] == 1).all() and (adv[rows] == 0).all() and (rewards[rows] == 0).all()
        assert (adv[~rows] != 0).all()
    assert marked >= 2 * 3 * 32 // 21 - 2  # about one per env per 21 steps
