"""Tables from finished runs: RL results with bootstrap confidence intervals over seeds, and
the supervised report.

Reusable outside the sweep (a benchmark script that has its own run directories)::

    from sweep.aggregate import aggregate_rl, format_rl_table, group_rl_runs
    rows = aggregate_rl(group_rl_runs(["runs/a", "runs/b", ...]))
    print(format_rl_table(rows))

Per RL run, from its ``results.json`` alone: the mean final return over games, the
accumulated normalized return (paper Figure 7a: final scores over the fine-tuning reference's
best per game; a fine-tuning run is its own reference), plasticity P against the reference
run's diagonal, stability S and max-based forgetting on normalized scores (``agscl.metrics``).
Over seeds: the mean and a 95% percentile-bootstrap interval (``scipy.stats.bootstrap``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.results import games_done, load_results, reference_maxima, score_matrix
from agscl import metrics as M
from sweep.launch import write_text_atomic

RL_METRICS = ("accumulated_normalized_return", "average_return", "plasticity", "stability", "forgetting")
#: Config fields that name or place a run rather than define it (ignored when grouping seeds).
RUN_FIELDS = ("seed", "run_name", "runs_dir", "resume", "reference_run", "exp_name", "label", "overwrite", "progress",
              "tensorboard", "threads", "device", "data_dir", "cuda")


def mean_ci(values: Sequence[float | None], confidence: float = 0.95, n_resamples: int = 9999,
            seed: int = 0) -> tuple[float, float, float] | None:
    """(mean, low, high) over the finite values; the interval is a percentile bootstrap of the
    mean, NaN with fewer than two values. None without values."""
    from scipy.stats import bootstrap

    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    if np.ptp(v) == 0:  # every resample has this mean
        return mean, mean, mean
    res = bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def rl_run_metrics(results: dict[str, Any]) -> dict[str, float | None]:
    """The table's metrics for one RL run over the games it finished."""
    n = games_done(results)
    out: dict[str, float | None] = {k: None for k in RL_METRICS}
    if n == 0:
        return out
    a = score_matrix(results)[:n, :n]
    games = list(results["games"])[:n]
    out["average_return"] = float(a[-1].mean())
    out["stability"] = M.stability(a)
    reference = results.get("reference")
    method = results["config"].get("method")
    if method == "finetune":
        out["plasticity"] = 1.0
    if reference is not None:
        ref_max = reference["max_return"]
    elif method == "finetune":
        try:  # its own best scores, when they can normalize
            ref_max = reference_maxima(results, games, "itself")
        except ValueError:
            return out
    else:
        return out
    scale = np.array([ref_max[g] for g in games], dtype=np.float64)
    normalized = a / scale[None, :]
    out["accumulated_normalized_return"] = float(normalized[-1].sum())
    out["forgetting"] = M.forgetting(normalized)
    if method != "finetune" and reference is not None and reference.get("run"):
        try:
            ref = score_matrix(load_results(str(reference["run"])))
        except ValueError:
            return out
        diag = np.diag(ref)[:n]
        if diag.shape[0] == n and np.isfinite(diag).all():
            out["plasticity"] = M.plasticity(a, diag)
    return out


def group_rl_runs(run_dirs: Sequence[str | Path]) -> dict[str, list[str]]:
    """Runs grouped over seeds: same config except seed and naming fields; labelled by method
    and the fields that differ between groups."""
    configs = {str(d): load_results(str(d))["config"] for d in run_dirs}
    keys = {d: {k: v for k, v in c.items() if k not in RUN_FIELDS} for d, c in configs.items()}
    varying = sorted({k for c in keys.values() for k in c if len({json.dumps(x.get(k)) for x in keys.values()}) > 1} - {"method"})
    groups: dict[str, list[str]] = {}
    for d, c in keys.items():
        label = " ".join([str(c.get("method")), *(f"{k}={c.get(k)}" for k in varying)])
        groups.setdefault(label, []).append(d)
    return groups


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
        rows.append(row)
    return rows


def format_rl_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: mean [95% CI] per metric."""
    def cell(v: tuple[float, float, float] | None) -> str:
        if v is None:
            return "n/a"
        return f"{v[0]:.3f}" if math.isnan(v[1]) else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    head = ["method", "seeds", "games", "acc. normalized return", "mean return", "P", "S", "forgetting"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["label"], str(len(r["seeds"])), str(r["games_done"]), *(cell(r[k]) for k in RL_METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_rl(groups: Mapping[str, Sequence[str | Path]], out: Path, reference: str | None = None) -> str:
    """Table (text + JSON) and, given a fine-tuning reference with positive best scores, Figure 7 of
    the first run of each group."""
    rows = aggregate_rl(groups)
    text = format_rl_table(rows)
    write_text_atomic(out / "summary.txt", text + "\n")
    write_text_atomic(out / "summary.json", json.dumps(rows, indent=1, default=lambda v: None) + "\n")
    if reference is not None and rl_run_metrics(load_results(reference))["accumulated_normalized_return"] is not None:
        from agents.plot_continual import main as plot

        firsts = [str(dirs[0]) for dirs in groups.values() if dirs]
        plot([*firsts, "--reference", reference, "--labels", *groups.keys(), "--out", str(out / "continual_plot.png")])
    return text


def report_supervised(sweep_dir: Path, out: Path) -> str:
    """``supervised.report`` on the sweep's run directories."""
    from supervised.report import report

    _, text, _ = report([str(sweep_dir)], out)
    return text
