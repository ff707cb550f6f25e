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

Every ratio's denominator is a gain over random, and a gain within the evaluations' noise (under
:data:`NOISE_Z` standard errors of the difference of the two means, from the episode returns the
file keeps) makes the ratio undefined (null), never a number: :func:`gain_over_random`, the one
function behind the agent, the plots, the aggregate and the sweep's table. docs/metrics.md has
every definition.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

# The atomic writers live in common.runio (shared with supervised/, sweep/ and bench/); these
# names stay importable from here.
from common.runio import (  # noqa: F401
    TEMP_PATTERN, remove_stale_temps, save_figure_atomic, write_atomic, write_json_atomic, write_text_atomic)

RESULTS_FILE = "results.json"
#: Version of the results file's structure (2: random-policy scores and random-shifted metrics).
RESULTS_FORMAT = 2


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


#: A gain over random smaller than this many standard errors of the difference of the two means
#: is within the evaluations' noise: every ratio with it as denominator is undefined (null).
NOISE_Z = 2.0

Stats = Mapping[str, Any]  # an evaluation's statistics: "mean", and "returns" or "std" + "episodes" or "se"


def standard_error(stats: Stats | float) -> float:
    """Standard error of an evaluation's mean: from its episode returns (sample standard deviation
    over sqrt(n)), else from its population ``std`` and ``episodes`` (``std / sqrt(n - 1)``, the
    same number), else an explicit ``se`` (a pooled reference); 0 when nothing is known (a bare
    number, one episode, or a file written before episode returns were kept)."""
    if not isinstance(stats, Mapping):
        return 0.0
    returns = stats.get("returns")
    if isinstance(returns, (list, tuple)) and len(returns) > 1:
        return float(np.std(np.asarray(returns, dtype=np.float64), ddof=1) / math.sqrt(len(returns)))
    std, n = stats.get("std"), stats.get("episodes")
    if _number(std) and _number(n) and n > 1:
        return float(std) / math.sqrt(n - 1)
    se = stats.get("se")
    return float(se) if _number(se) and math.isfinite(se) else 0.0


def mean_of(stats: Stats | float) -> float:
    """The mean of an evaluation (NaN when it has none)."""
    if isinstance(stats, Mapping):
        value = stats.get("mean")
        return float(value) if _number(value) else math.nan
    return float(stats) if _number(stats) else math.nan


def gain_over_random(score: Stats | float, random: Stats | float, z: float = NOISE_Z) -> float:
    """``mean(score) - mean(random)`` when it exceeds ``z`` standard errors of that difference,
    ``sqrt(se_score^2 + se_random^2)`` (and 0), else NaN: the denominator of every random-shifted
    ratio (normalized return, P, S, normalized forgetting), in the agent, the plots, the
    aggregate and the sweep's table alike. A gain within noise (fine-tuning at 0.53 on a game whose
    random policy scores 0.50) would make the ratio explode; it is undefined instead."""
    gain = mean_of(score) - mean_of(random)
    noise = z * math.hypot(standard_error(score), standard_error(random))
    return gain if math.isfinite(gain) and gain > 0 and gain > noise else math.nan


def shifted_ratio(value: float, top: Stats | float, random: Stats | float) -> float:
    """``(value - R) / (top - R)`` with ``R = mean(random)``; NaN when ``top``'s gain over random
    is within noise (:func:`gain_over_random`)."""
    gain = gain_over_random(top, random)
    return (float(value) - mean_of(random)) / gain if math.isfinite(gain) else math.nan


def pooled(stats: Sequence[Stats | float]) -> dict[str, float]:
    """The mean of several evaluations' means (one per seed) and its standard error
    ``sqrt(sum se_i^2) / k``: the grid's fine-tuning reference."""
    k = len(stats)
    return {"mean": float(np.mean([mean_of(s) for s in stats])),
            "se": math.sqrt(sum(standard_error(s) ** 2 for s in stats)) / k}


def best_evaluations(results: dict[str, Any]) -> dict[str, Stats]:
    """THE definition of a run's best score on a game (fine-tuning's best normalizes every
    return): the evaluation with the highest mean over the whole timeline, mid-game evaluations
    included, as the agent logs it to TensorBoard while it runs. Used by the agent's
    ``--reference-run``, ``plot_continual.py`` and ``aggregate.py`` alike."""
    best: dict[str, Stats] = {}
    for entry in results["timeline"]:
        for game, stats in entry["scores"].items():
            if stats.get("mean") is not None and (game not in best or float(stats["mean"]) > float(best[game]["mean"])):
                best[game] = stats
    return best


def best_scores(results: dict[str, Any]) -> dict[str, float]:
    """Per game, the mean of :func:`best_evaluations`."""
    return {g: float(s["mean"]) for g, s in best_evaluations(results).items()}


def boundary_evaluations(results: dict[str, Any]) -> list[list[Stats | None]]:
    """``[i][j]``: the statistics of the end-of-game evaluation of game ``j`` after learning game
    ``i`` (the score matrix with each entry's noise); a matrix entry without its timeline entry
    (a hand-written file) is its bare mean, with the stored std when there is one."""
    games, a = list(results["games"]), score_matrix(results)
    std = results.get("score_std_matrix")
    episodes = (results.get("config") or {}).get("eval_episodes")
    out: list[list[Stats | None]] = [[None] * len(games) for _ in games]
    for i in range(len(games)):
        for j in range(i + 1):
            if np.isfinite(a[i, j]):
                entry: dict[str, Any] = {"mean": float(a[i, j])}
                if std is not None and std[i][j] is not None and episodes:
                    entry.update(std=float(std[i][j]), episodes=int(episodes))
                out[i][j] = entry
    for entry in results["timeline"]:
        if entry.get("boundary") and isinstance(entry.get("game"), int) and entry["game"] < len(games):
            for g, stats in entry["scores"].items():
                j = games.index(g)
                if stats.get("mean") is not None and out[entry["game"]][j] is not None:
                    out[entry["game"]][j] = stats
    return out


def reference_scores(reference: dict[str, Any], games: Sequence[str], where: str,
                     strict: bool = False) -> dict[str, Any]:
    """What a fine-tuning reference run gives the metrics, per game in ``games``: its best
    evaluation (:func:`best_evaluations`; mean ``max_return`` and standard error ``max_se``), its
    score right after learning the game (``diag_return``/``diag_se``, None while it has not
    finished that game), its random-policy score (``random_return``), and ``undefined``: the games
    on which its best is not above its own random score by more than the noise
    (:func:`gain_over_random`), which it cannot normalize. ``ValueError`` when it does not cover a
    game or predates random scores; with ``strict``, also when some game is undefined."""
    best = best_evaluations(reference)
    missing = [g for g in games if g not in best]
    if missing:
        have = ", ".join(sorted(best)) or "none"
        raise ValueError(f"reference run {where} does not cover games {', '.join(missing)} (it has evaluations of: {have})")
    random = reference.get("random") or {}
    no_random = [g for g in games if g not in random]
    if no_random:
        raise ValueError(f"reference run {where} has no random-policy score for {', '.join(no_random)} "
                         f"(written before results format {RESULTS_FORMAT}): re-run it")
    undefined = [g for g in games if math.isnan(gain_over_random(best[g], random[g]))]
    if undefined and strict:
        bad = ", ".join(f"{g}={mean_of(best[g]):g} (random {mean_of(random[g]):g})" for g in undefined)
        raise ValueError(f"reference run {where} never scored above the random policy beyond noise on {bad}: cannot normalize by it")
    ref_games, diag = list(reference["games"]), boundary_evaluations(reference)
    diag_stats = {g: (diag[ref_games.index(g)][ref_games.index(g)] if g in ref_games else None) for g in games}
    return {"max_return": {g: mean_of(best[g]) for g in games},
            "max_se": {g: standard_error(best[g]) for g in games},
            "diag_return": {g: (None if s is None else mean_of(s)) for g, s in diag_stats.items()},
            "diag_se": {g: (None if s is None else standard_error(s)) for g, s in diag_stats.items()},
            "random_return": {g: mean_of(random[g]) for g in games},
            "random_se": {g: standard_error(random[g]) for g in games},
            "undefined": undefined}


def reference_best(reference: Mapping[str, Any], game: str) -> Stats | None:
    """A stored reference's best score on ``game`` as statistics (mean and standard error)."""
    value = (reference.get("max_return") or {}).get(game)
    return None if value is None else {"mean": value, "se": (reference.get("max_se") or {}).get(game) or 0.0}


def reference_diag(reference: Mapping[str, Any], game: str) -> Stats | None:
    """A stored reference's end-of-game score on ``game`` as statistics (mean and standard error)."""
    value = (reference.get("diag_return") or {}).get(game)
    return None if value is None else {"mean": value, "se": (reference.get("diag_se") or {}).get(game) or 0.0}


def normalization_note(by: str, undefined: Sequence[str] = ()) -> str:
    """The line every output carries beside a normalized return: which reference made it."""
    note = f"normalized return per game: (score - R) / (best - R), best and R from {by}"
    return note + (f"; undefined (its best within noise of R): {', '.join(undefined)}" if undefined else "")


def reference_random(reference: Mapping[str, Any], game: str) -> Stats | None:
    """A stored reference's random-policy score on ``game`` as statistics (None: a reference
    stored before it kept one)."""
    value = (reference.get("random_return") or {}).get(game)
    return None if value is None else {"mean": value, "se": (reference.get("random_se") or {}).get(game) or 0.0}


def normalized(scores: Mapping[str, Stats], reference: Mapping[str, Any],
               random: Mapping[str, Stats | float]) -> tuple[dict[str, float], float]:
    """Random-shifted normalized mean score per game of one evaluation,
    ``(mean - R) / (best - R)`` with ``best`` and ``R`` the reference's best score and its
    random-policy score (:func:`reference_scores`): one affine map per game, the same for every
    run and seed normalized by that reference, so that every seed sums the same games. ``random``
    (this run's own random scores) stands in only for a reference stored without its random
    score. The sum over the games where it is defined is the accumulated normalized return. NaN
    for a game whose reference gain over ``R`` is within noise (:func:`shifted_ratio`): decided
    once per game, from the reference alone."""
    norm = {}
    for g, s in scores.items():
        top = reference_best(reference, g)
        r = reference_random(reference, g) or random.get(g)
        if top is not None and r is not None and s.get("mean") is not None:
            norm[g] = shifted_ratio(float(s["mean"]), top, r)
    return norm, float(sum(v for v in norm.values() if not math.isnan(v)))


def run_ratios(entries: Sequence[Sequence[Stats | None]], random: Sequence[Stats | float],
               ref_best: Sequence[Stats | None] | None, ref_diag: Sequence[Stats | None] | None,
               ref_random: Sequence[Stats | None] | None = None) -> dict[str, np.ndarray]:
    """Every random-shifted ratio of one run over its ``n`` finished games, each through
    :func:`shifted_ratio` (NaN where undefined). ``entries[i][j]``: end-of-game evaluations
    (:func:`boundary_evaluations`), ``random[j]``: the run's random-policy scores, ``ref_best``,
    ``ref_diag`` and ``ref_random``: the fine-tuning reference's best, end-of-game and random-policy
    scores (None: no reference; ``ref_random`` None or a None entry: the run's own ``R`` stands in).

    Every ratio against the reference shifts by the reference's ``R_j`` (``Rf_j`` below), so that
    whether a game counts is decided once per game, from the reference, and every seed sums the
    same games; S, which compares the run with itself, shifts by the run's own ``R_j``:

    - ``normalized[i, j]`` (j <= i): ``(A[i, j] - Rf_j) / (best_j - Rf_j)``; ``accumulated[i]``: its
      sum over the defined games ``j <= i`` (the curve after each game);
    - ``P[j] = (A[j, j] - Rf_j) / (A_FT[j, j] - Rf_j)``;
    - ``S[j] = (A[T, j] - R_j) / max_{j<=i<=T} (A[i, j] - R_j)``;
    - ``forgetting[j]`` (j < T): ``(max_{j<=i<T} A[i, j] - A[T, j]) / (best_j - Rf_j)``, the scale
      being the run's own best gain over ``R_j`` when there is no reference."""
    n = len(entries)
    a = np.array([[mean_of(entries[i][j]) if j <= i and entries[i][j] is not None else np.nan for j in range(n)]
                  for i in range(n)])
    norm = np.full((n, n), np.nan)
    p, s, f = np.full(n, np.nan), np.full(n, np.nan), np.full(max(n - 1, 0), np.nan)
    for j in range(n):
        own_best = entries[j + int(np.nanargmax(a[j:, j]))][j]  # the run's best end-of-game score on j
        s[j] = shifted_ratio(a[n - 1, j], own_best, random[j])
        best = ref_best[j] if ref_best is not None else None
        rf = ref_random[j] if ref_random is not None and ref_random[j] is not None else random[j]
        if best is not None:
            for i in range(j, n):
                norm[i, j] = shifted_ratio(a[i, j], best, rf)
        if ref_diag is not None and ref_diag[j] is not None:
            p[j] = shifted_ratio(a[j, j], ref_diag[j], rf)
        if j < n - 1:
            scale = gain_over_random(best, rf) if best is not None else gain_over_random(own_best, random[j])
            f[j] = (np.max(a[j:n - 1, j]) - a[n - 1, j]) / scale
    accumulated = np.array([np.nansum(norm[i, : i + 1]) if np.isfinite(norm[i, : i + 1]).any() else np.nan
                            for i in range(n)])
    return {"normalized": norm, "accumulated": accumulated, "P": p, "S": s, "forgetting": f}


def continual_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """P, S, forgetting and BWT of a run over its finished games (see the module docstring);
    P and the normalized scale need the run's fine-tuning reference (``results["reference"]``)."""
    from reporting import metrics

    n = games_done(results)
    games = list(results["games"])[:n]
    random = results.get("random") or {}
    if n == 0 or any(g not in random for g in games):
        return {"games": games, "per_game": {}}
    entries = [row[:n] for row in boundary_evaluations(results)[:n]]
    ref = results.get("reference")
    r = run_ratios(entries, [random[g] for g in games],
                   None if not ref else [reference_best(ref, g) for g in games],
                   None if not ref else [reference_diag(ref, g) for g in games],
                   None if not ref else [reference_random(ref, g) for g in games])
    a = score_matrix(results)[:n, :n]
    f, bwt = metrics.forgetting_per_task(a), metrics.backward_transfer_per_task(a)
    scale = np.array([gain_over_random(reference_best(ref, g) if ref else
                                       entries[j + int(np.nanargmax(a[j:, j]))][j], random[g]) for j, g in enumerate(games)])
    clean = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
    per_game = {g: {"P": clean(r["P"][j]), "S": clean(r["S"][j]),
                    "forgetting": clean(f[j]) if j < n - 1 else None, "bwt": clean(bwt[j]) if j < n - 1 else None}
                for j, g in enumerate(games)}
    mean = lambda v: clean(float(np.nanmean(v))) if np.isfinite(v).any() else None  # noqa: E731
    return {"games": games, "per_game": per_game, "P_mean": mean(r["P"]), "S_mean": mean(r["S"]),
            "forgetting_mean_normalized": mean(r["forgetting"]) if n > 1 else None,
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
