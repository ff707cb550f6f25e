"""The results file of a continual run (``runs/<name>/results.json``) and what is derived from it.

Pure json/numpy, shared by the agent (which writes the file) and the plot script (which reads
only these files). Score matrix: ``score_matrix[i][j]`` is the mean raw score of game ``j``
after training game ``i`` (``None`` for ``j > i`` or rows not reached yet). Normalized
returns follow the paper's Figure 7a: a score divided by the best evaluation mean the
fine-tuning reference run reached on that game; the accumulated normalized return sums them
over the games learned so far.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Sequence

import numpy as np

RESULTS_FILE = "results.json"


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_results(run_dir: str) -> dict[str, Any]:
    """The results of ``run_dir`` (a run directory or a results.json path); ``ValueError`` saying
    what is wrong when it is missing or not a results file of this agent."""
    path = run_dir if run_dir.endswith(".json") else os.path.join(run_dir, RESULTS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist: give a run directory written by agents/ppo_continual.py")
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc.__class__.__name__}: {exc})") from None
    for key in ("games", "score_matrix", "timeline", "config"):
        if not isinstance(results, dict) or key not in results:
            raise ValueError(f"{path} is not a results file of agents/ppo_continual.py (no {key!r})")
    return results


def best_scores(results: dict[str, Any]) -> dict[str, float]:
    """Per game, the best evaluation mean over the whole timeline."""
    best: dict[str, float] = {}
    for entry in results["timeline"]:
        for game, stats in entry["scores"].items():
            if stats.get("mean") is not None:
                best[game] = max(best.get(game, -math.inf), float(stats["mean"]))
    return best


def reference_maxima(reference: dict[str, Any], games: Sequence[str], where: str) -> dict[str, float]:
    """Best fine-tuning score per game in ``games``; ``ValueError`` when the reference does not
    cover a game or its best score is not positive (then the ratio means nothing)."""
    best = best_scores(reference)
    missing = [g for g in games if g not in best]
    if missing:
        have = ", ".join(sorted(best)) or "none"
        raise ValueError(f"reference run {where} does not cover games {', '.join(missing)} (it has evaluations of: {have})")
    bad = [f"{g}={best[g]:g}" for g in games if not best[g] > 0]
    if bad:
        raise ValueError(f"reference run {where} has non-positive best scores ({', '.join(bad)}): cannot normalize by them")
    return {g: best[g] for g in games}


def normalized(scores: dict[str, dict[str, Any]], ref_max: dict[str, float]) -> tuple[dict[str, float], float]:
    """Normalized mean score per game of one evaluation, and their sum (accumulated return)."""
    norm = {g: float(s["mean"]) / ref_max[g] for g, s in scores.items() if g in ref_max and s.get("mean") is not None}
    return norm, float(sum(norm.values()))


def score_matrix(results: dict[str, Any]) -> np.ndarray:
    """The square score matrix with NaN for missing entries."""
    rows = results["score_matrix"]
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)


def games_done(results: dict[str, Any]) -> int:
    """Number of games whose end-of-game evaluation is in the matrix."""
    a = score_matrix(results)
    n = 0
    while n < a.shape[0] and np.isfinite(a[n, : n + 1]).all():
        n += 1
    return n
