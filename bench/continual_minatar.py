"""Continual RL that visibly works on a CPU: a MinAtar sequence, methods x seeds, 95% intervals.

    python bench/continual_minatar.py                 # the README table: about an hour on 2 cores
    python bench/continual_minatar.py --smoke         # the pipeline in about a minute (CI size)

Every (method, seed) is one ordinary run of ``agents/ppo_continual.py --suite minatar``, run as
one sweep (:mod:`sweep`: Ray with one CPU and one torch thread per run, as many at a time as
the machine has cores; ``--engine sequential`` without Ray) in ``--runs-dir`` (resume, plots and
TensorBoard work on each run unchanged; the trainers' logs are in ``<runs-dir>/logs``). A
finished run is skipped and an interrupted one resumed when the benchmark is started again.
When all are done, :mod:`agents.aggregate` prints and saves (``--out-dir``): the score matrix
per method (mean over seeds), the average final return, the accumulated normalized return with
fine-tuning as the reference, P, S and forgetting, each with a 95% bootstrap interval over
seeds, and a Figure-7-like plot with bands.

Method settings (fixed before the runs, not tuned on them, except ``agscl_mu4``):
- ``agscl``: mu 1, lambda 100 on plain-mean Omega, rho 0.3, eta 0.9, prox once per PPO epoch;
  the paper's RL setting (mu 0.1, lambda 2100 here) froze 141 of 144 nodes of this small
  trunk after one game in an earlier probe (DESIGN.md), which left no plasticity;
- ``agscl_mu4``: mu 4, lambda 100, the suite's default since the (mu, lambda) search of
  ``bench/configs/minatar_agscl_search.toml`` (seeds 1 and 2 of that search are this benchmark's
  seeds 1 and 2: only seed 3 is held out from the selection);
- ``agscl_no_reinit``: mu 1, lambda 100 without (I.1) zero-fix and (I.2) re-initialization (ablation);
- ``ewc`` (lambda 1e4) and ``mas`` (lambda 1): the agent's defaults, reported as they come.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agents.aggregate import aggregate, draw, jsonable, markdown  # noqa: E402
from agents.results import write_json_atomic, write_text_atomic  # noqa: E402
from agents.normalize import add_figure  # noqa: E402
from sweep.aggregate import normalize_rl  # noqa: E402
from sweep.engine import EngineOptions, run_sweep  # noqa: E402
from sweep.spec import Spec, SweepError  # noqa: E402

#: Grid labels -> (agent method, its flags): the sweep's variants. ``finetune`` is the reference
#: and must stay in the grid.
METHODS: dict[str, tuple[str, list[str]]] = {
    "finetune": ("finetune", []),
    "ewc": ("ewc", ["--ewc-lambda", "10000"]),
    "mas": ("mas", ["--mas-lambda", "1"]),
    "agscl": ("agscl", ["--mu", "1", "--agscl-lambda", "100"]),
    "agscl_mu4": ("agscl", ["--mu", "4", "--agscl-lambda", "100"]),
    "agscl_no_reinit": ("agscl", ["--mu", "1", "--agscl-lambda", "100", "--no-zero-init", "--no-rand-init"]),
}


@dataclass
class BenchArgs:
    games: tuple[str, ...] = ("Breakout", "SpaceInvaders", "Freeway")
    """the MinAtar sequence, learned in this order"""
    methods: tuple[str, ...] = tuple(METHODS)
    """grid labels to run (finetune is required: it is the reference)"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds per method"""
    steps_per_game: int = 300_000
    """environment steps per game"""
    eval_every: int = 100_000
    """evaluate all games learned so far every this many steps"""
    eval_episodes: int = 30
    """whole games per evaluation (and for the random-policy score)"""
    engine: Literal["auto", "ray", "sequential"] = "auto"
    """the sweep's engine: auto is Ray when installed (one CPU per run), else one run after the other"""
    runs_dir: str = "runs/continual_minatar"
    """the sweep directory: one run directory per method and seed, the trainers' logs in logs/"""
    out_dir: str = "bench/results"
    """where the table (.md, .json) and the figure (.png) go"""
    smoke: bool = False
    """tiny run of the whole pipeline (2 games, 2 seeds, 3 methods, a few thousand steps)"""
    name: Optional[str] = None
    """file stem of the outputs (default continual_minatar, or continual_minatar_smoke)"""


def spec(args: BenchArgs) -> Spec:
    """The benchmark as a sweep: each label a variant (a method with its fixed flags), same seeds."""
    flags = ["--suite", "minatar", "--games", *args.games, "--steps-per-game", str(args.steps_per_game),
             "--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
             "--random-episodes", str(args.eval_episodes), "--eval-envs", "16", "--torch-threads", "1"]
    if args.smoke:
        flags += ["--num-envs", "4", "--num-steps", "64", "--eval-max-frames", "500", "--importance-obs", "256"]
    variants = {label: METHODS[label] for label in args.methods}
    # No --reference-run: agents.aggregate normalizes every run by the grid's fine-tuning runs at
    # the end, so no run waits for another (and a smoke-sized reference need not beat random).
    return Spec("rl", list(args.methods), list(args.seeds), flags=flags, variants=variants, reference=False)


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(BenchArgs, args=argv, description=__doc__.split("\n\n")[0])
    if args.smoke:
        args.games, args.seeds = args.games[:2], args.seeds[:2]
        args.methods = tuple(m for m in args.methods if m in ("finetune", "ewc", "agscl"))
        args.steps_per_game, args.eval_every, args.eval_episodes = 2048, 1024, 4
        args.runs_dir = args.runs_dir.rstrip("/") + "_smoke"
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or "finetune" not in args.methods:
        print(f"continual_minatar: error: --methods must include finetune and only use {', '.join(METHODS)} "
              f"(got {' '.join(args.methods)})", file=sys.stderr)
        return 2
    try:
        import minatar  # noqa: F401
    except ImportError:
        print('continual_minatar: error: needs the optional extra: pip install -e ".[minatar]"', file=sys.stderr)
        return 2
    grid = spec(args)
    t0 = time.time()
    try:
        grid.check()
        with contextlib.redirect_stdout(sys.stderr):  # the sweep's state lines; stdout is the table
            result = run_sweep(grid, Path(args.runs_dir), EngineOptions(args.engine, progress=False))
    except SweepError as exc:
        print(f"continual_minatar: error: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        failed = [n for n, o in result.outcomes.items() if o.state not in ("finished", "skipped")]
        print(f"continual_minatar: error: {len(failed)} runs failed ({', '.join(failed)}): see their logs in "
              f"{result.sweep_dir / 'logs'}; start the benchmark again to resume them", file=sys.stderr)
        return 1
    skipped = sum(o.state == "skipped" for o in result.outcomes.values())
    print(f"{len(result.trials)} runs ({skipped} finished earlier, skipped) in {result.seconds / 60:.1f} min, "
          f"engine {result.engine}", flush=True)
    runs, summary = aggregate([t.run_dir for t in result.trials], [t.label for t in result.trials])
    summary["command"] = "python bench/continual_minatar.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary["wall_seconds"] = time.time() - t0
    summary["settings"] = {"games": list(args.games), "seeds": list(args.seeds), "steps_per_game": args.steps_per_game,
                           "methods": {m: ["--method", METHODS[m][0], *METHODS[m][1]] for m in args.methods},
                           "engine": result.engine}
    name = args.name or ("continual_minatar_smoke" if args.smoke else "continual_minatar")
    os.makedirs(args.out_dir, exist_ok=True)
    table = markdown(summary)
    write_json_atomic(os.path.join(args.out_dir, f"{name}.json"), jsonable(summary))
    write_text_atomic(os.path.join(args.out_dir, f"{name}.md"), table + "\n")
    draw(runs, summary, os.path.join(args.out_dir, f"{name}.png"))
    for line in normalize_rl(result.trials):  # TensorBoard: normalized returns, P, HParams of every run
        print(f"normalize: {line}", file=sys.stderr)
    add_figure(str(result.sweep_dir), os.path.join(args.out_dir, f"{name}.png"))  # and Figure 7 (Images)
    print(table)
    print(f"results: {os.path.join(args.out_dir, name)}.{{md,json,png}} ({summary['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
