"""Throughput of the continual PPO agent: the fast path against the plain path, as ratios in one run.

``--mode speed`` (default), per suite (Atari: Boxing; MinAtar: Breakout; 8 envs x 128 steps,
4 epochs x 4 minibatches, ``finetune``): training steps/s (rollout + PPO update, from
``results.json``; no evaluation, no end-of-game importance) of

- ``plain``: fp32, contiguous, environment steps and inference in sequence (every flag off);
- each fast-path flag alone (``bf16``, ``channels-last``, ``overlap-env``, ``fewer-syncs``);
- ``defaults``: the agent's defaults for the suite;

against the plain path and the environment alone (same game and copies, random actions). Then
the regularizer cost on the default path: ``agscl``, ``ewc``, ``mas`` against ``finetune`` in
the second game of a two-game Atari run, where penalties, masks and prox steps are active.
Configurations are interleaved over ``--rounds`` and the median is reported: absolute times on
a shared machine are noise, the ratios are the result.

``--mode parts``: the per-part costs behind the README's Scale section, in milliseconds, plain
vs fast (and fast with ``--compile``, compile time apart): an 8-env environment step, inference on
the rollout batch, one minibatch update
(forward, backward, clip, Adam), the AGS-CL prox step and masks, the EWC penalty (through
autograd, and fused: ``add_penalty_grad``); for the Nature CNN at 8 envs / 256-observation minibatches and for ``--preset
paper`` (4x-wide trunk, 128 envs, 128-observation minibatches).

``--mode learning``: short runs, fast path (every flag on, bf16 forced on even where ``auto``
would leave it off) vs plain path over ``--seeds``, on
MinAtar and Boxing; the end-of-game evaluation of each run (``--jobs`` runs at a time, one
torch thread each). The fast path leaves learning unharmed if its mean return is not below
the plain path's spread (within it, or above).

    python bench/agent_throughput.py                  # speed table and regularizer cost
    python bench/agent_throughput.py --mode parts     # per-part costs (ms)
    python bench/agent_throughput.py --mode learning  # learning unharmed (about 10 minutes on 2 cores)
    python bench/agent_throughput.py --smoke          # both modes, tiny (a pipeline check)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agents.results import load_results, write_json_atomic  # noqa: E402
from common.runio import machine  # noqa: E402
from envs.suites import get_suite  # noqa: E402

FLAGS = ("bf16", "channels-last", "overlap-env", "fewer-syncs")
ON = {f: (f"--{f}",) for f in FLAGS} | {"bf16": ("--bf16", "on")}
OFF = {f: (f"--no-{f}",) for f in FLAGS} | {"bf16": ("--bf16", "off")}
PLAIN = tuple(a for f in FLAGS for a in OFF[f])
FAST = tuple(a for f in FLAGS for a in ON[f])  # every flag on, bf16 forced on: the strictest learning check
#: configuration -> flags: the plain path, each flag alone (bf16 forced on), the defaults
CONFIGS: dict[str, tuple[str, ...]] = {
    "plain": PLAIN,
    **{f: tuple(a for g in FLAGS for a in (ON[g] if g == f else OFF[g])) for f in FLAGS},
    "defaults": (),
}
#: regularizer-cost labels that are not plain method names: (method, extra flags)
REGULARIZER_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ewc_autograd": ("ewc", ("--no-fused-penalty",)),
    "mas_autograd": ("mas", ("--no-fused-penalty",)),
}


@dataclass
class BenchArgs:
    mode: Literal["speed", "parts", "learning"] = "speed"
    suites: tuple[str, ...] = ("atari", "minatar")
    games: tuple[str, str] = ("Boxing", "Breakout")
    """the timed game of each suite (atari, minatar)"""
    updates: int = 4
    """PPO updates (of 8 x 128 steps) per timed run"""
    rounds: int = 3
    """interleaved repetitions; the median per configuration is reported"""
    methods: tuple[str, ...] = ("finetune", "agscl", "ewc", "mas", "ewc_autograd", "mas_autograd")
    """regularizer cost: methods timed in game 2 of a two-game Atari run on the default path (`*_autograd`: the
    penalty through the loss's autograd graph, `--no-fused-penalty`)"""
    regularizer_games: tuple[str, str] = ("StarGunner", "Boxing")
    env_seconds: float = 4.0
    """how long to time the environment alone, per round"""
    torch_threads: int = 0
    """torch threads of the timed runs (0: all cores)"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """learning mode: seeds per path"""
    learning_steps: tuple[int, int] = (32_768, 100_352)
    """learning mode: steps of the one game of each run (atari, minatar)"""
    jobs: int = 2
    """learning mode: runs at a time (one torch thread each)"""
    smoke: bool = False
    """tiny settings: checks the pipeline, measures nothing"""
    out: str = "runs/bench/agent_throughput.json"


def run_argv(suite: str, games: Sequence[str], steps: int, method: str, flags: Sequence[str], runs_dir: str,
             name: str, eval_episodes: int = 1, threads: int = 0) -> list[str]:
    cap = "400" if suite == "atari" else "100"
    return ["--suite", suite, "--games", *games, "--method", method, "--steps-per-game", str(steps),
            "--eval-every", "0", "--eval-episodes", str(eval_episodes), "--eval-envs", str(min(8, eval_episodes)),
            "--random-episodes", str(eval_episodes), "--importance-obs", "256", "--checkpoint-every", "0",
            "--runs-dir", runs_dir, "--run-name", name, "--torch-threads", str(threads),
            *(() if eval_episodes > 1 else ("--eval-max-frames", cap)), *flags]


def agent_run(argv: list[str]) -> dict:
    """One run of the agent in a fresh process (no state carried between configurations); its results."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), *argv], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"agent run exited with {out.returncode}: {' '.join(argv)}\n{out.stderr[-2000:]}")
    return load_results(os.path.join(argv[argv.index("--runs-dir") + 1], argv[argv.index("--run-name") + 1]))


def train_sps(argv: list[str], game: int) -> float:
    """Training steps/s of game ``game`` of a run."""
    return float(agent_run(argv)["games_info"][game]["train_sps"])


def env_alone(suite: str, game: str, num_envs: int, seconds: float) -> float:
    """Steps per second of the training environment with uniformly random actions."""
    env = get_suite(suite).make(game, num_envs, seed=0, train=True)
    env.reset()
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(rng.integers(0, env.action_count, num_envs))
        steps += num_envs
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def speed(args: BenchArgs) -> dict:
    batch = 8 * 128
    samples: dict[str, dict[str, list[float]]] = {s: {k: [] for k in ("env alone", *CONFIGS)} for s in args.suites}
    reg: dict[str, list[float]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory() as runs_dir:
        for r in range(args.rounds):
            for suite, game in zip(("atari", "minatar"), args.games):
                if suite not in args.suites:
                    continue
                samples[suite]["env alone"].append(env_alone(suite, game, 8, args.env_seconds))
                for config, flags in CONFIGS.items():
                    name = f"{suite}_{config}_{r}"
                    argv = run_argv(suite, [game], args.updates * batch, "finetune", flags, runs_dir, name,
                                    threads=args.torch_threads)
                    samples[suite][config].append(train_sps(argv, 0))
                    print(f"round {r + 1}/{args.rounds} {suite} {config}: {samples[suite][config][-1]:.0f} steps/s", flush=True)
            for method in args.methods:
                real, flags = REGULARIZER_VARIANTS.get(method, (method, ()))
                argv = run_argv("atari", args.regularizer_games, 2 * batch, real, flags, runs_dir, f"reg_{method}_{r}",
                                threads=args.torch_threads)
                reg[method].append(train_sps(argv, 1))
                print(f"round {r + 1}/{args.rounds} regularizer {method}: {reg[method][-1]:.0f} steps/s", flush=True)
    report: dict = {"what": "training steps/s (rollout + PPO update), median over interleaved rounds", "suites": {}}
    for suite, rows in samples.items():
        median = {k: float(np.median(v)) for k, v in rows.items()}
        report["suites"][suite] = {"samples": rows, "median_steps_per_s": median,
                                   "ratio_to_plain": {k: v / median["plain"] for k, v in median.items()},
                                   "ratio_to_env_alone": {k: v / median["env alone"] for k, v in median.items()}}
        print(f"\n{suite} ({args.games[args.suites.index(suite)] if suite in args.suites else ''}):")
        print(f"{'configuration':15s} {'steps/s':>9s} {'/plain':>8s} {'/env alone':>11s}")
        for k, v in median.items():
            print(f"{k:15s} {v:9.1f} {v / median['plain']:8.3f} {v / median['env alone']:11.3f}")
    if "finetune" in reg:
        median = {m: float(np.median(v)) for m, v in reg.items()}
        cost = {m: 1.0 - v / median["finetune"] for m, v in median.items()}
        report["regularizer"] = {"games": args.regularizer_games, "samples": reg, "median_steps_per_s": median,
                                 "cost_vs_finetune": cost}
        print(f"\nregularizer cost, default path, game 2 of {' -> '.join(args.regularizer_games)}:")
        for m, v in median.items():
            print(f"{m:10s} {v:9.1f} steps/s  cost {100 * cost[m]:+.1f}%")
    return report


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN primitives, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def parts(args: BenchArgs) -> dict:
    """Milliseconds per part, plain vs fast path, median of interleaved repetitions."""
    from types import SimpleNamespace

    from agents.fastpath import FastPath
    from agents.network import Agent, layer_init
    from agscl import AGSCL
    from agscl.ewc import EWC

    device = torch.device("cpu")
    repeats = 3 if args.smoke else 15
    report: dict = {"what": "milliseconds per part, median of repetitions", "networks": {}}
    for label, channels, rollout, minibatch in (("nature_cnn", (32, 64, 64), 8, 256), ("paper_4x", (128, 256, 128), 128, 128)):
        torch.manual_seed(0)
        agent = Agent(channels, 512, "atari").to(device)
        agent.add_head(18)
        obs = torch.randint(0, 256, (max(rollout, minibatch), 4, 84, 84), dtype=torch.uint8)
        act = torch.randint(0, 18, (minibatch,))
        params = list(agent.parameters())
        opt = torch.optim.Adam(params, lr=1e-4, eps=1e-5)

        def infer() -> None:
            with torch.no_grad():
                agent.get_action_and_value(obs[:rollout], 0)

        def update() -> None:
            _, logprob, entropy, value = agent.get_action_and_value(obs[:minibatch], 0, act)
            loss = -logprob.mean() - 0.01 * entropy.mean() + value.square().mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()

        row: dict[str, float] = {}
        paths = [("plain", False, False), ("fast", True, False)] + ([] if args.smoke else [("fast_compiled", True, True)])
        for path, on, compiled in paths:
            flags = SimpleNamespace(bf16="on" if on else "off", channels_last=on, overlap_env=False, fewer_syncs=on,
                                    num_envs=rollout, compile=compiled)
            FastPath(flags, device).apply(agent)
            if compiled:  # compilation itself, once per shape family, outside the timings
                start = time.perf_counter()
                infer()
                update()
                row["compile_seconds"] = time.perf_counter() - start
            row[f"inference_{rollout}_{path}"] = _ms(infer, repeats)
            row[f"update_{minibatch}_{path}"] = _ms(update, repeats)
        FastPath(SimpleNamespace(bf16="off", channels_last=False, overlap_env=False, fewer_syncs=False,
                                 num_envs=rollout, compile=False), device).apply(agent)
        ags = AGSCL(agent.trunk, agent.heads, mu=0.1, lam=100.0, rho=0.3, init_fn=layer_init, seed=0)
        ags.begin_task(0)
        ags.end_task(0, [obs[:64].float() / 255.0])
        row["agscl_prox_step"] = _ms(lambda: ags.proximal_step(1e-4), repeats)
        row["agscl_masks"] = _ms(ags.apply_masks, repeats)
        ewc = EWC(agent.trunk, agent.heads, lam=1.0)
        ewc.terms[0] = ([torch.rand_like(p) for p in ewc.params()], ewc.snapshot())

        def ewc_penalty() -> None:
            ewc.penalty().backward()

        row["ewc_penalty_fwd_bwd"] = _ms(ewc_penalty, repeats)
        for p in ewc.params():
            p.grad = torch.zeros_like(p)
        row["ewc_penalty_fused"] = _ms(ewc.add_penalty_grad, repeats)
        report["networks"][label] = row
        print(f"\n{label} (rollout batch {rollout}, minibatch {minibatch}):")
        for key, value in row.items():
            print(f"  {key:28s} {value:8.2f} {'s' if key.endswith('_seconds') else 'ms'}")
    step_rate = env_alone("atari", args.games[0], 8, args.env_seconds)
    report["env_step_8_envs_ms"] = 8e3 / step_rate
    report["env_steps_per_s_8_envs"] = step_rate
    print(f"\nenvironment alone, 8 envs: {step_rate:.0f} steps/s ({8e3 / step_rate:.2f} ms per 8-env step)")
    return report


def learning(args: BenchArgs) -> dict:
    """Final returns of short runs, fast vs plain path, per seed (runs in subprocesses, --jobs at a time)."""
    jobs: list[tuple[str, str, int, list[str]]] = []
    tmp = tempfile.mkdtemp(prefix="fastpath_learning_")
    for suite, game, steps in zip(("atari", "minatar"), args.games, args.learning_steps):
        if suite not in args.suites:
            continue
        for seed in args.seeds:
            for path, flags in (("plain", PLAIN), ("fast", FAST)):
                name = f"{suite}_{path}_{seed}"
                argv = run_argv(suite, [game], steps, "finetune", flags, tmp, name, eval_episodes=2 if args.smoke else 16,
                                threads=1) + ["--seed", str(seed)]
                jobs.append((suite, path, seed, argv))

    def one(job: tuple[str, str, int, list[str]]) -> float:
        suite, path, seed, argv = job
        res = agent_run(argv)
        print(f"{suite} {path} seed {seed}: {res['score_matrix'][0][0]:.2f}", flush=True)
        return float(res["score_matrix"][0][0])

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        scores = list(pool.map(one, jobs))
    report: dict = {"what": "end-of-game evaluation mean return (16 games), fast (every flag on, bf16 on) vs plain path", "suites": {}}
    for suite in args.suites:
        by = {p: [s for (su, pa, _, _), s in zip(jobs, scores) if su == suite and pa == p] for p in ("plain", "fast")}
        lo, hi = min(by["plain"]), max(by["plain"])
        unharmed = float(np.mean(by["fast"])) >= lo  # within the plain spread, or above it
        report["suites"][suite] = {"seeds": list(args.seeds), "returns": by, "plain_range": [lo, hi],
                                   "fast_mean_not_below_plain_range": unharmed,
                                   "steps": args.learning_steps[("atari", "minatar").index(suite)]}
        print(f"{suite}: plain {np.mean(by['plain']):.2f} (range {lo:.2f}..{hi:.2f}) fast {np.mean(by['fast']):.2f} "
              f"+- {np.std(by['fast']):.2f}: {'not below' if unharmed else 'BELOW'} the plain spread")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(BenchArgs, args=argv, description=__doc__.split("\n\n")[0])
    if args.smoke:
        args.updates, args.rounds, args.env_seconds, args.seeds = 1, 1, 0.5, (1,)
        args.learning_steps, args.methods = (1024, 1024), ("finetune", "agscl")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    for mode in ("speed", "parts", "learning") if args.smoke else (args.mode,):
        t0 = time.time()
        report = {"speed": speed, "parts": parts, "learning": learning}[mode](args)
        report["config"] = {**vars(args), "mode": mode, "torch_threads_used": torch.get_num_threads(),
                            "seconds": time.time() - t0, "device": "cuda" if torch.cuda.is_available() else "cpu"}
        report["machine"] = machine()  # CPU model, SIMD flags, threads: the ratios depend on them
        out = args.out if mode == "speed" else args.out.replace(".json", f"_{mode}.json")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        write_json_atomic(out, json.loads(json.dumps(report)))
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
