"""Throughput of the continual PPO agent per method, as ratios measured in one run.

For every method, a two-game run of ``agents/ppo_continual.py``; the number taken is the
training steps per second of the *second* game (where each method's penalty, masks and
proximal steps are active), counting rollout + PPO update, not evaluation or end-of-game
importance. Reported against the same agent with ``finetune`` and against the environment
alone (same game, same number of copies, random actions). Methods are interleaved over
``--rounds`` rounds and the median per method is used, since absolute times on a shared
machine are noise; only the ratios mean something.

    python bench/agent_throughput.py [--rounds 2] [--steps-per-game 2048]
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import tyro

from agents import ppo_continual
from agents.results import load_results, write_json_atomic
from envs.atari import make_atari, resolve_games


@dataclass
class BenchArgs:
    games: tuple[str, str] = ("StarGunner", "Boxing")
    """the two games (the second one is timed)"""
    methods: tuple[str, ...] = ("finetune", "ewc", "online_ewc", "mas", "agscl")
    steps_per_game: int = 2048
    num_envs: int = 8
    num_steps: int = 128
    width: int = 1
    rounds: int = 2
    """interleaved repetitions; the median per method is reported"""
    env_seconds: float = 5.0
    """how long to time the environment alone, per round"""
    out: str = "runs/bench/agent_throughput.json"
    cuda: bool = True


def env_alone(game: str, num_envs: int, seconds: float) -> float:
    """Steps per second of the training environment with uniformly random actions."""
    env = make_atari(game, num_envs, seed=0, train=True)
    env.reset()
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(rng.integers(0, env.action_count, num_envs))
        steps += num_envs
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def agent_sps(args: BenchArgs, method: str, runs_dir: str, name: str) -> float:
    argv = [
        "--games", *args.games, "--method", method, "--steps-per-game", str(args.steps_per_game),
        "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps), "--width", str(args.width),
        "--eval-every", "0", "--eval-episodes", "1", "--eval-envs", "1", "--eval-max-frames", "400",
        "--importance-obs", "256", "--checkpoint-every", "0", "--runs-dir", runs_dir, "--run-name", name,
        "--cuda" if args.cuda else "--no-cuda",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        rc = ppo_continual.main(argv)
    if rc != 0:
        raise RuntimeError(f"agent run for {method} exited with {rc}")
    return float(load_results(os.path.join(runs_dir, name))["games_info"][1]["train_sps"])


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(BenchArgs, args=argv, description=__doc__.split("\n\n")[0])
    try:
        games = resolve_games(list(args.games))
        bad = [m for m in args.methods if m not in ppo_continual.METHOD_CHOICES]
        if bad:
            raise ValueError(f"unknown methods {bad}: choose from {', '.join(ppo_continual.METHOD_CHOICES)}")
        if "finetune" not in args.methods:
            raise ValueError("--methods must include finetune (the baseline of the ratios)")
        if args.rounds < 1 or args.steps_per_game < args.num_envs * args.num_steps:
            raise ValueError("--rounds must be >= 1 and --steps-per-game at least one batch (num_envs*num_steps)")
    except ValueError as exc:
        print(f"agent_throughput: error: {exc}", file=sys.stderr)
        return 2
    args.games = tuple(games)  # type: ignore[assignment]
    samples: dict[str, list[float]] = {m: [] for m in ("env_random", *args.methods)}
    with tempfile.TemporaryDirectory() as runs_dir:
        for r in range(args.rounds):
            samples["env_random"].append(env_alone(games[1], args.num_envs, args.env_seconds))
            for m in args.methods:
                samples[m].append(agent_sps(args, m, runs_dir, f"{m}_{r}"))
                print(f"round {r + 1}/{args.rounds} {m}: {samples[m][-1]:.1f} steps/s", flush=True)
    median = {k: float(np.median(v)) for k, v in samples.items()}
    print(f"\n{'':12s} {'steps/s':>9s} {'/finetune':>10s} {'/env alone':>11s}")
    for k, v in median.items():
        print(f"{k:12s} {v:9.1f} {v / median['finetune']:10.3f} {v / median['env_random']:11.3f}")
    device = "cuda" if torch.cuda.is_available() and args.cuda else "cpu"
    report = {
        "what": "training steps/s in game 2 (rollout + PPO update), median over rounds",
        "config": {**vars(args), "device": device, "torch_threads": torch.get_num_threads()},
        "samples": samples,
        "median_steps_per_s": median,
        "ratio_to_finetune": {k: v / median["finetune"] for k, v in median.items()},
        "ratio_to_env_alone": {k: v / median["env_random"] for k, v in median.items()},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
