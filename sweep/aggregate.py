"""Tables from finished runs: RL results with bootstrap intervals over seeds, and the supervised report.

The RL numbers are those of :mod:`reporting.aggregate` (the MinAtar benchmark's): scores shifted by
each game's random-policy score, the grid's fine-tuning runs as the reference, 95% percentile
bootstrap intervals from ``scipy.stats.bootstrap``. :func:`rl_run_metrics` gives one run's
numbers from its ``results.json`` alone (its own ``--reference-run``), which is what a search
ranks configurations by.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reporting import aggregate as grid
from reporting.results import continual_metrics, games_done, load_results, normalized, score_matrix
from sweep.launch import write_text_atomic

RL_METRICS = ("accumulated_normalized_return", "average_return", "plasticity", "stability", "forgetting")


def mean_ci(values: Sequence[float | None], seed: int = 0) -> tuple[float, float, float] | None:
    """(mean, low, high) over the finite values (:func:`reporting.aggregate.interval`); NaN bounds
    with a single value, None without values."""
    finite = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not finite:
        return None
    if len(finite) == 1:
        return finite[0], math.nan, math.nan
    return grid.interval(finite, seed=seed)


def rl_run_metrics(results: dict[str, Any]) -> dict[str, float | None]:
    """One RL run's numbers from its own results.json: accumulated normalized return at its last
    evaluation (needs its ``--reference-run``), mean final return, and the random-shifted mean P
    (needs the reference; a fine-tuning run is 1 by definition), S and normalized forgetting; a
    ratio whose gain over random is within noise is None (:func:`reporting.results.gain_over_random`)."""
    n = games_done(results)
    out: dict[str, float | None] = {k: None for k in RL_METRICS}
    if n == 0:
        return out
    metrics = continual_metrics(results)
    timeline = results["timeline"]
    ref = results.get("reference")
    if timeline and ref:  # recomputed, so an older file follows today's noise rule too (reporting.results.normalized)
        norm, acc = normalized(timeline[-1]["scores"], ref, results["random"])
        out["accumulated_normalized_return"] = acc if any(math.isfinite(v) for v in norm.values()) else None
    out["average_return"] = float(score_matrix(results)[n - 1, :n].mean())
    out["plasticity"] = 1.0 if results["config"].get("method") == "finetune" else metrics.get("P_mean")
    out["stability"] = metrics.get("S_mean")
    out["forgetting"] = metrics.get("forgetting_mean_normalized")
    return out


def aggregate_rl(groups: Mapping[str, Sequence[str | Path]]) -> list[dict[str, Any]]:
    """One row per group: seeds, games finished, and (mean, low, high) per metric."""
    rows = []
    for label, dirs in groups.items():
        per_run = [(d, load_results(str(d))) for d in dirs]
        metrics = [rl_run_metrics(r) for _, r in per_run]
        row: dict[str, Any] = {"label": label, "runs": [str(d) for d, _ in per_run],
                               "seeds": sorted(r["config"].get("seed") for _, r in per_run),
                               "games_done": min(games_done(r) for _, r in per_run)}
        for key in RL_METRICS:
            row[key] = mean_ci([m[key] for m in metrics])
            row.setdefault("defined", {})[key] = sum(m[key] is not None and math.isfinite(m[key]) for m in metrics)
        rows.append(row)
    return rows


def format_rl_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: mean [95% CI] per metric, with (n=k) where only k of the seeds define it."""
    def cell(v: tuple[float, float, float] | None, count: int | None, seeds: int) -> str:
        if v is None:
            return "n/a"
        text = f"{v[0]:.3f}" if math.isnan(v[1]) else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
        return text + (f" (n={count})" if count is not None and count != seeds else "")

    head = ["method", "seeds", "games", "acc. normalized return", "mean return", "P", "S", "forgetting"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        seeds = len(r["seeds"])
        cells = [r["label"], str(seeds), str(r["games_done"]),
                 *(cell(r[k], r.get("defined", {}).get(k), seeds) for k in RL_METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_rl(groups: Mapping[str, Sequence[str | Path]], out: Path, reference: str | None = None,
              tensorboard_dir: Path | None = None) -> str:
    """The grid's table, JSON and Figure 7 with bands (:mod:`reporting.aggregate`), the grid's
    fine-tuning runs as the reference (a game it never beat the random policy on beyond noise is
    null). When that is impossible (no fine-tuning run), the per-run table of
    :func:`aggregate_rl` with the reason.
    With ``tensorboard_dir``, the figure also goes into that directory's TensorBoard (Images)."""
    dirs = [str(d) for ds in groups.values() for d in ds]
    labels = [label for label, ds in groups.items() for _ in ds]
    try:
        runs, summary = grid.aggregate(dirs, labels)
    except ValueError as exc:
        text = f"no normalized table ({exc}); per-run numbers:\n\n" + format_rl_table(aggregate_rl(groups))
        write_text_atomic(out / "summary.txt", text + "\n")
        return text
    text = grid.markdown(summary)
    write_text_atomic(out / "summary.txt", text + "\n")
    write_text_atomic(out / "summary.json", json.dumps(grid.jsonable(summary), indent=1, allow_nan=False) + "\n")
    grid.draw(runs, summary, str(out / "continual_plot.png"))
    grid.draw_after_games(summary, str(out / "continual_after_games.png"))
    if tensorboard_dir is not None:  # Figure 7 in the Images tab of the sweep's TensorBoard
        from reporting.normalize import add_figure

        add_figure(str(tensorboard_dir), str(out / "continual_plot.png"))
    return text


def normalize_rl(trials: Sequence[Any]) -> list[str]:
    """``reporting.normalize`` on every finished RL trial, so that its TensorBoard has normalized
    returns, P and HParams numbers: a fine-tuning run by its own best, another run without a live
    ``--reference-run`` by the fine-tuning run of its seed (one that has a live reference is left
    as it is). A run that cannot be normalized gets one line saying why; the others go on."""
    from reporting import normalize

    by_name = {t.name: t for t in trials}
    finetune_of_seed: dict[int, str] = {}
    for t in trials:
        if t.method == "finetune":
            finetune_of_seed.setdefault(t.seed, t.run_dir)
    lines = []
    for t in trials:
        reference = by_name[t.reference].run_dir if t.reference in by_name else finetune_of_seed.get(t.seed)
        try:
            lines.append(normalize.normalize_run(t.run_dir, reference))
        except ValueError as exc:
            lines.append(f"{t.run_dir}: not normalized ({exc})")
    return lines


def report_supervised(sweep_dir: Path, out: Path) -> str:
    """``supervised.report`` on the sweep's run directories."""
    from supervised.report import report

    _, text, _ = report([str(sweep_dir)], out)
    return text
