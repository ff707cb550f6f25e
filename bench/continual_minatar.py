"""Continual RL that visibly works on a CPU: a MinAtar sequence, methods x seeds, 95% intervals.

    python bench/continual_minatar.py                 # the README table: about an hour on 2 cores
    python bench/continual_minatar.py --smoke         # the pipeline in about a minute (CI size)

Every (method, seed) is one ordinary run of ``agents/ppo_continual.py --suite minatar`` under
``--runs-dir`` (resume, plots and TensorBoard work on it unchanged), ``--jobs`` of them at a
time, each with one torch thread. A finished run is skipped and an interrupted one resumed
when the benchmark is started again. When all are done, :mod:`agents.aggregate` prints and
saves (``--out-dir``): the score matrix per method (mean over seeds), the average final
return, the accumulated normalized return with fine-tuning as the reference, P, S and
forgetting, each with a 95% bootstrap interval over seeds, and a Figure-7-like plot with bands.

Method settings (fixed before the runs, not tuned on them):
- ``agscl``: mu 1, lambda 100 on plain-mean Omega, rho 0.3, eta 0.9, prox once per PPO epoch;
  the paper's RL setting (mu 0.1, lambda 2100 here) froze 141 of 144 nodes of this small
  trunk after one game in an earlier probe (DESIGN.md), which left no plasticity;
- ``agscl_no_reinit``: the same without (I.1) zero-fix and (I.2) re-initialization (ablation);
- ``ewc`` (lambda 1e4) and ``mas`` (lambda 1): the agent's defaults, reported as they come.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agents.aggregate import aggregate, draw, jsonable, markdown  # noqa: E402
from agents.results import RESULTS_FILE, write_json_atomic  # noqa: E402

#: Grid labels -> agent flags. ``finetune`` is the reference and must stay in the grid.
METHODS: dict[str, list[str]] = {
    "finetune": ["--method", "finetune"],
    "ewc": ["--method", "ewc", "--ewc-lambda", "10000"],
    "mas": ["--method", "mas", "--mas-lambda", "1"],
    "agscl": ["--method", "agscl", "--mu", "1", "--agscl-lambda", "100"],
    "agscl_no_reinit": ["--method", "agscl", "--mu", "1", "--agscl-lambda", "100", "--no-zero-init", "--no-rand-init"],
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
    jobs: int = 2
    """runs at a time (one torch thread each)"""
    runs_dir: str = "runs/continual_minatar"
    """where the runs go (one directory per method and seed)"""
    out_dir: str = "bench/results"
    """where the table (.md, .json) and the figure (.png) go"""
    smoke: bool = False
    """tiny run of the whole pipeline (2 games, 2 seeds, 3 methods, a few thousand steps)"""
    name: Optional[str] = None
    """file stem of the outputs (default continual_minatar, or continual_minatar_smoke)"""


def run_command(args: BenchArgs, label: str, seed: int) -> list[str]:
    cmd = [sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--suite", "minatar",
           "--games", *args.games, "--seed", str(seed), "--steps-per-game", str(args.steps_per_game),
           "--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
           "--random-episodes", str(args.eval_episodes), "--eval-envs", "16", "--torch-threads", "1",
           "--runs-dir", args.runs_dir, "--run-name", f"{label}__s{seed}", *METHODS[label]]
    if args.smoke:
        cmd += ["--num-envs", "4", "--num-steps", "64", "--eval-max-frames", "500", "--importance-obs", "256"]
    return cmd


def status(run_dir: str) -> str:
    """``finished``, ``resume`` (a checkpoint to continue from) or ``new``."""
    try:
        with open(os.path.join(run_dir, RESULTS_FILE)) as f:
            if json.load(f)["progress"]["status"] == "finished":
                return "finished"
    except (OSError, ValueError, KeyError):
        pass
    return "resume" if os.path.isfile(os.path.join(run_dir, "ckpt", "latest.pt")) else "new"


def launch(args: BenchArgs, label: str, seed: int) -> tuple[str, int, float]:
    run_dir = os.path.join(args.runs_dir, f"{label}__s{seed}")
    state = status(run_dir)
    if state == "finished":
        print(f"[skip] {label} seed {seed}: finished", flush=True)
        return run_dir, 0, 0.0
    if state == "resume":
        cmd = [sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--resume", run_dir]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: start over
        cmd = run_command(args, label, seed)
    os.makedirs(os.path.join(args.runs_dir, "logs"), exist_ok=True)
    log = os.path.join(args.runs_dir, "logs", f"{label}__s{seed}.log")
    print(f"[start] {label} seed {seed} ({state}): log {log}", flush=True)
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    print(f"[{'done' if rc == 0 else f'FAILED rc={rc}'}] {label} seed {seed} in {time.time() - t0:.0f}s", flush=True)
    return run_dir, rc, time.time() - t0


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
    grid = [(m, s) for s in args.seeds for m in args.methods]
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(lambda job: launch(args, *job), grid))
    failed = [d for d, rc, _ in outcomes if rc != 0]
    if failed:
        print(f"continual_minatar: error: {len(failed)} runs failed ({', '.join(failed)}): see their logs; "
              "start the benchmark again to resume them", file=sys.stderr)
        return 1
    runs, summary = aggregate([d for d, _, _ in outcomes], [m for m, _ in grid])
    summary["command"] = "python bench/continual_minatar.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary["wall_seconds"] = time.time() - t0
    summary["settings"] = {"games": list(args.games), "seeds": list(args.seeds), "steps_per_game": args.steps_per_game,
                           "methods": {m: METHODS[m] for m in args.methods}}
    name = args.name or ("continual_minatar_smoke" if args.smoke else "continual_minatar")
    os.makedirs(args.out_dir, exist_ok=True)
    table = markdown(summary)
    write_json_atomic(os.path.join(args.out_dir, f"{name}.json"), jsonable(summary))
    with open(os.path.join(args.out_dir, f"{name}.md.tmp"), "w") as f:
        f.write(table + "\n")
    os.replace(os.path.join(args.out_dir, f"{name}.md.tmp"), os.path.join(args.out_dir, f"{name}.md"))
    draw(runs, summary, os.path.join(args.out_dir, f"{name}.png"))
    print(table)
    print(f"results: {os.path.join(args.out_dir, name)}.{{md,json,png}} ({summary['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
