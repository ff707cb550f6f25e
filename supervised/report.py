"""Plots and the table behind them from ``results.json`` files: ``python -m supervised.report runs/...``.

Each argument is a run folder, a ``results.json`` file, or a folder of run folders. Runs are
grouped by everything that changes their numbers: benchmark, method and label,
hyperparameters, training schedule, task count, network (and pretrained weights) and data
protocol (validation share, CUB split); only the seed differs inside a group, and its seeds
are averaged. The task order is the seed's (the paper averages seeds that also shuffle the
task sequence), so it is not part of the key. When one label has several settings, the
differing values are added to its name (``agscl (lam=10)``, ``ewc (epochs=3)``). Drawn to
``--out``:

* ``average_accuracy.png``: average accuracy after each task, mean and spread over seeds
  (paper Figures 4-5), one panel per benchmark;
* ``capacity.png``: sparsity ``|G0|/|G|`` and used capacity per task for methods that report
  them (AGS-CL and its ablations, HAT) (Figure 6b);
* ``ps_tradeoff.png``: plasticity against stability, one point per group (Figure 6c);
* ``memory.png``: stored regularization floats per method, log scale (Figure 6a);
* ``summary.txt`` / ``summary.json``: the table, also printed.

Plasticity needs fine-tuning's accuracies on the same task sequence: a run's own value is used
when it has one, else a ``finetune`` run among the inputs in the same setting, with the same
seed and task order, supplies it (the trainer's rule, ``supervised.results``).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from common.runio import save_figure_atomic, write_text_atomic
from reporting import metrics as M
from supervised.results import RESULTS_FORMAT, mean_defined, plasticity_per_task, setting_of, stability_per_task, task_order_of


class ReportError(ValueError):
    """Bad input to the report (no results found, unreadable file): one line, exit 2."""


@dataclass
class Run:
    path: Path
    data: dict[str, Any]

    @property
    def benchmark(self) -> str:
        return self.data["benchmark"]["name"]

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.data["benchmark"]["tasks"]]

    @property
    def done(self) -> int:
        return int(self.data["tasks_done"])

    def matrix(self) -> np.ndarray:
        """The finished ``done x done`` block (NaN above the diagonal)."""
        rows = self.data["accuracy"][: self.done]
        return np.array([[np.nan if v is None else v for v in row[: self.done]] for row in rows], dtype=np.float64)


@dataclass
class Group:
    benchmark: str
    label: str
    hparams: dict[str, Any]
    setting: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        """Hyperparameters, schedule entries and the other setting keys, flat (for naming)."""
        flat = {k: v for k, v in self.setting.items() if k not in ("benchmark", "schedule")}
        flat.update(self.setting.get("schedule") or {})
        flat.update(self.hparams)
        return flat


def find_results(paths: list[str]) -> list[Path]:
    """``results.json`` files named by ``paths`` (files, run folders or folders of runs)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif (path / "results.json").is_file():
            found.append(path / "results.json")
        elif path.is_dir():
            nested = sorted(path.glob("*/results.json"))
            if not nested:
                raise ReportError(f"{raw!r} holds no results.json (looked in it and in its sub-folders)")
            found.extend(nested)
        else:
            raise ReportError(f"{raw!r} does not exist: give run folders, results.json files or folders of runs")
    unique: list[Path] = []
    for p in found:
        if p.resolve() not in {u.resolve() for u in unique}:
            unique.append(p)
    return unique


def load_runs(paths: list[str]) -> list[Run]:
    runs = []
    for path in find_results(paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ReportError(f"{str(path)!r} is not readable JSON ({type(exc).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
            raise ReportError(f"{str(path)!r} is not a supervised results file (format {RESULTS_FORMAT!r})")
        if int(data.get("tasks_done", 0)) < 1:
            continue
        runs.append(Run(path, data))
    if not runs:
        raise ReportError("no run with at least one finished task among the inputs")
    return runs


def group_runs(runs: list[Run]) -> list[Group]:
    """One group per (benchmark, label, method, hyperparameters, setting): seeds only differ
    inside a group. A label with several groups gets the differing values in its name."""
    groups: dict[str, Group] = {}
    for run in runs:
        hp = run.data.get("hparams", {})
        setting = setting_of(run.data)
        label = run.data.get("label", run.data["config"]["method"])
        key = json.dumps([run.benchmark, label, run.data["config"]["method"], hp, setting], sort_keys=True, default=str)
        groups.setdefault(key, Group(run.benchmark, label, hp, setting)).runs.append(run)
    by_label: dict[tuple[str, str], list[Group]] = {}
    for group in groups.values():
        by_label.setdefault((group.benchmark, group.label), []).append(group)
    for variants in by_label.values():
        if len(variants) < 2:
            continue
        facts = [g.facts() for g in variants]
        keys = sorted({k for f in facts for k in f if len({json.dumps(x.get(k), sort_keys=True, default=str) for x in facts}) > 1})
        for group, fact in zip(variants, facts):
            shown = ", ".join(f"{k}={fact[k]:g}" if isinstance(fact.get(k), float) else f"{k}={fact.get(k)}" for k in keys)
            group.label = f"{group.label} ({shown})"
    return list(groups.values())


def reference_diag(run: Run, runs: list[Run]) -> np.ndarray | None:
    """Fine-tuning's ``A[i, i]`` in the same setting, with the same seed and task order."""
    setting = setting_of(run.data)
    for other in runs:
        if other.data["config"]["method"] != "finetune" or setting_of(other.data) != setting:
            continue
        if other.data["config"].get("seed") != run.data["config"].get("seed"):
            continue
        if task_order_of(other.data) == task_order_of(run.data) and other.done >= run.done:
            return np.diag(other.matrix())[: run.done]
    return None


def run_metrics(run: Run, runs: list[Run]) -> dict[str, Any]:
    """Metrics of one run, recomputed from its matrix (plasticity from a reference if needed)."""
    a = run.matrix()
    out: dict[str, Any] = {
        "average_accuracy": M.average_score(a).tolist(),
        "forgetting": M.forgetting(a),
        "bwt": M.backward_transfer(a),
        "stability": mean_defined(stability_per_task(a)),
        "plasticity": run.data.get("plasticity"),
        "stored_floats": run.data.get("stored_floats"),
    }
    if out["plasticity"] is None:
        ref = reference_diag(run, runs)
        if ref is not None:
            out["plasticity"] = mean_defined(plasticity_per_task(a, ref))
    stats = [p.get("stats", {}) for p in run.data.get("per_task", [])]
    out["sparsity"] = [s.get("sparsity") for s in stats]
    out["used_capacity"] = [s.get("used_capacity") for s in stats]
    return out


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    return statistics.fmean(vals), (statistics.pstdev(vals) if len(vals) > 1 else 0.0)


def _curve(lists: list[list[float | None]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std per task index over runs (runs may have different lengths)."""
    length = max((len(v) for v in lists), default=0)
    xs, means, stds = [], [], []
    for i in range(length):
        ms = _mean_std([v[i] for v in lists if i < len(v)])
        if ms is not None:
            xs.append(i + 1)
            means.append(ms[0])
            stds.append(ms[1])
    return np.array(xs), np.array(means), np.array(stds)


def summarize(groups: list[Group], runs: list[Run]) -> list[dict[str, Any]]:
    """One table row per group: means and standard deviations over its seeds."""
    rows = []
    for group in groups:
        per_run = [run_metrics(r, runs) for r in group.runs]
        finals = [m["average_accuracy"][-1] for m in per_run]
        row: dict[str, Any] = {
            "benchmark": group.benchmark,
            "label": group.label,
            "method": group.runs[0].data["config"]["method"],
            "hparams": group.hparams,
            "seeds": sorted(r.data["config"]["seed"] for r in group.runs),
            "tasks": max(r.done for r in group.runs),
            "curve": [v.tolist() for v in _curve([m["average_accuracy"] for m in per_run])],
            "sparsity_curve": [v.tolist() for v in _curve([m["sparsity"] for m in per_run])],
            "used_capacity_curve": [v.tolist() for v in _curve([m["used_capacity"] for m in per_run])],
        }
        for key, values in (("average_accuracy", finals), ("forgetting", [m["forgetting"] for m in per_run]),
                            ("bwt", [m["bwt"] for m in per_run]), ("plasticity", [m["plasticity"] for m in per_run]),
                            ("stability", [m["stability"] for m in per_run]),
                            ("stored_floats", [m["stored_floats"] for m in per_run])):
            row[key] = _mean_std(values)
        rows.append(row)
    rows.sort(key=lambda r: (r["benchmark"], r["label"]))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(v: tuple[float, float] | None, digits: int = 4) -> str:
        return "n/a" if v is None else f"{v[0]:.{digits}f}±{v[1]:.{digits}f}"

    head = ["benchmark", "method", "seeds", "tasks", "avg acc", "forgetting", "BWT", "P", "S", "stored floats"]
    body = []
    for r in rows:
        floats = "n/a" if r["stored_floats"] is None else f"{r['stored_floats'][0]:.0f}"
        body.append([r["benchmark"], r["label"], str(len(r["seeds"])), str(r["tasks"]), cell(r["average_accuracy"]),
                     cell(r["forgetting"]), cell(r["bwt"]), cell(r["plasticity"], 3), cell(r["stability"], 3), floats])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# figures


def _save(fig: Any, path: Path) -> None:
    """Save a PNG atomically (:func:`common.runio.save_figure_atomic`)."""
    save_figure_atomic(fig, path, dpi=120, bbox_inches="tight")


def plot_all(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Draw the four figures; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    benchmarks = sorted({r["benchmark"] for r in rows})

    # Figures 4-5: average accuracy after each task.
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 3.8), squeeze=False)
    for ax, bench in zip(axes[0], benchmarks):
        for r in (r for r in rows if r["benchmark"] == bench):
            xs, mean, std = (np.array(v) for v in r["curve"])
            if xs.size == 0:
                continue
            ax.plot(xs, mean, marker="o", ms=3, label=r["label"])
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        ax.set_title(bench)
        ax.set_xlabel("tasks learned")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("average accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path = out / "average_accuracy.png"
    _save(fig, path)
    plt.close(fig)
    written.append(path)

    # Figure 6b: sparsity (left) and used capacity (right).
    capacity_rows = [r for r in rows if len(r["sparsity_curve"][0]) > 0 or len(r["used_capacity_curve"][0]) > 0]
    fig, axes = plt.subplots(1, max(len(benchmarks), 1), figsize=(5 * max(len(benchmarks), 1), 3.8), squeeze=False)
    for ax, bench in zip(axes[0], benchmarks):
        right = ax.twinx()
        styles = ["-", "--", ":", "-."]
        for index, r in enumerate(x for x in capacity_rows if x["benchmark"] == bench):
            style = styles[index % len(styles)]
            xs, mean, _ = (np.array(v) for v in r["sparsity_curve"])
            if xs.size:
                ax.plot(xs, mean, style, color="tab:red", marker="o", ms=3, label=f"{r['label']} sparsity")
            xs, mean, _ = (np.array(v) for v in r["used_capacity_curve"])
            if xs.size:
                right.plot(xs, mean, style, color="tab:blue", marker="s", ms=3, label=f"{r['label']} used capacity")
        ax.set_title(bench)
        ax.set_xlabel("tasks learned")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("sparsity |G0|/|G|", color="tab:red")
        right.set_ylabel("used capacity", color="tab:blue")
        ax.set_ylim(0, 1.02)
        right.set_ylim(0, 1.02)
        handles = ax.get_legend_handles_labels()
        handles_r = right.get_legend_handles_labels()
        if handles[0] or handles_r[0]:
            ax.legend(handles[0] + handles_r[0], handles[1] + handles_r[1], fontsize=6, loc="center right")
        else:
            ax.text(0.5, 0.5, "no run reports sparsity", ha="center", va="center", transform=ax.transAxes)
    path = out / "capacity.png"
    _save(fig, path)
    plt.close(fig)
    written.append(path)

    # Figure 6c: plasticity vs stability.
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(4.5 * len(benchmarks), 4), squeeze=False)
    for ax, bench in zip(axes[0], benchmarks):
        points = [r for r in rows if r["benchmark"] == bench and r["plasticity"] is not None and r["stability"] is not None]
        for r in points:
            ax.errorbar(r["stability"][0], r["plasticity"][0], xerr=r["stability"][1], yerr=r["plasticity"][1], fmt="o", capsize=2, label=r["label"])
        if not points:
            ax.text(0.5, 0.5, "no plasticity: add a finetune run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(bench)
        ax.set_xlabel("stability S")
        ax.set_ylabel("plasticity P")
        ax.grid(alpha=0.3)
        if points:
            ax.legend(fontsize=7)
    path = out / "ps_tradeoff.png"
    _save(fig, path)
    plt.close(fig)
    written.append(path)

    # Figure 6a: stored regularization floats.
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 3.8), squeeze=False)
    for ax, bench in zip(axes[0], benchmarks):
        bars = [r for r in rows if r["benchmark"] == bench and r["stored_floats"] is not None and r["stored_floats"][0] > 0]
        ax.bar(range(len(bars)), [r["stored_floats"][0] for r in bars], color="tab:purple")
        ax.set_xticks(range(len(bars)), [r["label"] for r in bars], rotation=30, ha="right", fontsize=7)
        if bars:
            ax.set_yscale("log")
        ax.set_title(bench)
        ax.set_ylabel("stored regularization floats")
    path = out / "memory.png"
    _save(fig, path)
    plt.close(fig)
    written.append(path)
    return written


def _atomic_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def report(paths: list[str], out: str | Path) -> tuple[list[dict[str, Any]], str, list[Path]]:
    """Load, summarize, draw; returns (table rows, table text, files written)."""
    runs = load_runs(paths)
    rows = summarize(group_runs(runs), runs)
    text = format_table(rows)
    out = Path(out)
    written = plot_all(rows, out)
    _atomic_text(out / "summary.txt", text + "\n")
    _atomic_text(out / "summary.json", json.dumps(rows, indent=1) + "\n")
    return rows, text, written + [out / "summary.txt", out / "summary.json"]


@dataclass
class ReportArgs:
    """Plots and table from supervised results.json files."""

    runs: tyro.conf.Positional[tuple[str, ...]] = ()
    """run folders, results.json files or folders of runs"""
    out: str = "runs/report"
    """folder for the PNGs and summary files"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ReportArgs, args=argv, prog="python -m supervised.report", description=__doc__.split("\n\n")[0])
    if not args.runs:
        print("error: give at least one run folder, results.json or folder of runs", file=sys.stderr)
        return 2
    try:
        _, text, written = report(list(args.runs), args.out)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
