"""One factory over the game suites: ``atari`` (:mod:`envs.atari`) and ``minatar`` (:mod:`envs.minatar`).

A suite fixes the observation shape, the game names (and named sequences), and how an
environment is built. Everything the agent does beyond that (methods, evaluation, results,
plots, resume, TensorBoard) is the same for every suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from envs import atari, minatar, naming

SUITES = ("atari", "minatar")


@dataclass(frozen=True)
class Suite:
    """What differs between suites: shapes, names, the factory and the pixel scale."""

    name: str
    obs_shape: tuple[int, int, int]
    #: observations are uint8; the trunk sees ``obs * obs_scale`` (Atari pixels 0..255, MinAtar 0/1)
    obs_scale: float
    sequences: dict[str, tuple[str, ...]]
    #: frames per agent step: caps on a game's length are given in frames
    frame_skip: int
    resolve_game: Callable[[str, str], str]
    list_games: Callable[[str], list[str]]
    make: Callable[..., Any]
    #: the step after a game ends only starts the next one (``info["autoreset"]`` marks it)
    next_step_autoreset: bool = False

    def resolve_games(self, names: Sequence[str], backend: str = "envpool") -> list[str]:
        """Canonical names of ``names``, expanding named sequences; ``ValueError`` on an unknown
        name (listing the suite's games), on no name at all, and on a game given twice."""
        return naming.resolve_games(names, self.sequences, lambda name: self.resolve_game(name, backend), self.name)


def _make_minatar(game: str, num_envs: int, *, seed: int = 0, train: bool = True,
                  max_episode_frames: int = minatar.MAX_EPISODE_STEPS, **_atari_only: Any) -> minatar.MinAtarVecEnv:
    return minatar.MinAtarVecEnv(game, num_envs, seed=seed, train=train, max_episode_steps=max_episode_frames)


_SUITES = {
    "atari": Suite("atari", atari.OBS_SHAPE, 1.0 / 255.0, atari.SEQUENCES, atari.FRAME_SKIP,
                   atari.resolve_game, atari.list_games, atari.AtariVecEnv, next_step_autoreset=True),
    "minatar": Suite("minatar", minatar.OBS_SHAPE, 1.0, minatar.SEQUENCES, 1,
                     lambda name, _backend: minatar.resolve_game(name), lambda _backend: minatar.list_games(),
                     _make_minatar),
}


def get_suite(name: str) -> Suite:
    """The suite called ``name``; ``ValueError`` naming the valid suites otherwise."""
    if name not in _SUITES:
        raise ValueError(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}")
    return _SUITES[name]
