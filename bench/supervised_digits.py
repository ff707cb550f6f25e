"""Every method on ``split_digits`` over several seeds, side by side, run as one sweep.

Runs the real trainer (``python -m supervised.train``) once per (method, seed) through
``sweep`` (Ray when installed, with one CPU per run; else one run after the other) on the
embedded scikit-learn digits (5 tasks of 2 digits, task order and digit pairs shuffled by seed;
the preset schedule and hyperparameters of ``supervised.presets``), so it needs no data
directory. Prints, per method, the mean and standard deviation over seeds of the final average
accuracy, max-based forgetting, BWT, plasticity (against fine-tuning on the same seed),
stability, the stored regularization floats and the training time per run, and writes the same
table as JSON.

Run: ``python bench/supervised_digits.py [--seeds 0 1 2] [--methods ...] [--engine sequential] [--out bench/results]``.
Wall times are for comparison inside one run only (shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from agscl.registry import method_names
from common.runio import machine, machine_line
from supervised.train import atomic_write_json
from sweep.engine import EngineOptions, run_sweep
from sweep.launch import read_results
from sweep.spec import Spec, SweepError

DEFAULT_METHODS = method_names("supervised")  # every method of the agscl registry the trainer drives


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0


def run_all(methods: list[str], seeds: list[int], runs_dir: Path, flags: list[str], engine: EngineOptions) -> dict[str, Any]:
    """Train every (method, seed) as one sweep (fine-tuning first: plasticity's reference)."""
    spec = Spec("supervised", list(methods), list(seeds), flags=["--benchmark", "split_digits", "--no-progress",
                                                                 "--no-tensorboard", *flags])
    spec.check()
    with contextlib.redirect_stdout(sys.stderr):  # the sweep's progress lines; stdout is the table
        result = run_sweep(spec, runs_dir, engine)
    if not result.ok:
        failed = [n for n, o in result.outcomes.items() if o.state not in ("finished", "skipped")]
        raise RuntimeError(f"runs failed: {', '.join(failed)} (logs in {runs_dir / 'logs'})")
    rows: dict[str, dict[str, list[Any]]] = {}
    for trial in result.trials:
        res = read_results(trial.run_dir) or {}
        row = rows.setdefault(trial.method, {k: [] for k in ("acc", "forgetting", "bwt", "plasticity", "stability", "stored_floats", "seconds")})
        row["acc"].append(res["average_accuracy"][-1])
        for key in ("forgetting", "bwt", "plasticity", "stability", "stored_floats", "seconds"):
            row[key].append(res[key])
    return {m: rows[m] for m in methods if m in rows}


def table(rows: dict[str, dict[str, list[Any]]]) -> str:
    head = f"{'method':11s} {'avg acc':>15s} {'forgetting':>15s} {'BWT':>16s} {'P':>13s} {'S':>13s} {'stored floats':>14s} {'s/run':>6s}"
    lines = [head, "-" * len(head)]

    def cell(values: list[Any], width: int, digits: int = 4) -> str:
        ms = _mean_std(values)
        return f"{'n/a':>{width}s}" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}".rjust(width)

    for method, row in rows.items():
        floats = [int(v) for v in row["stored_floats"] if v is not None]
        lines.append(
            f"{method:11s} {cell(row['acc'], 15)} {cell(row['forgetting'], 15)} {cell(row['bwt'], 16)} "
            f"{cell(row['plasticity'], 13, 3)} {cell(row['stability'], 13, 3)} "
            f"{(str(max(floats)) if floats else 'n/a'):>14s} {statistics.fmean(row['seconds']):6.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--epochs", type=int, default=None, help="override the preset epochs per task")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (1 is fastest for this tiny net)")
    parser.add_argument("--engine", default="auto", choices=("auto", "ray", "sequential"), help="auto: ray when installed")
    parser.add_argument("--out", default="bench/results", help="folder for supervised_digits.json")
    parser.add_argument("--runs-dir", default=None, help="keep the runs here, a sweep directory (default: a temporary folder)")
    args = parser.parse_args(argv)
    flags = ["--threads", str(args.threads)]
    if args.epochs is not None:
        flags += ["--epochs", str(args.epochs)]
    engine = EngineOptions(args.engine, cpus_per_trial=args.threads, retries=0, progress=False)
    with tempfile.TemporaryDirectory(prefix="bench_digits_") as tmp:
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tmp)
        try:
            rows = run_all(args.methods, args.seeds, runs_dir, flags, engine)
        except SweepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    text = table(rows)
    print(f"split_digits, seeds {args.seeds}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    where = {**machine(), "torch_threads": args.threads}  # every run's torch threads (--threads)
    print(machine_line(where))
    print(text)
    payload = {"benchmark": "split_digits", "seeds": args.seeds, "flags": flags, "methods": rows, "table": text,
               "machine": where}
    out = Path(args.out) / "supervised_digits.json"
    atomic_write_json(out, payload)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
