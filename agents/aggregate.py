"""Seeds x methods results of continual RL runs: per-run metrics, 95% intervals, table, figure.

Input is only the runs' ``results.json`` files. The fine-tuning runs of the same grid are the
reference (the paper's Figure 7 normalizes by fine-tuning): per game, the mean over its seeds
of its best evaluation score (``max``) and of its score right after learning the game
(``diag``). Each run then gets, on scores shifted by its own random-policy score ``R``
(see :mod:`agents.results`):

- ``final_return``: mean over games of the raw final score ``A[T, j]`` (units differ per game);
- ``accumulated_normalized``: sum over games of ``(A[T, j] - R_j) / (max_j - R_j)`` (at most
  the number of games for an agent that forgets nothing and matches fine-tuning's best);
- ``P``: mean over games of ``(A[j, j] - R_j) / (diag_j - R_j)``;
- ``S``: mean over games of ``(A[T, j] - R_j) / max_i (A[i, j] - R_j)``;
- ``forgetting``: mean over games ``j < T`` of ``(max_{i<T} A[i, j] - A[T, j]) / (max_j - R_j)``.

Every number is reported as the mean over seeds with a 95% percentile-bootstrap interval from
``scipy.stats.bootstrap`` (10,000 resamples). With 3 seeds such an interval is coarse: it
shows the spread of the seeds, not a population guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from agents.results import games_done, load_results, random_scores, save_figure_atomic, score_matrix
from agscl import metrics

CONFIDENCE = 0.95
RESAMPLES = 10_000


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
    method: str = ""  # the agent's --method (fine-tuning runs are the reference, whatever their label)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # results.json's evaluations
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    accumulated: np.ndarray = field(default_factory=lambda: np.zeros(0))  # over the timeline
    values: dict[str, float] = field(default_factory=dict)
    per_game: dict[str, np.ndarray] = field(default_factory=dict)


def read_run(path: str, label: str | None = None) -> RunRecord:
    """A finished run; ``ValueError`` when it is unfinished or lacks random-policy scores."""
    results = load_results(path)
    games = list(results["games"])
    if games_done(results) < len(games):
        raise ValueError(f"{path} has finished {games_done(results)} of {len(games)} games: resume it first")
    random = random_scores(results)
    if any(g not in random for g in games):
        raise ValueError(f"{path} has no random-policy scores (results format < 2): re-run it")
    config = results["config"]
    return RunRecord(path, label or str(config.get("method")), int(config.get("seed", 0)), games,
                     score_matrix(results), np.array([random[g] for g in games]), int(results["steps_per_game"]),
                     str(config.get("method")), results["timeline"])


@dataclass
class Reference:
    max_return: np.ndarray  # per game: mean over fine-tuning seeds of the best evaluation score
    diag_return: np.ndarray  # per game: mean over fine-tuning seeds of A[j, j]


def reference_from(finetune_runs: Sequence[RunRecord]) -> Reference:
    if not finetune_runs:
        raise ValueError("no fine-tuning run: the grid needs the finetune method as its reference")
    games = finetune_runs[0].games
    best = np.array([[np.nanmax(r.matrix[:, j]) for j in range(len(games))] for r in finetune_runs])
    diag = np.array([np.diag(r.matrix) for r in finetune_runs])
    return Reference(best.mean(axis=0), diag.mean(axis=0))


def _timeline(timeline: list[dict[str, Any]], games: list[str], random: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    steps, acc = [], []
    for entry in timeline:
        total = 0.0
        for g, stats in entry["scores"].items():
            j = games.index(g)
            total += (float(stats["mean"]) - random[j]) / scale[j]
        steps.append(entry["global_step"])
        acc.append(total)
    return np.array(steps), np.array(acc)


def compute(run: RunRecord, ref: Reference) -> RunRecord:
    """Fill ``run.values``, ``run.per_game`` and the normalized timeline (module docstring)."""
    a, r, n = run.matrix, run.random, len(run.games)
    scale = ref.max_return - r
    if not (scale > 0).all():
        bad = [g for g, s in zip(run.games, scale) if not s > 0]
        raise ValueError(f"fine-tuning never beat the random policy on {', '.join(bad)}: nothing to normalize by")
    p = metrics.plasticity_per_task(a, ref.diag_return, r)
    s = metrics.stability_per_task(a, r)
    f = metrics.forgetting_per_task(a) / scale[: n - 1]
    final_norm = (a[n - 1] - r) / scale
    run.per_game = {"final": a[n - 1].copy(), "final_normalized": final_norm, "P": p, "S": s}
    run.values = {
        "final_return": float(np.mean(a[n - 1])),
        "accumulated_normalized": float(final_norm.sum()),
        "P": float(np.nanmean(p)),
        "S": float(np.nanmean(s)),
        "forgetting": float(f.mean()) if f.size else 0.0,
    }
    run.steps, run.accumulated = _timeline(run.timeline, run.games, r, scale)
    return run


def interval(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of ``values`` (scipy.stats.bootstrap);
    the interval collapses to the mean when all values are equal or only one is given."""
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


def summarize(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Per method: the mean score matrix over seeds and every metric with its interval."""
    by_label: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    games = runs[0].games
    out: dict[str, Any] = {"games": games, "random": np.mean([r.random for r in runs], axis=0).tolist(), "methods": {}}
    for label, group in by_label.items():
        entry: dict[str, Any] = {
            "seeds": sorted(r.seed for r in group),
            "runs": [r.path for r in group],
            "score_matrix_mean": np.mean([r.matrix for r in group], axis=0).tolist(),  # NaN above the diagonal
            "metrics": {k: interval([r.values[k] for r in group]) for k in group[0].values},
            "per_game": {k: [interval([r.per_game[k][j] for r in group]) for j in range(len(games))]
                         for k in group[0].per_game},
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


def _fmt(ci: Sequence[float], digits: int = 2) -> str:
    mean, lo, hi = ci
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(summary: dict[str, Any]) -> str:
    """The results as Markdown: the headline table, per-game S, and each method's score matrix."""
    games = summary["games"]
    lines = ["| method | seeds | average final return | accumulated normalized return | P | S | forgetting (normalized) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, m in summary["methods"].items():
        v = m["metrics"]
        lines.append(f"| {label} | {len(m['seeds'])} | {_fmt(v['final_return'])} | {_fmt(v['accumulated_normalized'])} | "
                     f"{_fmt(v['P'])} | {_fmt(v['S'])} | {_fmt(v['forgetting'])} |")
    lines += ["", "Per game, final score / S (mean [95% CI]); random policy: " +
              ", ".join(f"{g} {r:.2f}" for g, r in zip(games, summary["random"])), "",
              "| method | " + " | ".join(f"{g} final | {g} S" for g in games) + " |",
              "| --- |" + " --- | --- |" * len(games)]
    for label, m in summary["methods"].items():
        cells = [f"{_fmt(m['per_game']['final'][j], 1)} | {_fmt(m['per_game']['S'][j])}" for j in range(len(games))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Score matrices (row: after learning game i; mean over seeds):", ""]
    for label, m in summary["methods"].items():
        lines += [f"{label}:", "", "| after \\ on | " + " | ".join(games) + " |", "| --- |" + " --- |" * len(games)]
        for i, row in enumerate(m["score_matrix_mean"]):
            cells = [f"{v:.2f}" if j <= i and v is not None and np.isfinite(v) else "" for j, v in enumerate(row)]
            lines.append(f"| {games[i]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def draw(runs: Sequence[RunRecord], summary: dict[str, Any], out: str) -> None:
    """Figure 7 of the paper with 95% bands: (a) accumulated normalized return over the steps,
    (b) plasticity and (c) stability per game, each with its interval over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = summary["games"]
    labels = list(summary["methods"])
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    for k, label in enumerate(labels):
        group = [r for r in runs if r.label == label]
        steps = group[0].steps
        if not all(np.array_equal(r.steps, steps) for r in group):  # different schedules: common steps only
            steps = np.array(sorted(set.intersection(*(set(r.steps.tolist()) for r in group))))
        curves = np.array([[r.accumulated[list(r.steps).index(s)] for s in steps] for r in group])
        cis = np.array([interval(curves[:, i]) for i in range(len(steps))])
        ax.plot(steps, cis[:, 0], color=f"C{k}", label=label)
        ax.fill_between(steps, cis[:, 1], cis[:, 2], color=f"C{k}", alpha=0.2)
    for i in range(1, len(games)):
        ax.axvline(i * runs[0].steps_per_game, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("accumulated normalized return")
    ax.set_title("(a) sum over games of (score - random) / (fine-tuning best - random)", fontsize=9)
    ax.legend(fontsize=8)
    width = 0.8 / max(1, len(labels))
    for ax, key, title in ((axes[1], "P", "(b) plasticity per game"), (axes[2], "S", "(c) stability per game")):
        for k, label in enumerate(labels):
            cis = np.array(summary["methods"][label]["per_game"][key], dtype=float)
            x = np.arange(len(games)) + (k - (len(labels) - 1) / 2) * width
            err = np.abs(np.stack([cis[:, 0] - cis[:, 1], cis[:, 2] - cis[:, 0]]))
            ax.bar(x, np.nan_to_num(cis[:, 0]), width, yerr=np.nan_to_num(err), capsize=2, color=f"C{k}", label=label)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(0.0, color="black", lw=0.5)
        ax.set_xticks(np.arange(len(games)), games)
        ax.set_title(title + " (random-shifted, 95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, out)
    plt.close(fig)


def aggregate(run_dirs: Sequence[str], labels: Sequence[str] | None = None) -> tuple[list[RunRecord], dict[str, Any]]:
    """Read, reference (the ``finetune`` runs), compute and summarize a grid of runs."""
    runs = [read_run(d, None if labels is None else labels[i]) for i, d in enumerate(run_dirs)]
    games = runs[0].games
    other = [r.path for r in runs if r.games != games]
    if other:
        raise ValueError(f"runs over other games than {games}: {', '.join(other)}")
    ref = reference_from([r for r in runs if r.method == "finetune"])
    runs = [compute(r, ref) for r in runs]
    return runs, summarize(runs)
