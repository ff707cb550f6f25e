"""Vectorized MinAtar games (Young & Tian, 2019) with the same interface as :mod:`envs.atari`.

MinAtar re-implements five Atari games on a 10x10 grid whose cells are boolean channels
(Breakout 4, SpaceInvaders 6, Freeway 7, Asterix 4, Seaquest 10). A sequence of MinAtar games
learns in minutes on a CPU, which makes it the laptop-sized stand-in for the Atari sequence.
``minatar`` is GPL-licensed and an optional extra: ``pip install -e ".[minatar]"``.

``MinAtarVecEnv("Breakout", num_envs=8, seed=1)`` (or ``get_suite("minatar").make``):

- observations are ``uint8`` in {0, 1}, channels first and zero-padded to the suite's largest
  channel count (10), so one trunk reads every game: shape ``(N, 10, 10, 10)``;
- each game acts through its minimal action set (Breakout 3, SpaceInvaders 4, Freeway 3,
  Asterix 5, Seaquest 6 actions); head action ``i`` is the game's ``minimal_action_set()[i]``;
- sticky actions with probability 0.1 (the suite's default) and difficulty ramping, both on
  during training and evaluation, as in the MinAtar paper;
- rewards are the game's own (small integers), never clipped, in both modes;
- a game ends at its game over or after ``max_episode_steps`` steps (``truncated``);
- autoreset is "same step": the step that ends a game returns the first observation of the
  next one (Atari's backends restart one step later; the agent handles both); the ended game's
  last observation is kept in ``info["final_obs"]`` (equal to ``obs`` in the other rows), the
  observation a truncated game's value bootstraps from (``--bootstrap-time-limits``).

``info`` holds ``raw_reward``, ``game_over``, ``episode_return``, ``episode_length`` (NaN / 0
except where a game ended), ``lives`` (always 0: MinAtar games have one life) and ``final_obs``,
exactly the keys the agent reads from the Atari environments.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import numpy as np

#: Game name -> MinAtar module name, in the order of the MinAtar paper.
GAMES: dict[str, str] = {
    "Breakout": "breakout",
    "SpaceInvaders": "space_invaders",
    "Freeway": "freeway",
    "Asterix": "asterix",
    "Seaquest": "seaquest",
}
#: Channels of the padded observation: the largest channel count of the suite (Seaquest).
CHANNELS = 10
OBS_SHAPE = (CHANNELS, 10, 10)
STICKY_ACTION_PROB = 0.1
#: Default cap on a game's length in agent steps (MinAtar itself has none for most games).
MAX_EPISODE_STEPS = 10_000
#: Named sequences of this suite. ``interfere`` is the benchmark's sequence: three games whose
#: shared channels mean different things (paddle/ball vs. chicken/cars vs. player/enemies).
SEQUENCES: dict[str, tuple[str, ...]] = {
    "all": tuple(GAMES),
    "interfere": ("Breakout", "SpaceInvaders", "Freeway"),
}
INSTALL_HINT = 'the MinAtar suite needs the optional extra: pip install -e ".[minatar]"'


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def list_games() -> list[str]:
    """The MinAtar game names."""
    return list(GAMES)


def resolve_game(name: str) -> str:
    """Canonical name of ``name`` ("breakout", "space_invaders", "MinAtar/Breakout-v1" all work);
    ``ValueError`` listing the suite's games otherwise."""
    by_key = {_key(g): g for g in GAMES}
    key = _key(re.sub(r"-v\d+$", "", name.strip().split("/")[-1]))
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=2, cutoff=0.6)
    hint = f" (did you mean {', '.join(by_key[c] for c in close)}?)" if close else ""
    raise ValueError(f"unknown MinAtar game {name!r}{hint}: the suite's games are {', '.join(GAMES)} "
                     f"(sequences: {', '.join(SEQUENCES)})")


def check_installed() -> None:
    """``ImportError`` with the install command when the optional ``minatar`` package is missing."""
    try:
        import minatar  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None


class MinAtarVecEnv:
    """``num_envs`` copies of one MinAtar game stepped in sequence; numpy in, numpy out.

    The same contract as :class:`envs.atari.AtariVecEnv` (see the module docstring). ``train``
    changes nothing here (no reward clipping, no lives) and is accepted for the common factory.
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        seed: int = 0,
        train: bool = True,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        sticky_action_prob: float = STICKY_ACTION_PROB,
    ) -> None:
        self.game = resolve_game(game)
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} is out of range: allowed num_envs >= 1")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps} is out of range: allowed >= 1")
        check_installed()
        from minatar import Environment

        self.num_envs, self.train, self.seed = num_envs, train, seed
        self.max_episode_steps = max_episode_steps
        self._envs = [Environment(GAMES[self.game], sticky_action_prob=sticky_action_prob) for _ in range(num_envs)]
        for i, env in enumerate(self._envs):
            # One generator per copy (sticky actions and the game's own draws). numpy takes seeds below 2**32;
            # the agent's seeds grow with the update index, so a resume deep into a long game wraps.
            env.seed((seed * 1_000 + i) % 2**32)
        self._actions = np.asarray(self._envs[0].minimal_action_set(), dtype=np.int64)
        self.action_count = len(self._actions)
        #: observation channels from this one on are always zero (this game fills only its leading channels)
        self.used_channels: int = self._envs[0].state_shape()[2]
        self._obs = np.zeros((num_envs,) + OBS_SHAPE, dtype=np.uint8)
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    def _write_obs(self, i: int) -> None:
        # state() is (10, 10, C) bool; channels first, padded with zeros up to CHANNELS.
        self._obs[i, : self.used_channels] = self._envs[i].state().transpose(2, 0, 1)

    def reset(self) -> np.ndarray:
        """Start a new game in every copy."""
        for i, env in enumerate(self._envs):
            env.reset()
            self._write_obs(i)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (self.num_envs,) or actions.min() < 0 or actions.max() >= self.action_count:
            raise ValueError(f"actions must be {self.num_envs} integers in [0, {self.action_count})")
        n = self.num_envs
        reward = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        for i, env in enumerate(self._envs):
            r, done = env.act(int(self._actions[actions[i]]))
            reward[i], terminated[i] = r, done
        self._returns += reward
        self._lengths += 1
        truncated = ~terminated & (self._lengths >= self.max_episode_steps)
        game_over = terminated | truncated
        episode_return = np.where(game_over, self._returns, np.nan)
        episode_length = np.where(game_over, self._lengths, 0)
        for i in range(n):
            self._write_obs(i)
        final_obs = self._obs.copy()  # before the resets below: the ended games' last observations
        for i in np.flatnonzero(game_over):
            self._envs[i].reset()
            self._returns[i], self._lengths[i] = 0.0, 0
            self._write_obs(i)
        info = {
            "raw_reward": reward.copy(),
            "game_over": game_over,
            "episode_return": episode_return,
            "episode_length": episode_length,
            "lives": np.zeros(n, dtype=np.int64),
            "final_obs": final_obs,
        }
        return self._obs.copy(), reward, terminated, truncated, info

    def close(self) -> None:
        self._envs = []

    def __enter__(self) -> "MinAtarVecEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

