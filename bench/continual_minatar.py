"""Continual RL that visibly works on a CPU: a MinAtar sequence, methods x seeds, 95% intervals.

    python bench/continual_minatar.py                 # the 3-game table: about an hour on 2 cores
    python bench/continual_minatar.py --sequence all  # all five games: hours; resumes where it stopped
    python bench/continual_minatar.py --sequence all --trunk wide  # the five games, trunk twice as wide
    python bench/continual_minatar.py --smoke         # the pipeline in about a minute (CI size)

Every (method, seed) is one ordinary run of ``agents/ppo_continual.py --suite minatar``, run as
one sweep (:mod:`sweep`: Ray with one CPU and one torch thread per run, as many at a time as
the machine has cores; ``--engine sequential`` without Ray) in ``--runs-dir`` (resume, plots and
TensorBoard work on each run unchanged; the trainers' logs are in ``<runs-dir>/logs``). A
finished run is skipped and an interrupted one resumed when the benchmark is started again.
When all are done, :mod:`reporting.aggregate` prints and saves (``--out-dir``): the score matrix
per method (mean over seeds), the average final return, the accumulated normalized return with
fine-tuning as the reference, P, S and forgetting, each with a 95% bootstrap interval over
seeds, the curve after each game, the probability that AGS-CL improves on each method and the
capacity left after each game, and Figure-7-like plots with bands (docs/metrics.md).

Method settings (fixed before the runs, not tuned on them, except ``agscl_mu4``):
- ``agscl``: mu 1, lambda 100 on plain-mean Omega, rho 0.3, eta 0.9, prox once per PPO epoch;
  the paper's RL setting (mu 0.1, lambda 2100 here) froze 141 of 144 nodes of this small
  trunk after one game in an earlier probe (docs/agent.md), which left no plasticity;
- ``agscl_mu4``: mu 4, lambda 100, the suite's default since the (mu, lambda) search of
  ``bench/configs/minatar_agscl_search.toml`` (seeds 1 and 2 of that search are this benchmark's
  seeds 1 and 2: only seed 3 is held out from the selection);
- ``agscl_no_reinit``: mu 1, lambda 100 without (I.1) zero-fix and (I.2) re-initialization (ablation);
- ``agscl_mu4_no_reinit``: the same ablation of the suite default (mu 4), the five-game grid's;
- ``ewc`` (lambda 1e4) and ``mas`` (lambda 1): the agent's defaults, reported as they come;
- ``redo``, ``shrink_perturb``, ``l2init``: the plasticity methods at their defaults (docs/plasticity.md);
  ``agscl_mu4_redo``: the suite's AGS-CL composed with ReDo; ``shrink_perturb_ln``: shrink-and-perturb
  on a trunk with LayerNorm, the combination Juliani & Ash (2024) recommend.
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

from common.runio import machine  # noqa: E402
from reporting.aggregate import aggregate, markdown, write_report  # noqa: E402
from reporting.normalize import add_figure  # noqa: E402
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
    "packnet": ("packnet", []),
    "agscl_mu4_no_reinit": ("agscl", ["--mu", "4", "--agscl-lambda", "100", "--no-zero-init", "--no-rand-init"]),
    # plasticity methods (issue 27), each at its defaults (docs/plasticity.md gives their sources)
    "redo": ("redo", []),
    "shrink_perturb": ("shrink_perturb", []),
    "l2init": ("l2init", []),
    "agscl_mu4_redo": ("agscl+redo", ["--mu", "4", "--agscl-lambda", "100"]),
    "shrink_perturb_ln": ("shrink_perturb", ["--layer-norm"]),
}


#: Steps per game of the five-game sequence. Asterix gets 1.5M: with the suite's PPO settings it
#: was at 0.5-0.9 (random 0.27-0.9) after 100k-400k steps, and a probe from scratch with a 1.5M
#: budget (same settings, seeds 1 and 2) rose steadily: 0.7 / 1.0 at 250k, 1.4 / 1.6 at 500k, against
#: a random policy's 0.47. A longer budget for the one slow game keeps every other setting (and so
#: the 3-game benchmark's runs) unchanged; the suite's settings learn the four others in 300k.
ALL_STEPS = (300_000, 300_000, 300_000, 1_500_000, 300_000)

#: The named sequences: games in order, steps per game (one value, or one per game), evaluation
#: interval, output stem. ``all`` keeps ``interfere``'s three games first, in the same order and
#: with the same budgets, so its first three games are the 3-game benchmark's runs again (same
#: seeds and settings; evaluation never changes training), and appends Asterix and Seaquest in the
#: MinAtar paper's order. It evaluates at game boundaries only: the curve after each game needs
#: nothing else, and mid-game evaluations of up to five games would cost a third of the run.
SEQUENCES: dict[str, dict[str, object]] = {
    "interfere": dict(games=("Breakout", "SpaceInvaders", "Freeway"), steps=(300_000,), eval_every=100_000,
                      name="continual_minatar", methods=("finetune", "ewc", "mas", "agscl", "agscl_mu4", "agscl_no_reinit")),
    "all": dict(games=("Breakout", "SpaceInvaders", "Freeway", "Asterix", "Seaquest"),
                steps=ALL_STEPS, eval_every=0, name="continual_minatar5",
                methods=("finetune", "ewc", "mas", "agscl_mu4", "agscl_mu4_no_reinit")),
}


#: Trunk sizes: the agent's flags and the output stem's suffix. ``wide`` doubles every trunk layer
#: of the suite's (32 conv channels, 256 fc units: 288 nodes instead of 144); every method setting
#: stays as it is (lambda and mu are not re-tuned for the wider trunk). ``wide`` replaces the
#: ablation row by PackNet, the method that led at width 1.
TRUNKS: dict[str, dict[str, object]] = {
    "suite": dict(flags=(), suffix="", methods=None),
    "wide": dict(flags=("--width", "2", "--hidden", "256"), suffix="_wide",
                 methods=("finetune", "ewc", "mas", "agscl_mu4", "packnet")),
}


@dataclass
class BenchArgs:
    sequence: Literal["interfere", "all"] = "interfere"
    """the MinAtar sequence: `interfere` (Breakout SpaceInvaders Freeway, the 3-game table) or `all` (the five games:
    the 3-game sequence, then Asterix and Seaquest)"""
    trunk: Literal["suite", "wide"] = "suite"
    """the shared trunk: `suite` (16 conv channels, 128 fc units) or `wide` (twice as wide in every layer:
    --width 2 --hidden 256); wide adds _wide to the output stem"""
    games: Optional[tuple[str, ...]] = None
    """games in order, instead of the sequence's"""
    methods: Optional[tuple[str, ...]] = None
    """grid labels to run (finetune is required: it is the reference; default: the sequence's)"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds per method"""
    steps_per_game: Optional[tuple[int, ...]] = None
    """environment steps per game: one value, or one per game (default: the sequence's)"""
    eval_every: Optional[int] = None
    """evaluate all games learned so far every this many steps (0: at game boundaries only; default: the sequence's)"""
    eval_episodes: int = 30
    """whole games per evaluation (and for the random-policy score)"""
    engine: Literal["auto", "ray", "sequential"] = "auto"
    """the sweep's engine: auto is Ray when installed (one CPU per run), else one run after the other"""
    runs_dir: Optional[str] = None
    """the sweep directory: one run directory per method and seed, the trainers' logs in logs/
    (default runs/<name>)"""
    out_dir: str = "bench/results"
    """where the table (.md, .json) and the figure (.png) go"""
    smoke: bool = False
    """tiny run of the whole pipeline (2 games, 2 seeds, 3 methods, a few thousand steps)"""
    name: Optional[str] = None
    """file stem of the outputs (default continual_minatar, continual_minatar5, with _smoke for --smoke)"""


def spec(args: BenchArgs) -> Spec:
    """The benchmark as a sweep: each label a variant (a method with its fixed flags), same seeds."""
    flags = ["--suite", "minatar", "--games", *args.games, "--steps-per-game", *map(str, args.steps_per_game),
             "--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
             "--random-episodes", str(args.eval_episodes), "--eval-envs", "16", "--torch-threads", "1",
             # fp32 on every CPU: `--bf16 auto` turns bf16 on where the CPU has AMX (and the packed rollout
             # off), so a run resumed on another machine would change precision and random stream mid-run
             "--bf16", "off", *TRUNKS[args.trunk]["flags"]]
    if args.smoke:
        flags += ["--num-envs", "4", "--num-steps", "64", "--eval-max-frames", "500", "--importance-obs", "256"]
    variants = {label: METHODS[label] for label in args.methods}
    # No --reference-run: reporting.aggregate normalizes every run by the grid's fine-tuning runs at
    # the end, so no run waits for another (and a smoke-sized reference need not beat random).
    return Spec("rl", list(args.methods), list(args.seeds), flags=flags, variants=variants, reference=False)


def check(args: BenchArgs) -> str | None:
    """The first bad value among methods, games, steps, seeds and evaluation, as one line, or None."""
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or "finetune" not in args.methods:
        return (f"--methods must include finetune and only use {', '.join(METHODS)} "
                f"(got {' '.join(args.methods)})")
    from envs.suites import get_suite
    try:
        get_suite("minatar").resolve_games(args.games)
    except ValueError as exc:
        return f"--games: {exc}"
    if len(args.steps_per_game) not in (1, len(args.games)):
        return (f"--steps-per-game takes one value or one per game ({len(args.games)}), "
                f"got {' '.join(map(str, args.steps_per_game))}")
    bad_steps = [s for s in args.steps_per_game if s <= 0]
    if bad_steps:
        return f"--steps-per-game must be positive, got {' '.join(map(str, args.steps_per_game))}"
    if not args.seeds:
        return "--seeds needs at least one seed"
    if args.eval_every < 0 or args.eval_episodes <= 0:
        return (f"--eval-every must be 0 or more and --eval-episodes positive "
                f"(got {args.eval_every}, {args.eval_episodes})")
    return None


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(BenchArgs, args=argv, description=__doc__.split("\n\n")[0])
    seq = SEQUENCES[args.sequence]
    args.games = args.games or seq["games"]  # type: ignore[assignment]
    args.steps_per_game = args.steps_per_game or seq["steps"]  # type: ignore[assignment]
    args.eval_every = seq["eval_every"] if args.eval_every is None else args.eval_every  # type: ignore[assignment]
    trunk = TRUNKS[args.trunk]
    args.name = args.name or str(seq["name"]) + str(trunk["suffix"]) + ("_smoke" if args.smoke else "")
    explicit_methods = args.methods
    args.methods = args.methods or trunk["methods"] or seq["methods"]  # type: ignore[assignment]
    error = check(args)  # what the user gave, before the smoke size replaces any of it
    if error:
        print(f"continual_minatar: error: {error}", file=sys.stderr)
        return 2
    if args.smoke:
        args.games, args.seeds = args.games[:2], args.seeds[:2]
        if explicit_methods is None:  # the sequence's methods, cut to the smoke's three
            args.methods = tuple(m for m in args.methods if m in ("finetune", "ewc", "agscl"))
        args.steps_per_game, args.eval_every, args.eval_episodes = (2048,), 1024, 4
    args.runs_dir = args.runs_dir or os.path.join("runs", args.name)
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
    improver = "agscl_mu4" if "agscl_mu4" in args.methods else "agscl"  # the suite default is mu 4
    runs, summary = aggregate([t.run_dir for t in result.trials], [t.label for t in result.trials], improver=improver)
    summary["command"] = "python bench/continual_minatar.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary["wall_seconds"] = time.time() - t0
    summary["settings"] = {"trunk": args.trunk, "trunk_flags": list(trunk["flags"]), "games": list(args.games), "seeds": list(args.seeds), "steps_per_game": list(args.steps_per_game),
                           "methods": {m: ["--method", METHODS[m][0], *METHODS[m][1]] for m in args.methods},
                           "engine": result.engine}
    summary["machine"] = {**machine(), "torch_threads": 1}  # every run: --torch-threads 1, one CPU
    name = args.name
    write_report(runs, summary, args.out_dir, name)  # the tables, the json, both figures
    for line in normalize_rl(result.trials):  # TensorBoard: normalized returns, P, HParams of every run
        print(f"normalize: {line}", file=sys.stderr)
    add_figure(str(result.sweep_dir), os.path.join(args.out_dir, f"{name}.png"))  # and Figure 7 (Images)
    print(markdown(summary))
    print(f"results: {os.path.join(args.out_dir, name)}{{.md,.json,.png,_after_games.png}} ({summary['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
