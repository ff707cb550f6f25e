"""Figure 7 of the AGS-CL paper from results files alone, and the table behind it.

    python -m reporting.plot_continual runs/A runs/B ... --reference runs/FT [--out fig.png]

(a) accumulated normalized return over the timeline: at every evaluation, the sum over the
games learned so far of ``(mean score - R) / (best mean score of the fine-tuning reference - R)``
with ``R`` the game's random-policy score measured by the run; (b) plasticity per game
``(A[i,i] - R_i) / (A_FT[i,i] - R_i)`` and (c) stability per game
``(A[T,j] - R_j) / max_{j<=i<=T} (A[i,j] - R_j)`` (:func:`reporting.results.run_ratios`; a gain
over random within noise gives no number, see docs/metrics.md), over the games each run finished.
Without ``--reference`` the first given run whose method is ``finetune`` is the reference.
Bad input (missing or foreign results, a reference that does not cover the games) is one
line on stderr and exit code 2.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import tyro

from reporting.results import (boundary_evaluations, games_done, load_results, normalized, reference_best, reference_diag,
                            reference_random,
                            reference_scores, run_ratios, save_figure_atomic, write_text_atomic)
from common.cli import parse
from common.runio import check_output_file


@dataclass
class PlotArgs:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (or results.json files) to compare"""
    reference: Optional[str] = None
    """the fine-tuning run that normalizes scores (default: the first given run with method finetune)"""
    out: Optional[str] = None
    """PNG to write (default: continual_plot.png next to the first run); a .csv of the table goes beside it"""
    labels: Optional[tuple[str, ...]] = None
    """legend labels, one per run (default: run directory name)"""


@dataclass
class RunSummary:
    label: str
    method: str
    games: list[str]
    steps: np.ndarray  # evaluation global steps
    accumulated: np.ndarray  # accumulated normalized return at those steps
    boundaries: list[int]  # global step at the end of each finished game
    plasticity: np.ndarray  # per finished game
    stability: np.ndarray


def summarize(label: str, results: dict[str, Any], reference: dict[str, Any], ref_where: str) -> RunSummary:
    """Everything plotted for one run; ``ValueError`` when the reference does not cover it."""
    games = list(results["games"])
    ref = reference_scores(reference, games, ref_where)
    if ref["undefined"]:
        print(f"plot_continual: note: the reference never beat the random policy beyond noise on {', '.join(ref['undefined'])}: "
              "no normalized return for it (train longer)", file=sys.stderr)
    random = results.get("random") or {}
    if any(g not in random for g in games[: games_done(results)]):
        raise ValueError(f"run {label} has no random-policy scores (results format < 2): re-run it with this version")
    steps, acc, bounds = [], [], []
    for entry in results["timeline"]:
        steps.append(entry["global_step"])
        acc.append(normalized(entry["scores"], ref, random)[1])
        if entry.get("boundary"):
            bounds.append(entry["global_step"])
    n = games_done(results)
    ref_games = list(reference["games"])
    ref_done = games_done(reference)
    missing = [g for g in games[:n] if g not in ref_games or ref_games.index(g) >= ref_done]
    if missing:
        raise ValueError(f"reference run {ref_where} did not finish games {', '.join(missing)}: no end-of-game score for plasticity")
    entries = [row[:n] for row in boundary_evaluations(results)[:n]]
    ratios = run_ratios(entries, [random[g] for g in games[:n]], [reference_best(ref, g) for g in games[:n]],
                        [reference_diag(ref, g) for g in games[:n]], [reference_random(ref, g) for g in games[:n]])
    return RunSummary(label, str(results["config"].get("method", "?")), games, np.array(steps), np.array(acc), bounds,
                      ratios["P"], ratios["S"])


def table(summaries: Sequence[RunSummary]) -> list[list[str]]:
    """Rows: run, method, finished games, final accumulated normalized return, mean P, mean S,
    then P and S of each game."""
    games = max((s.games for s in summaries), key=len)
    header = ["run", "method", "games_done", "accumulated_normalized", "P_mean", "S_mean"]
    header += [f"P_{g}" for g in games] + [f"S_{g}" for g in games]
    rows = [header]
    for s in summaries:
        n = len(s.plasticity)
        fmt = lambda v: f"{v:.3f}" if np.isfinite(v) else "nan"  # noqa: E731
        row = [s.label, s.method, str(n), fmt(s.accumulated[-1]) if s.accumulated.size else "nan",
               fmt(float(np.nanmean(s.plasticity))) if np.isfinite(s.plasticity).any() else "nan",
               fmt(float(np.nanmean(s.stability))) if np.isfinite(s.stability).any() else "nan"]
        row += [fmt(s.plasticity[j]) if j < n and s.games[j] == g else "" for j, g in enumerate(games)]
        row += [fmt(s.stability[j]) if j < n and s.games[j] == g else "" for j, g in enumerate(games)]
        rows.append(row)
    return rows


def steps_formatter() -> Any:
    """Tick labels for step counts, ``300k``, ``1.5M`` (matplotlib's engineering notation), so that a
    timeline's ticks do not run together."""
    from matplotlib.ticker import EngFormatter

    return EngFormatter(sep="")


def compact_steps(value: float) -> str:
    """One step count as :func:`steps_formatter` labels it."""
    return steps_formatter()(value)


def steps_axis(ax: Any) -> None:
    """Label ``ax``'s x axis as environment steps with :func:`steps_formatter`'s ticks."""
    ax.set_xlabel("environment steps")
    ax.xaxis.set_major_formatter(steps_formatter())


def draw(summaries: Sequence[RunSummary], out: str, reference_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    for s in summaries:
        ax.plot(s.steps, s.accumulated, marker=".", label=f"{s.label} ({s.method})")
    for b in summaries[0].boundaries:
        ax.axvline(b, color="grey", lw=0.5, ls="--")
    steps_axis(ax)
    ax.set_ylabel("accumulated normalized return")
    ax.set_title(f"(a) normalized by {reference_label}'s best score per game")
    ax.legend(fontsize=8)
    games = max((s.games for s in summaries), key=len)
    width = 0.8 / max(1, len(summaries))
    for ax, attr, title in ((axes[1], "plasticity", "(b) plasticity per game"), (axes[2], "stability", "(c) stability per game")):
        for k, s in enumerate(summaries):
            values = getattr(s, attr)
            x = np.arange(len(values)) + (k - (len(summaries) - 1) / 2) * width
            ax.bar(x, np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), width, label=s.label)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(np.arange(len(games)), games, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, out)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(PlotArgs, argv, description=__doc__.split("\n\n")[0])
        if not args.runs:
            raise ValueError("give at least one run directory")
        out = args.out or os.path.join(os.path.dirname(os.path.normpath(args.runs[0])) or ".", "continual_plot.png")
        check_output_file(out, "--out")
        check_output_file(os.path.splitext(out)[0] + ".csv", "--out's table")
        if args.labels is not None and len(args.labels) != len(args.runs):
            raise ValueError(f"--labels has {len(args.labels)} entries for {len(args.runs)} runs")
        runs = [load_results(r) for r in args.runs]
        ref_where = args.reference
        if ref_where is None:
            ref_where = next((r for r, res in zip(args.runs, runs) if res["config"].get("method") == "finetune"), None)
            if ref_where is None:
                raise ValueError("no --reference given and none of the runs is a finetune run: pass --reference runs/<finetune run>")
        reference = load_results(ref_where)
        labels = args.labels or tuple(os.path.basename(os.path.normpath(r)) for r in args.runs)
        summaries = [summarize(lab, res, reference, ref_where) for lab, res in zip(labels, runs)]
    except ValueError as exc:
        print(f"plot_continual: error: {exc}", file=sys.stderr)
        return 2
    rows = table(summaries)
    draw(summaries, out, os.path.basename(os.path.normpath(ref_where)))
    csv_path = os.path.splitext(out)[0] + ".csv"
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    write_text_atomic(csv_path, text.getvalue())
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"plot: {out}\ntable: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
