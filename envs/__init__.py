"""Vectorized environments behind one small factory: ``get_suite("atari" | "minatar").make(...)``."""

from envs.atari import (
    BACKENDS,
    MAX_EPISODE_FRAMES,
    PAPER_GAMES,
    SEQUENCES,
    AtariVecEnv,
    list_games,
    make_atari,
    resolve_game,
    resolve_games,
)
from envs.suites import SUITES, Suite, get_suite

__all__ = [
    "BACKENDS",
    "MAX_EPISODE_FRAMES",
    "PAPER_GAMES",
    "SEQUENCES",
    "SUITES",
    "AtariVecEnv",
    "Suite",
    "get_suite",
    "list_games",
    "make_atari",
    "resolve_game",
    "resolve_games",
]
