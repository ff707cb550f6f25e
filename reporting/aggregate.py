"""Seeds x methods results of continual RL runs: per-run metrics, 95% intervals, tables, figures.

Input is only the runs' ``results.json`` files. The fine-tuning runs of the same grid are the
reference (the paper's Figure 7 normalizes by fine-tuning; ``--reference L``: only the runs
labelled ``L``, e.g. one trunk's fine-tuning in a grid of two trunks): per game, the mean over its seeds
of its best evaluation (:func:`reporting.results.best_evaluations`: the best over the whole
timeline, mid-game evaluations included, the one definition the agent and the plots use too)
and of its score right after learning the game (``diag``). Each run then gets, on scores
shifted by its own random-policy score ``R`` (:func:`reporting.results.run_ratios`):

- ``final_return``: mean over games of the raw final score ``A[T, j]`` (units differ per game);
- ``accumulated_normalized``: sum over games of ``(A[T, j] - R_j) / (max_j - R_j)`` (at most
  the number of games for an agent that forgets nothing and matches fine-tuning's best), and
  ``after_game[i]``, the same sum over games ``0..i`` after learning game ``i`` (the paper's curve);
- ``P``: mean over games of ``(A[j, j] - R_j) / (diag_j - R_j)``;
- ``S``: mean over games of ``(A[T, j] - R_j) / max_i (A[i, j] - R_j)``;
- ``forgetting``: mean over games ``j < T`` of ``(max_{i<T} A[i, j] - A[T, j]) / (max_j - R_j)``;
- the capacity left after each game (``results["regularizer"][g]``): AGS-CL's free nodes
  (``sparsity``, |G0|/|G|), PackNet's free weights (``free_fraction``) and every method's dormant
  trunk units (``dormant_fraction``), and the trunk's plasticity metrics
  (:mod:`agents.plasticity_metrics`): the effective rank of its features (``srank``), the mean
  |weight| (``weight_magnitude/<layer>``) and the gradient norm (``grad_norm/<layer>``) of each
  layer; "n/a" where a run does not record it (older runs).

A ratio whose gain over random is within the evaluations' noise is undefined (null, and left out
of means and sums; :func:`reporting.results.gain_over_random`). Every number is reported as the
mean over the seeds where it is defined, with a 95% percentile-bootstrap interval from
``scipy.stats.bootstrap`` (10,000 resamples), and the count of those seeds wherever it is fewer
than the method's seeds. With 3 seeds such an interval is coarse: it shows the spread of the
seeds, not a population guarantee. The probability that AGS-CL improves on each other method is
rliable's ``probability_of_improvement`` on the final normalized score per game, with rliable's
stratified bootstrap interval; ``--against L`` adds the other direction, every method's probability
of improving on ``L``. docs/metrics.md has every definition.

    python -m reporting.aggregate --sweep-dir runs/continual_minatar5 --out-dir docs/results --name continual_minatar5
    python -m reporting.aggregate runs/a runs/b ... --labels finetune agscl ... --out-dir DIR --name NAME
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import tyro

from reporting.plot_continual import steps_axis
from reporting.results import (Stats, best_evaluations, boundary_evaluations, games_done, load_results, mean_of, normalization_note,
                            normalized,
                            pooled, run_ratios, save_figure_atomic, score_matrix, write_json_atomic, write_text_atomic)
from common.cli import parse
from common.runio import check_output_dir, check_output_file

CONFIDENCE = 0.95
RESAMPLES = 10_000
#: rliable's stratified bootstrap replications for the probability of improvement
IMPROVEMENT_REPS = 2_000
#: the capacity measures read from ``results["regularizer"][g]``: (summary key, results key, what it is)
CAPACITY = (("free_nodes", "sparsity", "AGS-CL free nodes (G0 / G)"),
            ("free_weights", "free_fraction", "PackNet free weights"),
            ("dormant", "dormant_fraction", "dormant trunk units"))
#: the plasticity measures of ``results["regularizer"][g]`` with one value per run: (summary key, results key, what, digits)
PLASTICITY = (("srank", "srank", "effective rank of the features (srank, delta 0.01)", 1),)
#: the per-layer plasticity measures, ``<prefix>/<layer>`` in ``results["regularizer"][g]``: (prefix, what, digits)
LAYER_MEASURES = (("weight_magnitude", "mean abs weight", 3), ("grad_norm", "gradient norm (last update, before clipping)", 3))


@dataclass
class RunRecord:
    """One finished run and the metrics derived from it."""

    path: str
    label: str  # label in the grid (e.g. "agscl" or an ablation name)
    seed: int
    games: list[str]
    matrix: np.ndarray  # score matrix (games x games)
    random: np.ndarray  # random-policy score per game
    steps_per_game: int = 0
    game_steps: list[int] = field(default_factory=list)  # per game (budgets may differ); [] in hand-made files
    method: str = ""  # the agent's --method (fine-tuning runs are the reference, whatever their label)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # results.json's evaluations
    entries: list[list[Any]] = field(default_factory=list)  # end-of-game evaluations (reporting.results.boundary_evaluations)
    random_stats: list[Any] = field(default_factory=list)  # random-policy evaluation per game (with its episodes)
    regularizer: list[dict[str, Any]] = field(default_factory=list)  # results["regularizer"]: one entry per game
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    accumulated: np.ndarray = field(default_factory=lambda: np.zeros(0))  # over the timeline
    values: dict[str, float] = field(default_factory=dict)
    per_game: dict[str, np.ndarray] = field(default_factory=dict)
    undefined: list[str] = field(default_factory=list)  # games whose normalized return is undefined (noise)


def game_boundaries(run: RunRecord) -> list[int]:
    """The global steps at which each game after the first begins: the cumulative per-game budgets
    (``game_steps``; every game ``steps_per_game`` in a file that lacks them)."""
    steps = run.game_steps or [run.steps_per_game] * len(run.games)
    return np.cumsum(steps)[:-1].tolist()


def read_run(path: str, label: str | None = None) -> RunRecord:
    """A finished run; ``ValueError`` when it is unfinished or lacks random-policy scores."""
    results = load_results(path)
    games = list(results["games"])
    if games_done(results) < len(games):
        raise ValueError(f"{path} has finished {games_done(results)} of {len(games)} games: resume it first")
    random = results["random"]
    if any(g not in random for g in games):
        raise ValueError(f"{path} has no random-policy scores (results format < 2): re-run it")
    config = results["config"]
    return RunRecord(path, label or str(config.get("method")), int(config.get("seed", 0)), games,
                     score_matrix(results), np.array([mean_of(random[g]) for g in games]), int(results["steps_per_game"]),
                     [int(s) for s in results.get("game_steps") or []], str(config.get("method")), results["timeline"], boundary_evaluations(results),
                     [random[g] for g in games], list(results.get("regularizer") or []))


@dataclass
class Reference:
    max_return: np.ndarray  # per game: mean over fine-tuning seeds of the best evaluation score
    diag_return: np.ndarray  # per game: mean over fine-tuning seeds of A[j, j]
    best: list[Stats] = field(default_factory=list)  # the same as statistics (mean and pooled standard error)
    diag: list[Stats] = field(default_factory=list)
    random: list[Stats] = field(default_factory=list)  # per game: the fine-tuning seeds' random scores, pooled

    def as_results_reference(self, games: Sequence[str]) -> dict[str, Any]:
        """In the form of results.json's ``reference`` (for :func:`reporting.results.normalized`)."""
        return {"max_return": {g: float(self.best[j]["mean"]) for j, g in enumerate(games)},
                "max_se": {g: float(self.best[j]["se"]) for j, g in enumerate(games)},
                "random_return": {g: float(self.random[j]["mean"]) for j, g in enumerate(games)},
                "random_se": {g: float(self.random[j]["se"]) for j, g in enumerate(games)}}


def reference_from(finetune_runs: Sequence[RunRecord]) -> Reference:
    """The grid's reference from its fine-tuning runs (all of them, or those of ``--reference``): per
    game, the best evaluation of each seed over its whole timeline
    (:func:`reporting.results.best_evaluations`) and its end-of-game score, pooled over seeds."""
    if not finetune_runs:
        raise ValueError("no fine-tuning run: the grid needs the finetune method as its reference "
                         "(or name the reference's label with --reference)")
    games = finetune_runs[0].games
    bests = [best_evaluations({"timeline": r.timeline}) for r in finetune_runs]
    best = [pooled([b[g] if g in b else float(np.nanmax(r.matrix[:, j])) for b, r in zip(bests, finetune_runs)])
            for j, g in enumerate(games)]
    diag = [pooled([r.entries[j][j] for r in finetune_runs]) for j in range(len(games))]
    random = [pooled([r.random_stats[j] for r in finetune_runs]) for j in range(len(games))]
    return Reference(np.array([b["mean"] for b in best]), np.array([d["mean"] for d in diag]), best, diag, random)


def compute(run: RunRecord, ref: Reference) -> RunRecord:
    """Fill ``run.values``, ``run.per_game`` and the normalized timeline (module docstring)."""
    a, n = run.matrix, len(run.games)
    ratios = run_ratios(run.entries, run.random_stats, ref.best, ref.diag, ref.random)
    final_norm = ratios["normalized"][n - 1]
    run.undefined = [g for g, v in zip(run.games, final_norm) if not np.isfinite(v)]
    run.per_game = {"final": a[n - 1].copy(), "final_normalized": final_norm, "P": ratios["P"], "S": ratios["S"],
                    "after_game": ratios["accumulated"]}
    for key, source, *_ in CAPACITY + PLASTICITY:
        run.per_game[key] = np.array([_regularizer_value(run.regularizer, g, source) for g in range(n)])
    for key in layer_keys([run.regularizer]):
        run.per_game[key] = np.array([_regularizer_value(run.regularizer, g, key) for g in range(n)])
    f = ratios["forgetting"]
    run.values = {
        "final_return": float(np.mean(a[n - 1])),
        "accumulated_normalized": float(ratios["accumulated"][n - 1]),
        "P": _nanmean(ratios["P"]),
        "S": _nanmean(ratios["S"]),
        "forgetting": _nanmean(f) if f.size else 0.0,
    }
    reference = ref.as_results_reference(run.games)
    random = dict(zip(run.games, run.random_stats))
    run.steps = np.array([e["global_step"] for e in run.timeline])
    run.accumulated = np.array([normalized(e["scores"], reference, random)[1] for e in run.timeline])
    return run


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def layer_keys(regularizers: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """The per-layer plasticity keys (``weight_magnitude/conv1``, ...) that any of these
    ``results["regularizer"]`` lists records, measure by measure, layers in their trunk order."""
    seen = dict.fromkeys(k for entries in regularizers for e in entries for k in e
                         if any(k.startswith(prefix + "/") for prefix, *_ in LAYER_MEASURES))
    return [k for prefix, *_ in LAYER_MEASURES for k in seen if k.startswith(prefix + "/")]


def _regularizer_value(entries: Sequence[dict[str, Any]], game: int, key: str) -> float:
    """``results["regularizer"]``'s ``key`` at the end of game ``game`` (a composition's statistic
    is prefixed by its part, ``agscl/sparsity``: the one part that has it counts); NaN when not recorded."""
    for entry in entries:
        if entry.get("game") != game:
            continue
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key])
        prefixed = [v for k, v in entry.items() if k.endswith("/" + key) and isinstance(v, (int, float))]
        if len(prefixed) == 1:
            return float(prefixed[0])
    return math.nan


def interval(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of the finite ``values`` (scipy.stats.bootstrap);
    undefined (NaN) values are left out (:func:`defined` counts what is left); the interval
    collapses to the mean when all values are equal or only one is given."""
    from scipy.stats import bootstrap

    x = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return (float("nan"),) * 3
    mean = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return mean, mean, mean
    res = bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                    random_state=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def defined(values: Sequence[float]) -> int:
    """How many of ``values`` :func:`interval` uses (the finite ones)."""
    return int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y): per game, the share of (run of X, run of Y) pairs where X scores higher, ties
    counted one half (the Mann-Whitney U statistic over ``n_x * n_y``), averaged over games.
    ``scores_*``: runs x games. The same number as rliable's ``metrics.probability_of_improvement``
    (tests/test_aggregate.py checks it), vectorized: rliable's calls scipy's ``mannwhitneyu`` once
    per game, about 100 times slower inside a 2,000-replication bootstrap."""
    x, y = np.asarray(scores_x, dtype=np.float64), np.asarray(scores_y, dtype=np.float64)
    diff = x[:, None, :] - y[None, :, :]  # runs_x x runs_y x games
    per_game = ((diff > 0).sum(axis=(0, 1)) + 0.5 * (diff == 0).sum(axis=(0, 1))) / (x.shape[0] * y.shape[0])
    return float(per_game.mean())


def _pair_probability(x: np.ndarray, y: np.ndarray, games: Sequence[str], reps: int, seed: int) -> dict[str, Any]:
    """P(X > Y) of two labels' final normalized scores (runs x games), with the 95% percentile
    interval of rliable's stratified bootstrap (``library.get_interval_estimates``: the runs of X
    and of Y resampled independently, within each game). Games where some run of the pair has no
    defined normalized score are left out (and listed); the probability is None when none is left."""
    from rliable import library as rly

    keep = np.isfinite(x).all(axis=0) & np.isfinite(y).all(axis=0)
    entry: dict[str, Any] = {"games": [g for g, k in zip(games, keep) if k],
                             "left_out": [g for g, k in zip(games, keep) if not k], "runs": [len(x), len(y)]}
    if keep.any():
        # rliable's two-sample bootstrap (StratifiedIndependentBootstrap) draws its indices with
        # np.random.choice, numpy's global generator, whatever random_state says: seed that one for
        # the call, so that a table is the same every time, and give its state back after.
        global_state = np.random.get_state()
        try:
            np.random.seed(seed)
            with warnings.catch_warnings():  # arch's notice that random_state will become a Generator
                warnings.simplefilter("ignore", FutureWarning)
                point, cis = rly.get_interval_estimates({"pair": (x[:, keep], y[:, keep])}, probability_of_improvement,
                                                        reps=reps, confidence_interval_size=CONFIDENCE,
                                                        random_state=np.random.RandomState(seed))
        finally:
            np.random.set_state(global_state)
        low, high = np.ravel(cis["pair"])
        entry["probability"] = [float(point["pair"]), float(low), float(high)]
    else:
        entry["probability"] = None
    return entry


def _final_scores(runs: Sequence[RunRecord], label: str) -> np.ndarray:
    return np.array([r.per_game["final_normalized"] for r in runs if r.label == label], dtype=np.float64)


def improvement_probabilities(runs: Sequence[RunRecord], improver: str, reps: int = IMPROVEMENT_REPS,
                              seed: int = 0) -> dict[str, Any]:
    """For each other label Y: P(``improver`` > Y) on the final normalized score per game
    (:func:`probability_of_improvement`, interval and left-out games as :func:`_pair_probability`);
    empty when the improver is not in the grid."""
    labels = list(dict.fromkeys(r.label for r in runs))
    if improver not in labels:
        return {}
    x = _final_scores(runs, improver)
    return {other: _pair_probability(x, _final_scores(runs, other), runs[0].games, reps, seed)
            for other in labels if other != improver}


def _check_labels(grid_labels: Sequence[str], targets: Sequence[str], flag: str = "--against") -> list[str]:
    """The grid's distinct labels; ValueError naming them (and ``flag``) when a target is not one."""
    labels = list(dict.fromkeys(grid_labels))
    for target in targets:
        if target not in labels:
            raise ValueError(f"{flag} {target!r} is not a label of these runs: choose from {', '.join(labels)}")
    return labels


def improvement_over(runs: Sequence[RunRecord], target: str, reps: int = IMPROVEMENT_REPS,
                     seed: int = 0) -> dict[str, Any]:
    """For each other label X: P(X > ``target``), the other direction of
    :func:`improvement_probabilities` (does any method improve on ``target``?)."""
    labels = _check_labels([r.label for r in runs], [target])
    y = _final_scores(runs, target)
    return {other: _pair_probability(_final_scores(runs, other), y, runs[0].games, reps, seed)
            for other in labels if other != target}


def summarize(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Per method: the mean score matrix over seeds and every metric with its interval, the
    number of seeds each is defined on, the curve after each game and the capacity left."""
    by_label: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    games = runs[0].games
    out: dict[str, Any] = {"games": games, "random": np.mean([r.random for r in runs], axis=0).tolist(), "methods": {},
                           "undefined": {r.path: r.undefined for r in runs if r.undefined}}
    for label, group in by_label.items():
        per_game_keys = list(dict.fromkeys(k for r in group for k in r.per_game))  # a key some run lacks: NaN there
        missing = np.full(len(games), np.nan)
        entry: dict[str, Any] = {
            "seeds": sorted(r.seed for r in group),
            "runs": [r.path for r in group],
            "score_matrix_mean": np.mean([r.matrix for r in group], axis=0).tolist(),  # NaN above the diagonal
            "metrics": {k: interval([r.values[k] for r in group]) for k in group[0].values},
            "defined": {k: defined([r.values[k] for r in group]) for k in group[0].values},
            "per_game": {k: [interval([r.per_game.get(k, missing)[j] for r in group]) for j in range(len(games))]
                         for k in per_game_keys},
            "per_game_defined": {k: [defined([r.per_game.get(k, missing)[j] for r in group]) for j in range(len(games))]
                                 for k in per_game_keys},
        }
        out["methods"][label] = entry
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` with every non-finite float (an undefined metric) as None, for strict JSON."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _fmt(ci: Sequence[Any] | None, digits: int = 2, count: int | None = None, seeds: int | None = None) -> str:
    """``mean [low, high]``, with ``(n=count)`` when fewer seeds than the method's are defined;
    "n/a" when none is (or the runs do not record it)."""
    if ci is None or ci[0] is None or not np.isfinite(ci[0]):
        return "n/a"
    mean, lo, hi = ci
    text = f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text + (f" (n={count})" if count is not None and seeds is not None and count != seeds else "")


def _probability_table(what: str, column: str, runs: str, table: dict[str, Any]) -> list[str]:
    """The lines of one probability-of-improvement table (``improvement_probabilities``' entries)."""
    lines = ["", f"Probability that {what} (final normalized score per game; rliable, stratified bootstrap 95% CI):", "",
             f"| method | {column} | games | runs ({runs}) |", "| --- | --- | --- | --- |"]
    for other, e in table.items():
        left = f" (left out: {', '.join(e['left_out'])})" if e["left_out"] else ""
        lines.append(f"| {other} | {_fmt(e['probability'])} | {len(e['games'])}{left} | {e['runs'][0]}, {e['runs'][1]} |")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The results as Markdown: the headline table, the curve after each game, the probability of
    improvement, the capacity left, per-game S and each method's score matrix."""
    games = summary["games"]
    lines = ["| method | seeds | average final return | accumulated normalized return | P | S | forgetting (normalized) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    keys = ("final_return", "accumulated_normalized", "P", "S", "forgetting")
    for label, m in summary["methods"].items():
        seeds, counts = len(m["seeds"]), m.get("defined", {})
        cells = [_fmt(m["metrics"][k], count=counts.get(k), seeds=seeds) for k in keys]
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
    if any("(n=" in line for line in lines):
        lines += ["", "(n=k): the cell's mean and interval are over the k seeds where the metric is defined (docs/metrics.md)."]
    if any("after_game" in m["per_game"] for m in summary["methods"].values()):
        lines += ["", "Accumulated normalized return after each game (mean [95% CI] over seeds):", "",
                  "| method | " + " | ".join(f"after {g}" for g in games) + " |", "| --- |" + " --- |" * len(games)]
        for label, m in summary["methods"].items():
            lines.append(f"| {label} | " + " | ".join(_per_game_cell(m, "after_game", j) for j in range(len(games))) + " |")
    improvement = summary.get("probability_of_improvement")
    if improvement:
        improver = summary.get("improver", "agscl")
        lines += _probability_table(f"{improver} improves on each method", f"P({improver} > method)",
                                    f"{improver}, method", improvement)
    for target, table in summary.get("probability_over", {}).items():
        lines += _probability_table(f"each method improves on {target}", f"P(method > {target})", f"method, {target}", table)
    lines += ["", "Capacity left after each game, and the trunk's plasticity metrics (mean [95% CI] over seeds; "
                  "n/a: not recorded by these runs):", "",
              "| method | measure | " + " | ".join(f"after {g}" for g in games) + " |", "| --- | --- |" + " --- |" * len(games)]
    layers = [k for k in dict.fromkeys(k for m in summary["methods"].values() for k in m["per_game"])
              if any(k.startswith(prefix + "/") for prefix, *_ in LAYER_MEASURES)]
    rows = [(key, what, digits) for key, _, what, digits in PLASTICITY]  # always shown, "n/a" where not recorded
    for prefix, what, digits in LAYER_MEASURES:
        keys = [k for k in layers if k.startswith(prefix + "/")]
        rows += [(k, f"{what}, {k.split('/', 1)[1]}", digits) for k in keys] or [(prefix, f"{what}, per layer", digits)]
    for label, m in summary["methods"].items():
        for key, _, what in CAPACITY:
            if key in m["per_game"] and any(c > 0 for c in m["per_game_defined"][key]):
                lines.append(f"| {label} | {what} | " + " | ".join(_per_game_cell(m, key, j) for j in range(len(games))) + " |")
            elif key == "dormant":
                lines.append(f"| {label} | {what} | " + " | ".join("n/a" for _ in games) + " |")
        for key, what, digits in rows:
            recorded = key in m["per_game"] and any(c > 0 for c in m["per_game_defined"][key])
            cells = [_per_game_cell(m, key, j, digits) if recorded else "n/a" for j in range(len(games))]
            lines.append(f"| {label} | {what} | " + " | ".join(cells) + " |")
    lines += ["", "Per game, final score / S (mean [95% CI]); random policy: " +
              ", ".join(f"{g} {r:.2f}" for g, r in zip(games, summary["random"])), "",
              "| method | " + " | ".join(f"{g} final | {g} S" for g in games) + " |",
              "| --- |" + " --- | --- |" * len(games)]
    for label, m in summary["methods"].items():
        cells = [f"{_per_game_cell(m, 'final', j, 1)} | {_per_game_cell(m, 'S', j)}" for j in range(len(games))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if (summary.get("reference") or {}).get("note"):
        lines += ["", summary["reference"]["note"] + "."]
    if summary.get("undefined"):
        lines += ["", "Normalized returns left undefined (fine-tuning's gain over its random score within noise):"]
        lines += [f"- {os.path.basename(str(path))}: {', '.join(gs)}" for path, gs in summary["undefined"].items()]
    lines += ["", "Score matrices (row: after learning game i; mean over seeds):", ""]
    for label, m in summary["methods"].items():
        lines += [f"{label}:", "", "| after \\ on | " + " | ".join(games) + " |", "| --- |" + " --- |" * len(games)]
        for i, row in enumerate(m["score_matrix_mean"]):
            cells = [f"{v:.2f}" if j <= i and v is not None and np.isfinite(v) else "" for j, v in enumerate(row)]
            lines.append(f"| {games[i]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _per_game_cell(m: dict[str, Any], key: str, j: int, digits: int = 2) -> str:
    counts = m.get("per_game_defined", {}).get(key)
    return _fmt(m["per_game"][key][j], digits, None if counts is None else counts[j], len(m["seeds"]))


def draw(runs: Sequence[RunRecord], summary: dict[str, Any], out: str) -> None:
    """Figure 7 of the paper with 95% bands: (a) accumulated normalized return over the steps,
    (b) plasticity and (c) stability per game, each with its interval over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = summary["games"]
    labels = list(summary["methods"])
    colors = label_colors(len(labels))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    for k, label in enumerate(labels):
        group = [r for r in runs if r.label == label]
        steps = group[0].steps
        if not all(np.array_equal(r.steps, steps) for r in group):  # different schedules: common steps only
            steps = np.array(sorted(set.intersection(*(set(r.steps.tolist()) for r in group))))
        curves = np.array([[r.accumulated[list(r.steps).index(s)] for s in steps] for r in group])
        cis = np.array([interval(curves[:, i]) for i in range(len(steps))])
        ax.plot(steps, cis[:, 0], color=colors[k], label=label)
        ax.fill_between(steps, cis[:, 1], cis[:, 2], color=colors[k], alpha=0.2)
    for step in game_boundaries(runs[0]):
        ax.axvline(step, color="grey", lw=0.5, ls="--")
    steps_axis(ax)
    ax.set_ylabel("accumulated normalized return")
    ax.set_title("(a) sum over games of (score - random) / (fine-tuning best - random)", fontsize=9)
    ax.legend(fontsize=8)
    width = 0.8 / max(1, len(labels))
    for ax, key, title in ((axes[1], "P", "(b) plasticity per game"), (axes[2], "S", "(c) stability per game")):
        for k, label in enumerate(labels):
            cis = np.array(summary["methods"][label]["per_game"][key], dtype=float)
            x = np.arange(len(games)) + (k - (len(labels) - 1) / 2) * width
            err = np.abs(np.stack([cis[:, 0] - cis[:, 1], cis[:, 2] - cis[:, 0]]))
            ax.bar(x, np.nan_to_num(cis[:, 0]), width, yerr=np.nan_to_num(err), capsize=2, color=colors[k], label=label)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(0.0, color="black", lw=0.5)
        ax.set_xticks(np.arange(len(games)), games)
        ax.set_title(title + " (random-shifted, 95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, out)
    plt.close(fig)


def label_colors(n: int) -> list[Any]:
    """One color per label, all distinct: matplotlib's cycle C0-C9 up to ten labels, beyond that
    tab20 (its ten dark shades, then the ten light ones), whose cycle would otherwise repeat."""
    if n <= 10:
        return [f"C{k}" for k in range(n)]
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]
    return [tab20([*range(0, 20, 2), *range(1, 20, 2)][k % 20]) for k in range(n)]


def draw_after_games(summary: dict[str, Any], out: str) -> None:
    """The paper's curve: (a) the accumulated normalized return after learning each game, mean and
    95% band over seeds per method; (b) the capacity left after each game (free nodes of AGS-CL,
    free weights of PackNet, solid; dormant trunk units of every method, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = summary["games"]
    x = np.arange(1, len(games) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = label_colors(len(summary["methods"]))
    for k, (label, m) in enumerate(summary["methods"].items()):
        cis = np.array(m["per_game"]["after_game"], dtype=float)
        axes[0].plot(x, cis[:, 0], marker="o", color=colors[k], label=label)
        axes[0].fill_between(x, cis[:, 1], cis[:, 2], color=colors[k], alpha=0.2)
        for key, style in (("free_nodes", "-"), ("free_weights", "-"), ("dormant", "--")):
            cap = np.array(m["per_game"].get(key, []), dtype=float)
            if cap.size and np.isfinite(cap[:, 0]).any():
                what = {"free_nodes": "free nodes", "free_weights": "free weights", "dormant": "dormant units"}[key]
                axes[1].plot(x, cap[:, 0], style, marker=".", color=colors[k], label=f"{label}: {what}")
                axes[1].fill_between(x, cap[:, 1], cap[:, 2], color=colors[k], alpha=0.12)
    axes[0].plot(x, x, color="grey", lw=0.6, ls=":", label="no forgetting, fine-tuning's best")
    axes[0].set_ylabel("accumulated normalized return")
    axes[0].set_title("(a) after learning each game: sum over games learned of (score - random) / (FT best - random)", fontsize=8)
    axes[1].set_ylabel("fraction")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("(b) capacity left after each game (95% CI over seeds)", fontsize=9)
    for ax in axes:
        ax.set_xticks(x, [f"{i}. {g}" for i, g in zip(x, games)], rotation=20, fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, out)
    plt.close(fig)


def aggregate(run_dirs: Sequence[str], labels: Sequence[str] | None = None, improver: str = "agscl",
              reps: int = IMPROVEMENT_REPS, against: Sequence[str] = (),
              reference: str | None = None) -> tuple[list[RunRecord], dict[str, Any]]:
    """Read, reference, compute and summarize a grid of runs, with the probability that
    ``improver`` improves on every other label (when it is in the grid) and, for each label of
    ``against``, the probability that every other label improves on it. The reference is the runs
    labelled ``reference``, by default every ``finetune`` run (a grid of two trunks names one
    trunk's fine-tuning, so that both are on one scale)."""
    runs = [read_run(d, None if labels is None else labels[i]) for i, d in enumerate(run_dirs)]
    games = runs[0].games
    other = [r.path for r in runs if r.games != games]
    if other:
        raise ValueError(f"runs over other games than {games}: {', '.join(other)}")
    _check_labels([r.label for r in runs], against)  # before any bootstrap
    _check_labels([r.label for r in runs], [] if reference is None else [reference], "--reference")
    chosen = [r for r in runs if (r.method == "finetune" if reference is None else r.label == reference)]
    ref = reference_from(chosen)
    runs = [compute(r, ref) for r in runs]
    summary = summarize(runs)
    seeds = ", ".join(map(str, sorted(r.seed for r in chosen)))
    whose = "this grid's fine-tuning runs" if reference is None else f"the runs labelled {reference}"
    summary["reference"] = {"max_return": ref.max_return.tolist(), "diag_return": ref.diag_return.tolist(),
                            "random_return": [r["mean"] for r in ref.random], "label": reference,
                            "definition": "best evaluation over the whole timeline, mean over the reference's seeds",
                            "note": normalization_note(
                                f"{whose} (seeds {seeds}: "
                                "best over the whole timeline and random-policy score, each pooled over seeds)")}
    summary["improver"] = improver
    try:
        summary["probability_of_improvement"] = improvement_probabilities(runs, improver, reps)
        summary["probability_over"] = {target: improvement_over(runs, target, reps) for target in against}
    except ImportError as exc:  # the `results` extra is not installed
        print(f"aggregate: note: no probability of improvement ({exc}): pip install -e \".[results]\"", file=sys.stderr)
        summary["probability_of_improvement"], summary["probability_over"] = {}, {}
    return runs, summary


def write_report(runs: Sequence[RunRecord], summary: dict[str, Any], out_dir: str, name: str) -> list[str]:
    """``<name>.md`` (the tables), ``<name>.json`` (every number, null where undefined),
    ``<name>.png`` (over the steps, P and S per game) and ``<name>_after_games.png`` (the curve
    after each game and the capacity left), all written atomically; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, name)
    write_text_atomic(stem + ".md", markdown(summary) + "\n")
    write_json_atomic(stem + ".json", jsonable(summary))
    draw(runs, summary, stem + ".png")
    draw_after_games(summary, stem + "_after_games.png")
    return [stem + ext for ext in (".md", ".json", ".png", "_after_games.png")]


def sweep_runs(sweep_dir: str) -> tuple[list[str], list[str]]:
    """The run directories and labels of a sweep's trials (its ``sweep.json``), finished or not."""
    path = Path(sweep_dir) / "sweep.json"
    try:
        trials = json.loads(path.read_text())["trials"]
        return [str(Path(sweep_dir) / t["name"]) for t in trials], [str(t["label"]) for t in trials]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a sweep's state file ({exc.__class__.__name__}: {exc})") from None


@dataclass
class AggregateArgs:
    """The CLI of :func:`main` (module docstring)."""

    runs: tyro.conf.Positional[tuple[str, ...]] = ()
    """run directories (default: every trial of --sweep-dir)"""
    sweep_dir: Optional[str] = None
    """a sweep directory: its trials' run directories, labelled as in the sweep"""
    labels: Optional[tuple[str, ...]] = None
    """one label per run directory (default: each run's --method)"""
    out_dir: str = "bench/results"
    """where <name>.md, .json, .png and _after_games.png go"""
    name: str = "continual"
    """file stem of the outputs"""
    improver: Optional[str] = None
    """the label whose probability of improving on every other label is reported (default: agscl, when in the grid)"""
    against: tuple[str, ...] = ()
    """labels (e.g. agscl_mu4 packnet) each getting a table of every other label's probability of improving on it"""
    reference: Optional[str] = None
    """the label whose runs normalize every run (default: every finetune run)"""
    reps: int = IMPROVEMENT_REPS
    """rliable stratified-bootstrap replications"""


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (module docstring): bad input is one line on stderr and exit code 2; unfinished runs
    are left out with one line each."""
    try:
        args = parse(AggregateArgs, argv, description=__doc__.split("\n\n")[0])
        check_output_dir(args.out_dir, "--out-dir")
        for ext in (".md", ".json", ".png", "_after_games.png"):
            check_output_file(os.path.join(args.out_dir, args.name + ext), "--out-dir/--name")
        dirs, labels = list(args.runs), None if args.labels is None else list(args.labels)
        if args.sweep_dir is not None:
            if dirs:
                raise ValueError("give run directories or --sweep-dir, not both")
            dirs, labels = sweep_runs(args.sweep_dir)
        if labels is not None and len(labels) != len(dirs):
            raise ValueError(f"--labels has {len(labels)} entries for {len(dirs)} runs")
        if not dirs:
            raise ValueError("give run directories or --sweep-dir")
        if args.reps < 1:
            raise ValueError(f"--reps={args.reps} must be >= 1")
        keep, methods = [], {}
        for i, d in enumerate(dirs):
            try:
                methods[i] = read_run(d).label  # the default label, each run's --method
                keep.append(i)
            except ValueError as exc:
                if "finished" not in str(exc) and "does not exist" not in str(exc):
                    raise
                print(f"aggregate: note: left out: {exc}", file=sys.stderr)
        if labels is not None:  # a named label whose every run was left out: say so, not "unknown label"
            named = [*args.against, *([args.reference] if args.reference else []), *([args.improver] if args.improver else [])]
            for target in named:
                if target in labels and all(labels[i] != target for i in keep):
                    raise ValueError(f"every run labelled {target!r} was left out (not finished): no table against it")
        dirs = [dirs[i] for i in keep]
        labels = None if labels is None else [labels[i] for i in keep]
        if not dirs:
            raise ValueError("no finished run to aggregate")
        if args.improver is not None:
            _check_labels(labels if labels is not None else [methods[i] for i in keep], [args.improver], "--improver")
        runs, summary = aggregate(dirs, labels, args.improver or "agscl", args.reps, args.against, args.reference)
    except ValueError as exc:
        print(f"aggregate: error: {exc}", file=sys.stderr)
        return 2
    summary["command"] = "python -m reporting.aggregate " + " ".join(sys.argv[1:] if argv is None else argv)
    paths = write_report(runs, summary, args.out_dir, args.name)
    print(markdown(summary))
    print("written: " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
