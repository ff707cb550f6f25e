"""The results file of a continual run (``runs/<name>/results.json``) and what is derived from it.

Pure json/numpy, shared by the agent (which writes the file) and the plot script (which reads
only these files). Score matrix: ``score_matrix[i][j]`` is the mean raw score of game ``j``
after training game ``i`` (``None`` for ``j > i`` or rows not reached yet). ``random[g]`` is
game ``g``'s random-policy score, measured in the same run by the same evaluation code.

Every RL metric is computed on scores shifted by that random score ``R``, because raw returns
can be 0 or negative (Boxing) and their ratios then mean nothing:

- normalized return (the paper's Figure 7a, random-shifted): ``(score - R) / (best - R)`` with
  ``best`` the best evaluation mean the fine-tuning reference run reached on the game; the
  accumulated normalized return sums it over the games learned so far;
- plasticity ``P_j = (A[j,j] - R_j) / (A_FT[j,j] - R_j)``, stability
  ``S_j = (A[T,j] - R_j) / max_{j<=i<=T} (A[i,j] - R_j)`` (NaN for a game never learned above
  random); for positive scores and ``R = 0`` these are the paper's definitions;
- forgetting (max-based) and BWT per game in raw score units, and their means over games on
  the normalized scale (one game's points are not another's).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

RESULTS_FILE = "results.json"
#: Version of the results file's structure (2: random-policy scores and random-shifted metrics).
RESULTS_FORMAT = 2


TEMP_PATTERN = re.compile(r"\.tmp\d+$")


def write_atomic(path: str, write: Callable[[BinaryIO], None], temp_base: str | None = None) -> None:
    """Write ``path`` through ``write(file)`` so that it is never seen half-written: a temporary
    ``<path>.tmp<pid>`` (``<temp_base>.tmp<pid>`` when given, in the same directory) is written, flushed and fsynced, renamed over ``path`` with ``os.replace``,
    and the directory is fsynced so the rename survives a power cut. Mode 0644 (not mkstemp's 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{temp_base or path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (:func:`write_atomic`)."""
    data = json.dumps(obj, indent=1, allow_nan=False).encode()
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`)."""
    data = text.encode()
    write_atomic(str(path), lambda f: f.write(data))


def save_figure_atomic(fig: Any, path: str, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(str(path), lambda f: fig.savefig(f, format="png", dpi=dpi))


def remove_stale_temps(*directories: str) -> list[str]:
    """Delete leftovers ``*.tmp<pid>`` of writes that a kill interrupted; returns what was removed."""
    removed = []
    for directory in directories:
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if TEMP_PATTERN.search(name):
                    os.unlink(os.path.join(directory, name))
                    removed.append(os.path.join(directory, name))
    return removed


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
    problem = results_problem(results)
    if problem:
        raise ValueError(f"{path} is not a valid results file of agents/ppo_continual.py (format {RESULTS_FORMAT}): {problem}")
    return results


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def results_problem(results: Any) -> str | None:
    """What is structurally wrong with a parsed results file (None when it is well built):
    every field that readers index is checked, so a reader never fails half-way with a KeyError."""
    if not isinstance(results, dict):
        return "not a JSON object"
    for key in ("format", "games", "score_matrix", "timeline", "config", "random", "progress"):
        if key not in results:
            return f"no {key!r}"
    if results["format"] != RESULTS_FORMAT:
        return f"format {results['format']!r} (re-run with this version)"
    games = results["games"]
    if not isinstance(games, list) or not games or not all(isinstance(g, str) for g in games):
        return "'games' is not a non-empty list of names"
    n = len(games)
    matrix = results["score_matrix"]
    if (not isinstance(matrix, list) or len(matrix) != n
            or not all(isinstance(row, list) and len(row) == n and all(v is None or _number(v) for v in row) for row in matrix)):
        return f"'score_matrix' is not a {n}x{n} matrix of numbers and nulls"
    if not isinstance(results["config"], dict) or not isinstance(results["progress"], dict):
        return "'config' or 'progress' is not an object"
    if not isinstance(results["random"], dict) or not all(
            g in games and isinstance(v, dict) and _number(v.get("mean")) for g, v in results["random"].items()):
        return "'random' is not a map from games to {'mean': number}"
    if not isinstance(results["timeline"], list):
        return "'timeline' is not a list"
    for i, entry in enumerate(results["timeline"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("global_step"), int) or not isinstance(entry.get("scores"), dict):
            return f"timeline entry {i} lacks an integer 'global_step' or a 'scores' object"
        for g, stats in entry["scores"].items():
            if g not in games or not isinstance(stats, dict) or not (stats.get("mean") is None or _number(stats.get("mean"))):
                return f"timeline entry {i} has a bad score for {g!r}"
    reference = results.get("reference")
    if reference is not None and not (isinstance(reference, dict) and isinstance(reference.get("max_return"), dict)):
        return "'reference' is not null or an object with 'max_return'"
    return None


def best_scores(results: dict[str, Any]) -> dict[str, float]:
    """Per game, the best evaluation mean over the whole timeline."""
    best: dict[str, float] = {}
    for entry in results["timeline"]:
        for game, stats in entry["scores"].items():
            if stats.get("mean") is not None:
                best[game] = max(best.get(game, -math.inf), float(stats["mean"]))
    return best


def reference_scores(reference: dict[str, Any], games: Sequence[str], where: str,
                     strict: bool = True) -> dict[str, dict[str, float]]:
    """What a fine-tuning reference run gives the metrics, per game in ``games``: its best
    evaluation mean (``max_return``), its score right after learning the game (``diag_return``,
    None while it has not finished that game) and its random-policy score (``random_return``).
    ``ValueError`` when it does not cover a game, predates random scores, or never scored above
    random on a game (then normalizing by it means nothing; ``strict=False`` lets that through
    and :func:`normalized` gives NaN for such a game)."""
    best = best_scores(reference)
    missing = [g for g in games if g not in best]
    if missing:
        have = ", ".join(sorted(best)) or "none"
        raise ValueError(f"reference run {where} does not cover games {', '.join(missing)} (it has evaluations of: {have})")
    random = reference.get("random") or {}
    no_random = [g for g in games if g not in random]
    if no_random:
        raise ValueError(f"reference run {where} has no random-policy score for {', '.join(no_random)} "
                         f"(written before results format {RESULTS_FORMAT}): re-run it")
    bad = [f"{g}={best[g]:g} (random {random[g]['mean']:g})" for g in games if not best[g] > random[g]["mean"]]
    if bad and strict:
        raise ValueError(f"reference run {where} never scored above the random policy on {', '.join(bad)}: cannot normalize by it")
    ref_games, a = list(reference["games"]), score_matrix(reference)
    diag = {g: (float(a[ref_games.index(g), ref_games.index(g)]) if g in ref_games else math.nan) for g in games}
    return {"max_return": {g: best[g] for g in games},
            "diag_return": {g: (None if math.isnan(v) else v) for g, v in diag.items()},
            "random_return": {g: float(random[g]["mean"]) for g in games}}


def normalized(scores: dict[str, dict[str, Any]], ref_max: dict[str, float],
               random: dict[str, float]) -> tuple[dict[str, float], float]:
    """Random-shifted normalized mean score per game of one evaluation, ``(mean - R) / (best - R)``,
    and their sum over the games where it is defined (the accumulated normalized return); NaN
    for a game whose reference best is not above ``R``."""
    norm = {g: (float(s["mean"]) - random[g]) / (ref_max[g] - random[g]) if ref_max[g] > random[g] else math.nan
            for g, s in scores.items() if g in ref_max and g in random and s.get("mean") is not None}
    return norm, float(sum(v for v in norm.values() if not math.isnan(v)))


def random_scores(results: dict[str, Any]) -> dict[str, float]:
    """Per game, the random-policy mean score the run measured."""
    return {g: float(s["mean"]) for g, s in (results.get("random") or {}).items()}


def continual_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """P, S, forgetting and BWT of a run over its finished games (see the module docstring);
    P needs the run's fine-tuning reference (``results["reference"]``)."""
    from agscl import metrics

    n = games_done(results)
    games = list(results["games"])[:n]
    random = random_scores(results)
    if n == 0 or any(g not in random for g in games):
        return {"games": games, "per_game": {}}
    a = score_matrix(results)[:n, :n]
    base = np.array([random[g] for g in games])
    ref = results.get("reference") or {}
    diag = [(ref.get("diag_return") or {}).get(g) for g in games]
    p = (metrics.plasticity_per_task(a, np.array([np.nan if d is None else d for d in diag]), base)
         if ref else np.full(n, np.nan))
    s = metrics.stability_per_task(a, base)
    f, bwt = metrics.forgetting_per_task(a), metrics.backward_transfer_per_task(a)
    # normalized scale: the reference's best gain over random, else the run's own best gain
    scale = np.array([(ref["max_return"][g] - random[g]) if ref else (a[j:, j] - random[g]).max() for j, g in enumerate(games)])
    scale = np.where(scale > 0, scale, np.nan)
    clean = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
    per_game = {g: {"P": clean(p[j]), "S": clean(s[j]),
                    "forgetting": clean(f[j]) if j < n - 1 else None, "bwt": clean(bwt[j]) if j < n - 1 else None}
                for j, g in enumerate(games)}
    mean = lambda v: clean(float(np.nanmean(v))) if np.isfinite(v).any() else None  # noqa: E731
    return {"games": games, "per_game": per_game, "P_mean": mean(p), "S_mean": mean(s),
            "forgetting_mean_normalized": mean(f / scale[: n - 1]) if n > 1 else None,
            "bwt_mean_normalized": mean(bwt / scale[: n - 1]) if n > 1 else None}


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
