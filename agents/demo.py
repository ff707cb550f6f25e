"""`make demo`: a real continual run on three MinAtar games, about 5 minutes on 2 idle CPU cores.

Trains fine-tuning (the reference that normalizes returns, paper Figure 7) and AGS-CL on the
same games with the same budget, side by side (one core each), then draws Figure 7 from
their results files. The setting is the MinAtar benchmark's (``bench/continual_minatar.py``:
Breakout, SpaceInvaders, Freeway, 300k steps a game, 30 evaluation games, AGS-CL mu 4, lambda
100), so for seeds 1-3 the demo's two runs are the benchmark's ``finetune`` and ``agscl_mu4``
runs: fine-tuning keeps 0.02-0.42 of its gain on Breakout, AGS-CL 0.83-0.93. Shorter settings
do not show that reliably: Breakout then Freeway, 200k steps each (about 3 minutes), gave
fine-tuning 0.58 and 1.00 against AGS-CL's 0.75 and 1.00 on seeds 1 and 2 (README). Afterwards
``reporting.normalize`` writes the normalized returns, P and the HParams metrics into both runs'
TensorBoard, and Figure 7 goes into the Images tab of the demo's directory. Everything goes to
``runs/demo_<time>/`` (``finetune/``, ``agscl/``: TensorBoard events, results.json, videos,
checkpoints, logs; ``continual_plot.png`` and ``.csv``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence


from common.cli import CliError, parse
from common.runio import OutputError, check_output_dir
from reporting import normalize, plot_continual
from reporting.results import load_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("finetune", "agscl")


@dataclass
class DemoArgs:
    suite: str = "minatar"
    """game suite of the demo (`minatar`, or `atari` for a pipeline check that learns little in minutes)"""
    games: tuple[str, ...] = ("Breakout", "SpaceInvaders", "Freeway")
    """the games, in order"""
    steps_per_game: int = 300_000
    """environment steps per game and method"""
    num_envs: int = 8
    num_steps: int = 128
    eval_episodes: int = 30
    """whole games per evaluation (and for the random-policy score)"""
    eval_every: int = 100_000
    eval_max_frames: int = 10_000
    """evaluation games are capped at this many frames"""
    importance_obs: int = 2048
    """observations of a finished game for AGS-CL's importance (the MinAtar suite's default)"""
    out_dir: Optional[str] = None
    """where the two runs and the plot go (default runs/demo_<unix time>); must not exist"""
    seed: int = 1
    capture_video: bool = True
    """record one game of every learned game at each game boundary (runs/demo_<time>/<method>/videos, TensorBoard)"""


def check_runs(common: list[str]) -> None:
    """Both trainings' command lines through the agent's own checks (games, ranges, method), so
    that bad input is one line before anything is created or launched; UserError otherwise."""
    from agents.config import parse_args, validate
    from agents.ppo_continual import Args

    for method in METHODS:
        validate(parse_args(Args, [*common, "--method", method, "--run-name", method]))


def last_line(path: str) -> str:
    """The last non-empty line of a child's log: its own error line when it failed."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f.read()[-4096:].replace("\r", "\n").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def main(argv: Sequence[str] | None = None) -> int:
    from agents.runtime import UserError

    try:
        args = parse(DemoArgs, argv, description=__doc__.split("\n\n")[0])
    except CliError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or os.path.join("runs", f"demo_{int(time.time())}")
    if os.path.exists(out_dir):
        print(f"demo: error: {out_dir} already exists: pass another --out-dir", file=sys.stderr)
        return 2
    common = [
        "--suite", args.suite, "--games", *args.games, "--steps-per-game", str(args.steps_per_game),
        "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps), "--eval-episodes", str(args.eval_episodes),
        "--random-episodes", str(args.eval_episodes), "--eval-envs", str(min(args.eval_episodes, 16)),
        "--eval-every", str(args.eval_every), "--eval-max-frames", str(args.eval_max_frames),
        "--importance-obs", str(args.importance_obs), "--checkpoint-every", "0", "--runs-dir", out_dir,
        "--seed", str(args.seed), "--torch-threads", "1", "--capture-video" if args.capture_video else "--no-capture-video",
    ]
    try:
        check_output_dir(out_dir, "--out-dir")
        check_runs(common)
    except (UserError, OutputError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(out_dir)
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = {}
    for method in METHODS:
        log = open(os.path.join(out_dir, f"{method}.log"), "w")
        cmd = [sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), *common, "--method", method,
               "--run-name", method]
        procs[method] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        print(f"demo: training {method} on {' then '.join(args.games)} (log {log.name})", flush=True)
    failed = []
    for method, (proc, log) in procs.items():
        if proc.wait() != 0:
            failed.append(f"{method} (exit {proc.returncode}: {last_line(log.name) or 'no output'}; log {log.name})")
        log.close()
    if failed:
        print(f"demo: error: {', '.join(failed)}", file=sys.stderr)
        return 1
    ft, ags = os.path.join(out_dir, "finetune"), os.path.join(out_dir, "agscl")
    plot = os.path.join(out_dir, "continual_plot.png")
    rc = plot_continual.main([ags, ft, "--reference", ft, "--out", plot])
    if rc != 0:
        return rc
    for line in normalize.normalize_runs([ft, ags], ft):
        print(f"normalize: {line}")
    normalize.add_figure(out_dir, plot)
    print(f"\ndemo finished in {time.time() - t0:.0f}s")
    print(f"  results:     {ags}/results.json, {ft}/results.json")
    print(f"  TensorBoard: tensorboard --logdir {out_dir}")
    print(f"  plot:        {plot} (table: {os.path.splitext(plot)[0]}.csv; also in TensorBoard's Images tab)")
    if args.capture_video:
        videos = [v for run in (ft, ags) for v in load_results(run).get("videos", [])]
        print(f"  videos:      {ags}/videos, {ft}/videos (and TensorBoard's Images tab, videos/<game>): {len(videos)} games, "
              f"{sum(v['bytes'] for v in videos) / 1e6:.1f} MB, {sum(v['seconds'] for v in videos):.1f} s of recording")
    return 0


if __name__ == "__main__":
    sys.exit(main())
