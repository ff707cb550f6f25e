"""`make demo`: a short, real continual run on two Atari games, minutes on 2 CPU cores.

Runs fine-tuning (the reference that normalizes returns, paper Figure 7) and then AGS-CL on
the same two games with the same budget, then draws Figure 7 from their results files.
Everything goes to ``runs/demo_<time>/`` (``finetune/``, ``agscl/``: TensorBoard events,
results.json, checkpoints; ``continual_plot.png`` and ``.csv``). A few thousand steps per game
teach an agent little: this shows the pipeline end to end, not the paper's numbers.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import tyro

from agents import plot_continual, ppo_continual


@dataclass
class DemoArgs:
    games: tuple[str, str] = ("StarGunner", "DemonAttack")
    """the two games, in order"""
    steps_per_game: int = 4096
    """environment steps per game and method"""
    num_envs: int = 8
    num_steps: int = 128
    eval_episodes: int = 4
    """whole games per evaluation"""
    eval_every: int = 2048
    eval_max_frames: int = 20_000
    """evaluation games are capped at this many frames to keep the demo short"""
    importance_obs: int = 1024
    out_dir: Optional[str] = None
    """where the two runs and the plot go (default runs/demo_<unix time>); must not exist"""
    seed: int = 1


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(DemoArgs, args=argv, description=__doc__.split("\n\n")[0])
    out_dir = args.out_dir or os.path.join("runs", f"demo_{int(time.time())}")
    if os.path.exists(out_dir):
        print(f"demo: error: {out_dir} already exists: pass another --out-dir", file=sys.stderr)
        return 2
    common = [
        "--games", *args.games, "--steps-per-game", str(args.steps_per_game), "--num-envs", str(args.num_envs),
        "--num-steps", str(args.num_steps), "--eval-episodes", str(args.eval_episodes), "--eval-envs", str(args.eval_episodes),
        "--eval-every", str(args.eval_every), "--eval-max-frames", str(args.eval_max_frames),
        "--importance-obs", str(args.importance_obs), "--checkpoint-every", "0", "--runs-dir", out_dir,
        "--seed", str(args.seed),
    ]
    t0 = time.time()
    rc = ppo_continual.main([*common, "--method", "finetune", "--run-name", "finetune"])
    if rc != 0:
        return rc
    ft = os.path.join(out_dir, "finetune")
    rc = ppo_continual.main([*common, "--method", "agscl", "--run-name", "agscl", "--reference-run", ft])
    if rc != 0:
        return rc
    ags = os.path.join(out_dir, "agscl")
    plot = os.path.join(out_dir, "continual_plot.png")
    rc = plot_continual.main([ags, ft, "--reference", ft, "--out", plot])
    if rc != 0:
        return rc
    print(f"\ndemo finished in {time.time() - t0:.0f}s")
    print(f"  results:     {ags}/results.json, {ft}/results.json")
    print(f"  TensorBoard: tensorboard --logdir {out_dir}")
    print(f"  plot:        {plot} (table: {os.path.splitext(plot)[0]}.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
