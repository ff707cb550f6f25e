"""``python -m sweep``: run a grid of methods x seeds x settings of either trainer, then its table.

    python -m sweep --trainer supervised --methods finetune agscl --seeds 0 1 --dir runs/sweeps/digits \\
        -- --benchmark split_digits --epochs 1
    python -m sweep --config sweep.toml --address auto          # on a running Ray cluster
    python -m sweep --config search.toml --search optuna --space mu=0.01:10:log --space lam=1:1e4:log

Everything after ``--`` goes to every trial unchanged. Bad input is one line on stderr and
exit code 2; a trial that still fails after its retries makes the exit code 1 (the table then
covers the trials that finished).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from common.runio import OutputError, check_output_dir
from sweep.engine import EngineOptions, SweepResult, run_sweep
from sweep.spec import Spec, SweepError, build_spec, load_toml


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        raise SweepError(message)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="TOML file with trainer, methods, seeds, flags, [grid], [grid.METHOD], [search]")
    p.add_argument("--trainer", choices=("rl", "supervised"))
    p.add_argument("--methods", nargs="+")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--grid", action="append", default=[], metavar="[METHOD.]KEY=V1,V2",
                   help="trainer flag values to expand (repeatable); METHOD. limits it to one method")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=METHOD FLAGS",
                   help="a named flag set of a method, listed in --methods like a method (repeatable), e.g. "
                        "'agscl_no_reinit=agscl --no-zero-init --no-rand-init'")
    p.add_argument("--dir", help="sweep directory (default runs/sweeps/<config name or 'sweep'>); re-running resumes it")
    p.add_argument("--engine", default="auto", choices=("auto", "ray", "sequential"), help="auto: ray when installed")
    p.add_argument("--address", help="Ray cluster to use (auto, or host:port of `ray start --head`); default: a local instance")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPU share of a trial (also its OMP_NUM_THREADS)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPU share of a trial (fractions share a GPU)")
    p.add_argument("--retries", type=int, default=2, help="re-launches (with --resume) of a trial that dies")
    p.add_argument("--no-progress", action="store_true", help="no overall bar (state lines are still printed)")
    p.add_argument("--no-report", action="store_true", help="skip the table at the end")
    p.add_argument("--no-reference", action="store_true",
                   help="do not pass the fine-tuning trial of the same seed as reference to the other methods")
    s = p.add_argument_group("search (Ray Tune)")
    s.add_argument("--search", choices=("grid", "optuna"), help="calibrate METHOD's grid / --space against --objective")
    s.add_argument("--search-method", help="the method to calibrate (default agscl)")
    s.add_argument("--objective", help="average_accuracy, accumulated_normalized_return or stability_at_plasticity")
    s.add_argument("--min-plasticity", type=float, help="stability_at_plasticity: the P a configuration must keep")
    s.add_argument("--num-samples", type=int, help="optuna: configurations to try")
    s.add_argument("--space", action="append", default=[], metavar="KEY=LOW:HIGH[:log]", help="optuna: a range (repeatable)")
    return p


def _search_options(args: argparse.Namespace, file: dict[str, Any]) -> Any:
    from sweep.search import SearchOptions, parse_space

    table = dict(file.get("search", {}))
    space = {}
    for key, value in dict(table.pop("space", {})).items():
        if not isinstance(value, list) or len(value) not in (2, 3):
            raise SweepError(f"[search.space] {key}: expected [low, high] or [low, high, \"log\"]")
        space.update([parse_space(f"{key}={':'.join(map(str, value))}")])
    space.update(parse_space(t) for t in args.space)
    known = {"algorithm", "objective", "min_plasticity", "num_samples", "method", "seed"}
    if set(table) - known:
        raise SweepError(f"[search]: unknown key {sorted(set(table) - known)[0]!r} (known: {', '.join(sorted(known))})")
    values = {**table, "space": space}
    for name, value in (("algorithm", args.search), ("objective", args.objective), ("min_plasticity", args.min_plasticity),
                        ("num_samples", args.num_samples), ("method", args.search_method)):
        if value is not None:
            values[name] = value
    return SearchOptions(**values)


def aggregate(spec: Spec, result: SweepResult) -> str:
    """The sweep's table: ``supervised.report`` or the RL table with bootstrap intervals."""
    from sweep import aggregate as agg

    out = result.sweep_dir / "report"
    finished = [t for t in result.trials if result.outcomes.get(t.name) and result.outcomes[t.name].state in ("finished", "skipped")]
    if not finished:
        return "no finished trial: no table"
    if spec.trainer == "supervised":
        return agg.report_supervised(result.sweep_dir, out)
    for line in agg.normalize_rl(finished):
        print(f"normalize: {line}", flush=True)
    groups: dict[str, list[str]] = {}
    for t in finished:
        groups.setdefault(t.label, []).append(t.run_dir)
    reference = next((t.run_dir for t in finished if t.method == "finetune"), None)
    return agg.report_rl(groups, out, reference, tensorboard_dir=result.sweep_dir)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    own, passed = argv[:cut], argv[cut + 1:]
    try:
        args = make_parser().parse_args(own)
        file = load_toml(args.config) if args.config else {}
        if args.retries < 0 or args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
            raise SweepError("--retries must be >= 0, --cpus-per-trial > 0 and --gpus-per-trial >= 0")
        spec = build_spec(file, args.trainer, args.methods, args.seeds, args.grid, passed, args.variant)
        spec.reference = not args.no_reference
        engine = EngineOptions(args.engine, args.address, args.cpus_per_trial, args.gpus_per_trial, args.retries,
                               not args.no_progress)
        sweep_dir = Path(args.dir or Path("runs/sweeps") / (Path(args.config).stem if args.config else "sweep"))
        check_output_dir(sweep_dir, "--dir")
        search = _search_options(args, file) if (args.search or "search" in file) else None
        spec.check_scopes(search.method if search is not None else None)
        if search is not None:
            from sweep.search import run_search

            rows, text = run_search(spec, sweep_dir, search, engine)
            print(text)
            print(f"search results: {sweep_dir / 'search.json'}")
            return 0 if rows and all(r.get("objective") is not None for r in rows) else 1
        trials = spec.trials(sweep_dir)
        spec.check_trials(trials)
        print(f"sweep {sweep_dir}: {len(trials)} trials ({spec.trainer}), engine {engine.resolved_engine()}", flush=True)
        result = run_sweep(spec, sweep_dir, engine)
    except (SweepError, OutputError) as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sweep: interrupted: run the same command again to continue (finished trials are skipped)", file=sys.stderr)
        return 130
    print(f"{sum(o.state in ('finished', 'skipped') for o in result.outcomes.values())}/{len(result.trials)} trials done "
          f"in {result.seconds:.1f} s ({result.engine}); runs and logs in {result.sweep_dir}", flush=True)
    if not args.no_report:
        print(aggregate(spec, result))
        print(f"report: {result.sweep_dir / 'report'}")
    return 0 if result.ok else 1
