"""Results files of finished continual runs written by tests, in the agent's own format
(``agents/ppo_continual.py``'s ``results.json``, checked by ``reporting.results.load_results``)."""

from __future__ import annotations

import json
import statistics
from typing import Any, Sequence, Union

#: An evaluation's score: a bare mean, or every episode's return (then stored as the agent stores
#: an evaluation: mean, population std, min, max, episodes and the returns themselves).
Score = Union[float, Sequence[float]]


def stats(score: Score) -> dict[str, Any]:
    """The statistics the agent stores for one evaluation with these returns (or this bare mean)."""
    if isinstance(score, (int, float)):
        return {"mean": float(score)}
    returns = [float(r) for r in score]
    return {"mean": statistics.fmean(returns), "std": statistics.pstdev(returns), "min": min(returns), "max": max(returns),
            "episodes": len(returns), "returns": returns}


def write_run(root, name: str, method: str, evals: list[tuple[int, int, bool, dict[str, Score]]], reference=None,
              games: Sequence[str] = ("A", "B"), random: dict[str, Score] | None = None) -> str:
    """A finished run over ``games`` whose timeline is ``evals`` = (global_step, game, boundary,
    scores), with the random-policy scores ``random`` (default A 1, B -2); returns its directory."""
    games = list(games)
    random = {"A": 1.0, "B": -2.0} if random is None else random
    matrix: list[list[float | None]] = [[None] * len(games) for _ in games]
    for _, game, boundary, scores in evals:
        if boundary:
            matrix[game] = [stats(scores[g])["mean"] if g in scores else None for g in games]
    timeline = [{"global_step": s, "game": g, "game_name": games[g], "boundary": b,
                 "scores": {k: stats(v) for k, v in sc.items()}} for s, g, b, sc in evals]
    results = {"format": 2, "games": games, "config": {"method": method, "seed": 1}, "steps_per_game": 100,
               "score_matrix": matrix, "timeline": timeline, "random": {g: stats(r) for g, r in random.items()},
               "reference": reference, "progress": {"status": "finished", "global_step": evals[-1][0]}}
    path = root / name
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    return str(path)
