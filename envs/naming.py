"""Game lists of any suite: named sequences expanded, names resolved, duplicates refused.

A leaf module (it imports no suite), so :mod:`envs.atari` and :mod:`envs.suites` both use it
without importing each other.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence


def resolve_games(names: Sequence[str], sequences: Mapping[str, Sequence[str]], resolve_game: Callable[[str], str],
                  suite: str) -> list[str]:
    """Canonical names of ``names``, expanding the suite's named ``sequences``; ``ValueError``
    on an unknown name (from ``resolve_game``), on no name at all, and on a game given twice
    (in pure continual learning each game is learned once)."""
    out: list[str] = []
    for name in names:
        out.extend(sequences[name.lower()] if name.lower() in sequences else [resolve_game(name)])
    if not out:
        raise ValueError(f"no games given: name at least one {suite} game or a sequence ({', '.join(sequences)})")
    repeated = [g for i, g in enumerate(out) if g in out[:i]]
    if repeated:
        raise ValueError(f"game {repeated[0]!r} appears twice: in pure continual learning each game is learned once")
    return out
