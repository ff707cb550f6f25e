"""The MinAtar suite: the vector environment, the agent on two games, and evaluation that
cannot change training. Needs the optional extra ``.[minatar]`` (installed by ``make test``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("minatar", reason='the MinAtar suite needs pip install -e ".[minatar]"')

from agents import ppo_continual  # noqa: E402
from envs.minatar import CHANNELS, GAMES, MinAtarVecEnv, resolve_game  # noqa: E402
from envs.suites import get_suite  # noqa: E402
from reporting.results import load_results  # noqa: E402

MINIMAL_ACTIONS = {"Breakout": 3, "SpaceInvaders": 4, "Freeway": 3, "Asterix": 5, "Seaquest": 6}
GAME_CHANNELS = {"Breakout": 4, "SpaceInvaders": 6, "Freeway": 7, "Asterix": 4, "Seaquest": 10}
TINY = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--steps-per-game", "256", "--num-envs", "4",
        "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2", "--eval-episodes", "3",
        "--random-episodes", "3", "--eval-envs", "3", "--eval-max-frames", "200", "--importance-obs", "64",
        "--importance-batch", "32", "--seed", "5", "--torch-threads", "1"]


def test_names_resolve_within_the_suite_and_unknown_names_list_its_games():
    assert resolve_game("space_invaders") == "SpaceInvaders"
    assert resolve_game("MinAtar/Breakout-v1") == "Breakout"
    suite = get_suite("minatar")
    assert suite.resolve_games(["interfere"]) == ["Breakout", "SpaceInvaders", "Freeway"]
    with pytest.raises(ValueError, match="Breakout, SpaceInvaders, Freeway, Asterix, Seaquest"):
        suite.resolve_games(["Pong"])
    with pytest.raises(ValueError, match="appears twice"):
        suite.resolve_games(["breakout", "Breakout"])
    with pytest.raises(ValueError, match="unknown suite"):
        get_suite("procgen")


@pytest.mark.parametrize("game", list(GAMES))
def test_observations_are_padded_channels_first_and_actions_are_the_minimal_set(game):
    env = MinAtarVecEnv(game, 3, seed=1)
    obs = env.reset()
    assert env.action_count == MINIMAL_ACTIONS[game]
    assert obs.shape == (3, CHANNELS, 10, 10) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    seen = np.zeros(CHANNELS, dtype=bool)
    for _ in range(200):
        obs, reward, term, trunc, info = env.step(rng.integers(0, env.action_count, 3))
        assert set(np.unique(obs)) <= {0, 1}
        seen |= obs.any(axis=(0, 2, 3))
    assert not seen[GAME_CHANNELS[game]:].any()  # padding channels stay empty
    assert env.used_channels == GAME_CHANNELS[game]  # what the packed rollout policy relies on
    # the observation is the game's own state, channels first
    state = env._envs[0].state()
    assert np.array_equal(obs[0, : state.shape[2]], state.transpose(2, 0, 1))


def test_episode_returns_are_whole_game_sums_and_the_step_cap_truncates():
    env = MinAtarVecEnv("Breakout", 4, seed=3, max_episode_steps=50)
    env.reset()
    rng = np.random.default_rng(1)
    running = np.zeros(4)
    length = np.zeros(4, dtype=int)
    ended = 0
    for _ in range(400):
        _, reward, term, trunc, info = env.step(rng.integers(0, 3, 4))
        running += reward
        length += 1
        assert not (term & trunc).any()
        assert np.array_equal(info["game_over"], term | trunc)
        assert (length[trunc] == 50).all()
        for i in np.flatnonzero(info["game_over"]):
            assert info["episode_return"][i] == running[i] and info["episode_length"][i] == length[i]
            running[i], length[i] = 0, 0
            ended += 1
        assert np.isnan(info["episode_return"][~info["game_over"]]).all()
    assert ended > 4


def test_same_seed_same_games_other_seed_other_games():
    def play(seed):
        env = MinAtarVecEnv("Asterix", 2, seed=seed)
        frames = [env.reset()]
        for t in range(100):
            frames.append(env.step(np.array([t % 5, (t * 3) % 5]))[0])
        return np.stack(frames)

    assert np.array_equal(play(4), play(4))
    assert not np.array_equal(play(4), play(5))


def test_seeds_past_numpys_limit_wrap_and_small_seeds_keep_their_games():
    """The agent's environment seeds grow with the update index (a resume deep into Asterix's 1.5M
    steps passed 2**32 after the factor 1000 and crashed); they wrap modulo 2**32, so every seed
    that worked before still draws the same games."""
    from minatar import Environment

    def play(env_step, reset):
        frames = [reset()]
        for t in range(60):
            frames.append(env_step(t))
        return np.stack(frames)

    env = MinAtarVecEnv("Asterix", 1, seed=7, sticky_action_prob=0.1)
    ours = play(lambda t: env.step(np.array([t % 5]))[0][0], lambda: env.reset()[0])
    raw = Environment("asterix", sticky_action_prob=0.1)
    raw.seed(7 * 1_000)
    actions = raw.minimal_action_set()

    def raw_step(t):
        _, done = raw.act(actions[t % 5])
        if done:
            raw.reset()
        return np.moveaxis(raw.state(), -1, 0)[:GAME_CHANNELS["Asterix"]]

    def raw_reset():
        raw.reset()
        return np.moveaxis(raw.state(), -1, 0)[:GAME_CHANNELS["Asterix"]]

    theirs = play(raw_step, raw_reset)
    assert np.array_equal(ours[:, :GAME_CHANNELS["Asterix"]].astype(bool), theirs.astype(bool))
    huge = 7 + 5 * 2**32 // 1_000  # seed * 1000 is about 5 * 2**32: numpy alone refuses it
    first, second = (MinAtarVecEnv("Asterix", 2, seed=huge) for _ in range(2))
    frames = [(first.reset(), second.reset())] + [
        (first.step(np.array([t % 5, 1]))[0], second.step(np.array([t % 5, 1]))[0]) for t in range(60)]
    assert all(np.array_equal(a, b) for a, b in frames)


def test_agent_runs_two_minatar_games_with_results_random_scores_and_metrics(tmp_path):
    """The run's outputs and metrics, not learning: 256 steps a game is far below what any MinAtar
    game needs to beat the random policy reliably (README table: ~100k steps for Freeway)."""
    rc = ppo_continual.main([*TINY, "--method", "agscl", "--runs-dir", str(tmp_path), "--run-name", "ags"])
    assert rc == 0
    res = json.loads((tmp_path / "ags" / "results.json").read_text())
    assert res["format"] == 2 and res["games"] == ["Breakout", "Asterix"]
    assert res["action_counts"] == [3, 5]
    assert set(res["random"]) == {"Breakout", "Asterix"}
    assert all(r["episodes"] == 3 for r in res["random"].values())
    a = np.array([[np.nan if v is None else v for v in row] for row in res["score_matrix"]])
    base = np.array([res["random"][g]["mean"] for g in res["games"]])
    per_game = res["metrics"]["per_game"]
    shifted = a - base
    expected_s0 = shifted[1, 0] / shifted[:, 0].max() if shifted[:, 0].max() > 0 else None
    assert per_game["Breakout"]["S"] == (pytest.approx(expected_s0) if expected_s0 is not None else None)
    assert per_game["Breakout"]["forgetting"] == pytest.approx(a[0, 0] - a[1, 0])
    assert per_game["Breakout"]["bwt"] == pytest.approx(a[1, 0] - a[0, 0])
    ckpt = torch.load(tmp_path / "ags" / "ckpt" / "latest.pt", weights_only=True)
    assert ckpt["agent"]["trunk.0.weight"].shape == (16, CHANNELS, 3, 3)  # MinAtar's conv16
    assert ckpt["agent"]["trunk.3.weight"].shape == (128, 16 * 8 * 8)  # then fc 128


def test_training_is_bit_identical_whatever_the_evaluation_schedule(tmp_path):
    common = [*TINY, "--method", "finetune", "--runs-dir", str(tmp_path)]
    assert ppo_continual.main([*common, "--run-name", "often", "--eval-every", "128"]) == 0
    assert ppo_continual.main([*common, "--run-name", "never", "--eval-every", "0"]) == 0
    often = torch.load(tmp_path / "often" / "ckpt" / "latest.pt", weights_only=True)
    never = torch.load(tmp_path / "never" / "ckpt" / "latest.pt", weights_only=True)
    runs = [json.loads((tmp_path / n / "results.json").read_text()) for n in ("often", "never")]
    assert len(runs[0]["timeline"]) > len(runs[1]["timeline"])  # the schedules did differ
    for key, value in often["agent"].items():
        assert torch.equal(value, never["agent"][key]), key


@pytest.mark.parametrize("argv, message", [
    (["--suite", "minatar", "--games", "Pong"], "unknown MinAtar game 'Pong'"),
    (["--suite", "minatar", "--preset", "paper"], "cannot be combined with --suite minatar"),
    (["--suite", "minatar", "--sequence", "paper"], "not a minatar sequence"),
    (["--suite", "gridworld"], "--suite 'gridworld' is not valid"),
    (["--suite", "minatar", "--channels"], "--channels=() is out of range"),
    (["--suite", "atari", "--channels", "8", "16"], "three integers >= 1"),
])
def test_bad_minatar_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert ppo_continual.main([*argv, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not os.listdir(tmp_path)


def test_demo_writes_results_events_and_plot(tmp_path, capsys):
    from agents import demo

    out = tmp_path / "demo"
    rc = demo.main(["--steps-per-game", "256", "--num-envs", "4", "--num-steps", "32", "--eval-episodes", "2",
                    "--eval-every", "128", "--eval-max-frames", "300", "--importance-obs", "32", "--out-dir", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    for name in ("agscl", "finetune"):
        assert load_results(str(out / name))["progress"]["status"] == "finished"
        assert any(n.startswith("events.out.tfevents") for n in os.listdir(out / name))
    assert load_results(str(out / "agscl"))["config"]["method"] == "agscl"
    assert (out / "continual_plot.png").read_bytes()[:4] == b"\x89PNG"
    assert str(out / "continual_plot.png") in printed and str(out / "agscl") in printed
