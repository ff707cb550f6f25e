"""envs/: game names, both backends on real Atari ROMs (a few hundred steps each)."""

from __future__ import annotations

import numpy as np
import pytest

from envs import PAPER_GAMES, list_games, make_atari, resolve_game, resolve_games

pytestmark = pytest.mark.atari


def test_names_resolve_in_any_spelling():
    for spelling in ("StarGunner", "star_gunner", "stargunner", "StarGunner-v5", " STAR_GUNNER "):
        assert resolve_game(spelling) == "StarGunner"
    assert resolve_games(["paper"]) == list(PAPER_GAMES)
    assert resolve_games(["boxing", "Gopher"]) == ["Boxing", "Gopher"]
    assert set(PAPER_GAMES) <= set(list_games("envpool"))
    assert set(list_games("envpool")) < set(list_games("ale"))  # ale-py ships a few more ROMs


def test_bad_names_say_what_is_valid():
    with pytest.raises(ValueError, match=r"did you mean Boxing.*python -m envs --list"):
        resolve_game("Boxng")
    with pytest.raises(ValueError, match="use backend 'ale'"):
        resolve_game("Joust", "envpool")
    assert resolve_game("Joust", "ale") == "Joust"
    with pytest.raises(ValueError, match="appears twice"):
        resolve_games(["Boxing", "boxing"])
    with pytest.raises(ValueError, match="no games"):
        resolve_games([])
    with pytest.raises(ValueError, match="noop_max"):
        make_atari("Boxing", 2, noop_max=0)
    with pytest.raises(ValueError, match="num_envs"):
        make_atari("Boxing", 0)
    with pytest.raises(ValueError, match="backend"):
        make_atari("Boxing", 1, backend="gym")


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_observation_format_and_first_stack(backend):
    with make_atari("Boxing", 2, seed=1, backend=backend) as env:
        obs = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert env.action_count == 18
        # a fresh game's stack holds its first frame four times (no black frames)
        assert (obs == obs[:, -1:]).all() and obs.max() > 0
        obs, *_ = env.step(np.zeros(2, dtype=np.int64))
        assert (obs[:, :3] == obs[:, :1]).all() and obs[:, 0].max() > 0


def _play(env, steps, seed):
    rng = np.random.default_rng(seed)
    out = []
    env.reset()
    for _ in range(steps):
        out.append(env.step(rng.integers(0, env.action_count, env.num_envs)))
    return out


def test_backends_give_the_same_game():
    """Same emulator, same actions, one no-op at reset: identical streams (a game over by
    the step cap included). The one known difference is the observation of the capped last
    step itself, where envpool and ale-py stop the frame skip differently."""
    kw = dict(seed=3, train=True, max_episode_frames=800, noop_max=1)
    a = _play(make_atari("StarGunner", 2, backend="ale", **kw), 450, 0)
    b = _play(make_atari("StarGunner", 2, backend="envpool", **kw), 450, 0)
    ended = 0
    for (oa, ra, ta, ca, ia), (ob, rb, tb, cb, ib) in zip(a, b):
        for x, y in ((ra, rb), (ta, tb), (ca, cb)):
            np.testing.assert_array_equal(x, y)
        for key in ("raw_reward", "game_over", "episode_return", "episode_length", "lives"):
            np.testing.assert_array_equal(ia[key], ib[key])
        np.testing.assert_array_equal(oa[~ca], ob[~cb])
        ended += int(ia["game_over"].sum())
    assert ended == 4  # two capped games per copy: 450 steps with a 200-step cap
    assert sum(float(r[4]["raw_reward"].sum()) for r in a) > 0  # the stream holds real rewards


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_training_env_clips_rewards_ends_lives_and_reports_whole_games(backend):
    env = make_atari("StarGunner", 2, seed=5, backend=backend, train=True, max_episode_frames=2400)
    steps = _play(env, 800, 1)
    totals = np.zeros(2)
    lengths = np.zeros(2, dtype=int)
    prev_lives = None
    life_losses = games = 0
    restart = np.zeros(2, dtype=bool)
    for _obs, reward, terminated, truncated, info in steps:
        raw = info["raw_reward"]
        np.testing.assert_array_equal(reward, np.sign(raw))
        totals = np.where(restart, 0, totals) + raw
        lengths = np.where(restart, 0, lengths) + 1
        lost = np.zeros(2, dtype=bool) if prev_lives is None else (info["lives"] < prev_lives) & ~restart
        # a lost life ends the training episode, yet the same game goes on
        np.testing.assert_array_equal(terminated, lost | (info["game_over"] & ~truncated))
        life_losses += int((lost & ~info["game_over"]).sum())
        over = info["game_over"]
        np.testing.assert_allclose(info["episode_return"][over], totals[over])
        np.testing.assert_array_equal(info["episode_length"][over], lengths[over])
        assert np.isnan(info["episode_return"][~over]).all()
        games += int(over.sum())
        # the step after a game over only restarts: marked, reward 0 (the agent gives it no advantage)
        np.testing.assert_array_equal(info["autoreset"], restart)
        assert (raw[restart] == 0).all()
        restart, prev_lives = over, info["lives"]
    assert life_losses >= 2 and games >= 2
    assert max(abs(float(s[4]["raw_reward"].max())) for s in steps) > 1  # clipping did something


def test_evaluation_env_plays_whole_games_with_raw_scores():
    env = make_atari("StarGunner", 2, seed=7, train=False, max_episode_frames=2400)
    steps = _play(env, 700, 2)
    for _obs, reward, terminated, truncated, info in steps:
        np.testing.assert_array_equal(reward, info["raw_reward"])
        np.testing.assert_array_equal(terminated | truncated, info["game_over"])
        if terminated.any():  # only a real game over ends an evaluation episode
            assert (info["lives"][terminated] == 0).all()
    assert any(s[2].any() or s[3].any() for s in steps)


def test_list_command_prints_games_and_sequences(capsys):
    from envs.__main__ import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "Boxing" in out and "StarGunner" in out and "Joust" not in out
    assert any(line.startswith("# sequence paper: StarGunner Boxing") for line in out)
