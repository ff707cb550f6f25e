"""Vectorized environments behind one small factory (Atari: :func:`envs.atari.make_atari`)."""

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

__all__ = [
    "BACKENDS",
    "MAX_EPISODE_FRAMES",
    "PAPER_GAMES",
    "SEQUENCES",
    "AtariVecEnv",
    "list_games",
    "make_atari",
    "resolve_game",
    "resolve_games",
]
