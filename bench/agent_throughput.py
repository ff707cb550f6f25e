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

``--mode baseline`` (issue 19): today's agent against a baseline revision of the code (default
``d9a930a``, the code before the lean rollout), both at the suite defaults, ``finetune``, one
torch thread, pinned to one core (``--core``, ``taskset``), alternating baseline and current run
over ``--rounds``. The baseline runs from a ``git archive`` of that revision in a temporary
directory. Two measures per run: wall-clock training steps/s (``results.json``), and training
steps per CPU second of the process (CPU time of an n-update run minus that of a 1-update run,
so start-up and evaluation cancel). On a machine shared with other jobs the second is the
steadier: it does not count the time the run waits for the core. Prints each round's figures
and ratios, the median ratios, and the CPU (model, SIMD flags, cores).

``--mode candidates``: what each change of the lean rollout buys, in process at one thread
(MinAtar's trunk, 8-env rollout step, 256-observation minibatch), as CPU time of the process:
``Categorical`` against sampling from the logits, module calls against direct ``forward`` calls,
``no_grad`` against ``inference_mode``, mixed against one memory layout at the last ReLU, Adam's
Python loop against its fused kernel, channels-last against contiguous, per-episode against
per-update logging, and the environment's step for scale.

``--mode learning``: short runs, fast path (every flag on, bf16 forced on even where ``auto``
would leave it off) vs plain path over ``--seeds``, on
MinAtar and Boxing; the end-of-game evaluation of each run (``--jobs`` runs at a time, one
torch thread each). The fast path leaves learning unharmed if its mean return is not below
the plain path's spread (within it, or above).

    python bench/agent_throughput.py                  # speed table and regularizer cost
    python bench/agent_throughput.py --mode parts     # per-part costs (ms)
    python bench/agent_throughput.py --mode learning  # learning unharmed (about 10 minutes on 2 cores)
    python bench/agent_throughput.py --mode baseline --suites minatar --rounds 5   # vs d9a930a, one pinned core
    python bench/agent_throughput.py --mode candidates                             # per-change gains (ms)
    python bench/agent_throughput.py --smoke          # speed, parts and learning modes, tiny (a pipeline check)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common.runio import machine  # noqa: E402
from envs.suites import get_suite  # noqa: E402
from reporting.results import load_results, write_json_atomic  # noqa: E402

FLAGS = ("bf16", "channels-last", "overlap-env", "fewer-syncs")
ON = {f: (f"--{f}",) for f in FLAGS} | {"bf16": ("--bf16", "on")}
OFF = {f: (f"--no-{f}",) for f in FLAGS} | {"bf16": ("--bf16", "off")}
PLAIN = tuple(a for f in FLAGS for a in OFF[f]) + ("--no-packed-rollout",)  # packed rollout: MinAtar only
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
    mode: Literal["speed", "parts", "learning", "baseline", "candidates"] = "speed"
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
    baseline_rev: str = "d9a930a"
    """baseline mode: the git revision that is today's path (the code before issue 19's lean rollout)"""
    baseline_updates: tuple[int, int] = (3, 24)
    """baseline mode: PPO updates (of 8 x 128 steps) per timed run (atari, minatar)"""
    core: int = 0
    """baseline mode: the CPU core both paths are pinned to (taskset; -1: no pinning)"""
    out: str = "runs/bench/agent_throughput.json"
    device: str = "cpu"
    """parts mode: the device the network parts run on (`cuda` for the GPU check)"""
    part_networks: tuple[str, ...] = ("nature_cnn", "paper_4x")
    """parts mode: which networks to time"""
    part_compile: bool = True
    """parts mode: also time the `--compile` path (skipped with --smoke)"""


def run_argv(suite: str, games: Sequence[str], steps: int, method: str, flags: Sequence[str], runs_dir: str,
             name: str, eval_episodes: int = 1, threads: int = 0) -> list[str]:
    cap = "400" if suite == "atari" else "100"
    return ["--suite", suite, "--games", *games, "--method", method, "--steps-per-game", str(steps),
            "--eval-every", "0", "--eval-episodes", str(eval_episodes), "--eval-envs", str(min(8, eval_episodes)),
            "--random-episodes", str(eval_episodes), "--importance-obs", "256", "--checkpoint-every", "0",
            "--runs-dir", runs_dir, "--run-name", name, "--torch-threads", str(threads),
            *(() if eval_episodes > 1 else ("--eval-max-frames", cap)), *flags]


def agent_run(argv: list[str], root: str = ROOT, prefix: Sequence[str] = ()) -> dict:
    """One run of the agent in a fresh process (no state carried between configurations); its results.
    ``root``: the source tree whose agent runs (a baseline revision's, in ``--mode baseline``);
    ``prefix``: a command to run it under (``taskset -c 0``)."""
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([*prefix, sys.executable, os.path.join(root, "agents", "ppo_continual.py"), *argv], cwd=root,
                         capture_output=True, text=True, env=env)
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


def _ms(fn, repeats: int, device: torch.device = torch.device("cpu"), clock: Callable[[], float] = time.perf_counter) -> float:
    """Median milliseconds of ``fn`` by ``clock`` (``time.process_time``: CPU time of this process,
    which on a shared machine leaves out the time spent waiting for a core); CUDA work is synchronized."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up: oneDNN/cuDNN primitives, allocator
    times = []
    for _ in range(repeats):
        sync()
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return 1e3 * float(np.median(times))


def parts(args: BenchArgs) -> dict:
    """Milliseconds per part, plain vs fast path, median of interleaved repetitions."""
    from types import SimpleNamespace

    from agents.fastpath import FastPath
    from agents.network import Agent, layer_init
    from agscl import AGSCL
    from agscl.ewc import EWC

    device = torch.device(args.device)
    repeats = 3 if args.smoke else 15
    report: dict = {"what": "milliseconds per part, median of repetitions", "networks": {}}
    for label, channels, rollout, minibatch in (("nature_cnn", (32, 64, 64), 8, 256), ("paper_4x", (128, 256, 128), 128, 128)):
        if label not in args.part_networks:
            continue
        if args.smoke:  # a pipeline check: small batches
            rollout, minibatch = min(rollout, 4), min(minibatch, 8)
        torch.manual_seed(0)
        agent = Agent(channels, 512, "atari").to(device)
        agent.add_head(18)
        obs = torch.randint(0, 256, (max(rollout, minibatch), 4, 84, 84), dtype=torch.uint8).to(device)
        act = torch.randint(0, 18, (minibatch,)).to(device)
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
        paths = [("plain", False, False), ("fast", True, False)] + ([] if args.smoke or not args.part_compile else [("fast_compiled", True, True)])
        for path, on, compiled in paths:
            flags = SimpleNamespace(bf16="on" if on else "off", channels_last=on, overlap_env=False, fewer_syncs=on,
                                    num_envs=rollout, compile=compiled)
            FastPath(flags, device).apply(agent)
            if compiled:  # compilation itself, once per shape family, outside the timings
                start = time.perf_counter()
                infer()
                update()
                row["compile_seconds"] = time.perf_counter() - start
            row[f"inference_{rollout}_{path}"] = _ms(infer, repeats, device)
            row[f"update_{minibatch}_{path}"] = _ms(update, repeats, device)
        FastPath(SimpleNamespace(bf16="off", channels_last=False, overlap_env=False, fewer_syncs=False,
                                 num_envs=rollout, compile=False), device).apply(agent)
        ags = AGSCL(agent.trunk, agent.heads, mu=0.1, lam=100.0, rho=0.3, init_fn=layer_init, seed=0)
        ags.begin_task(0)
        ags.end_task(0, [obs[:64].float() / 255.0])
        row["agscl_prox_step"] = _ms(lambda: ags.proximal_step(1e-4), repeats, device)
        row["agscl_masks"] = _ms(ags.apply_masks, repeats, device)
        ewc = EWC(agent.trunk, agent.heads, lam=1.0)
        ewc.terms[0] = ([torch.rand_like(p) for p in ewc.params()], ewc.snapshot())

        def ewc_penalty() -> None:
            ewc.penalty().backward()

        row["ewc_penalty_fwd_bwd"] = _ms(ewc_penalty, repeats, device)
        for p in ewc.params():
            p.grad = torch.zeros_like(p)
        row["ewc_penalty_fused"] = _ms(ewc.add_penalty_grad, repeats, device)
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

    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            scores = list(pool.map(one, jobs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # scratch runs: not left in the system's temp directory
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


def cpu_description() -> dict:
    """The CPU the numbers come from: model, the SIMD flags that decide oneDNN's kernels, core count."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
    return {"model": model, "simd": simd, "cores": os.cpu_count(), "torch": torch.__version__}


def export_revision(rev: str, into: str) -> str:
    """The source tree of git revision ``rev`` of this repository, unpacked under ``into``."""
    tree = os.path.join(into, f"baseline_{rev}")
    os.makedirs(tree)
    archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    return tree


def baseline(args: BenchArgs) -> dict:
    """Training steps/s of this tree against ``--baseline-rev``, alternating, on one pinned core, one torch thread."""
    import shutil

    cpu = cpu_description()
    pin = ("taskset", "-c", str(args.core)) if args.core >= 0 and shutil.which("taskset") else ()
    print(f"CPU: {cpu['model']} ({', '.join(cpu['simd'])}; {cpu['cores']} cores), torch {cpu['torch']}, "
          f"1 torch thread, {'pinned to core ' + str(args.core) if pin else 'not pinned'}", flush=True)
    report: dict = {"what": "training steps/s, this tree vs the baseline revision, alternating rounds, one core",
                    "cpu": cpu, "baseline_rev": args.baseline_rev, "pinned": " ".join(pin), "suites": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tree = export_revision(args.baseline_rev, tmp)
        for suite, game, updates in zip(("atari", "minatar"), args.games, args.baseline_updates):
            if suite not in args.suites:
                continue
            rows: dict[str, list[float]] = {"baseline": [], "current": []}
            cpu_rows: dict[str, list[float]] = {"baseline": [], "current": []}
            for r in range(args.rounds):
                for path, root in (("baseline", tree), ("current", ROOT)) if r % 2 == 0 else (("current", ROOT), ("baseline", tree)):
                    cpu = []
                    for n in (1, updates):  # CPU seconds of a 1-update run and an n-update run: their difference is training alone
                        argv = run_argv(suite, [game], n * 8 * 128, "finetune", (), tmp, f"{suite}_{path}_{r}_{n}", threads=1)
                        before = os.times()
                        res = agent_run(argv, root, pin)
                        after = os.times()
                        cpu.append(after.children_user + after.children_system - before.children_user - before.children_system)
                    rows[path].append(float(res["games_info"][0]["train_sps"]))
                    cpu_rows[path].append((updates - 1) * 8 * 128 / max(cpu[1] - cpu[0], 1e-9))
                ratio = rows["current"][-1] / rows["baseline"][-1]
                cpu_ratio = cpu_rows["current"][-1] / cpu_rows["baseline"][-1]
                print(f"round {r + 1}/{args.rounds} {suite} {game}: wall-clock steps/s baseline {rows['baseline'][-1]:.0f}, "
                      f"current {rows['current'][-1]:.0f}, ratio {ratio:.2f}; per CPU second baseline "
                      f"{cpu_rows['baseline'][-1]:.0f}, current {cpu_rows['current'][-1]:.0f}, ratio {cpu_ratio:.2f}", flush=True)
            ratios = [c / b for c, b in zip(rows["current"], rows["baseline"])]
            cpu_ratios = [c / b for c, b in zip(cpu_rows["current"], cpu_rows["baseline"])]
            med = {k: float(np.median(v)) for k, v in rows.items()}
            cpu_med = {k: float(np.median(v)) for k, v in cpu_rows.items()}
            report["suites"][suite] = {"game": game, "updates": updates, "samples": rows, "ratios": ratios,
                                       "median_ratio": float(np.median(ratios)), "median_steps_per_s": med,
                                       "cpu_samples": cpu_rows, "cpu_ratios": cpu_ratios,
                                       "median_cpu_ratio": float(np.median(cpu_ratios)), "median_steps_per_cpu_s": cpu_med}
            print(f"{suite} {game}: median ratio {np.median(ratios):.2f} wall-clock (rounds {', '.join(f'{x:.2f}' for x in ratios)}), "
                  f"{np.median(cpu_ratios):.2f} per CPU second (rounds {', '.join(f'{x:.2f}' for x in cpu_ratios)}); median "
                  f"steps/s baseline {med['baseline']:.0f}, current {med['current']:.0f}; per CPU second baseline "
                  f"{cpu_med['baseline']:.0f}, current {cpu_med['current']:.0f}", flush=True)
    return report


def candidates(args: BenchArgs) -> dict:
    """Milliseconds of each change of the lean rollout, before / after, at one torch thread (MinAtar trunk)."""
    import contextlib
    from types import SimpleNamespace

    from torch.distributions.categorical import Categorical
    from torch.utils.tensorboard import SummaryWriter

    from agents.fastpath import FastPath
    from agents.lean import EpisodeLog, PackedPolicy
    from agents.network import Agent

    torch.set_num_threads(1)
    repeats = 3 if args.smoke else 200
    torch.manual_seed(0)
    agent = Agent((16,), 128, "minatar")
    agent.add_head(3)
    obs = (torch.rand(256, 10, 10, 10) < 0.1).to(torch.uint8)
    act = torch.randint(0, 3, (256,))

    def categorical(x: torch.Tensor, action: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Today's path: the distribution object (argument checks off, as with --fewer-syncs)."""
        hidden = agent.features(x)
        dist = Categorical(logits=agent.heads[0][0](hidden), validate_args=False)
        action = dist.sample() if action is None else action
        return action, dist.log_prob(action), dist.entropy(), agent.heads[0][1](hidden)

    def set_layout(channels_last: bool) -> None:
        FastPath(SimpleNamespace(bf16="off", channels_last=channels_last, overlap_env=False, fewer_syncs=True,
                                 num_envs=8, compile=False), torch.device("cpu")).apply(agent)

    def step_old() -> None:
        with torch.no_grad():
            categorical(obs[:8], None)

    def step_logits() -> None:
        with torch.no_grad():
            agent.get_action_and_value(obs[:8], 0)

    def step_forward() -> None:
        with torch.no_grad():
            agent.act_and_value(obs[:8], 0)

    def step_new() -> None:
        with torch.inference_mode():
            agent.act_and_value(obs[:8], 0)

    def step_packed() -> None:  # the policy is built once per rollout (128 steps): its cost is timed on its own row
        with torch.inference_mode():
            packed(obs[:8])

    def update(fn, opt, one_layout: bool = True) -> Callable[[], None]:
        params = list(agent.parameters())
        conv = agent.contiguous_conv

        def run() -> None:
            agent.contiguous_conv = conv if one_layout else None
            _, logprob, entropy, value = fn(obs, act)
            loss = -logprob.mean() - 0.01 * entropy.mean() + value.square().mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=opt.defaults.get("fused") or None)
            opt.step()
        return run

    rows: dict[str, float] = {}
    set_layout(True)
    packed = PackedPolicy(agent, 0)
    timings = {
        "rollout_inference_today_categorical_no_grad": step_old,
        "rollout_inference_logits_no_grad": step_logits,
        "rollout_inference_logits_forward_direct_no_grad": step_forward,
        "rollout_inference_logits_forward_direct_inference_mode": step_new,
        "rollout_inference_packed_policy": step_packed,
        "packed_policy_build_once_per_rollout": lambda: PackedPolicy(agent, 0),
        "update_256_today_categorical_mixed_layout_adam_loop": update(
            categorical, torch.optim.Adam(agent.parameters(), lr=1e-6, eps=1e-5), one_layout=False),
        "update_256_logits_mixed_layout_adam_loop": update(lambda x, a: agent.get_action_and_value(x, 0, a),
                                                           torch.optim.Adam(agent.parameters(), lr=1e-6, eps=1e-5), one_layout=False),
        "update_256_logits_one_layout_adam_loop": update(lambda x, a: agent.get_action_and_value(x, 0, a),
                                                         torch.optim.Adam(agent.parameters(), lr=1e-6, eps=1e-5)),
        "update_256_logits_one_layout_adam_fused": update(lambda x, a: agent.get_action_and_value(x, 0, a),
                                                          torch.optim.Adam(agent.parameters(), lr=1e-6, eps=1e-5, fused=True)),
    }
    for _ in range(3):  # interleaved passes; the median of all repetitions per part
        for key, fn in timings.items():
            rows.setdefault(key, [])
            rows[key].append(_ms(fn, repeats // 3 or 1, clock=time.process_time))
    for layout in (True, False):
        set_layout(layout)
        fn = timings["update_256_logits_one_layout_adam_fused"]
        rows[f"update_256_fused_{'channels_last' if layout else 'contiguous'}"] = [_ms(fn, repeats // 2 or 1, clock=time.process_time)]
        rows[f"rollout_inference_new_{'channels_last' if layout else 'contiguous'}"] = [_ms(step_new, repeats // 2 or 1, clock=time.process_time)]
    set_layout(True)

    # the MinAtar environment alone, for scale (an env rewrite was tried: no faster, not kept)
    from envs.minatar import MinAtarVecEnv

    acts = np.random.default_rng(0).integers(0, 3, (64, 8))
    env = MinAtarVecEnv("Breakout", 8, seed=0)
    env.reset()
    counter = iter(range(10**9))
    rows["env_step_8"] = [_ms(lambda: env.step(acts[next(counter) % 64]), repeats * 5, clock=time.process_time)]

    # logging: 16 finished episodes per 1024-step update (MinAtar Breakout early in training)
    info = {"game_over": np.ones(16, dtype=bool), "episode_return": np.arange(16.0), "episode_length": np.full(16, 60)}
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        writer = SummaryWriter(tmp)

        def per_episode() -> None:
            for i in range(16):
                print(f"global_step={i} episodic_return={float(info['episode_return'][i]):g} game=Breakout", flush=True)
                writer.add_scalar("charts/episodic_return", float(info["episode_return"][i]), i)
                writer.add_scalar("charts/episodic_length", int(info["episode_length"][i]), i)
                writer.add_scalar("charts/Breakout/episodic_return", float(info["episode_return"][i]), i)

        log = EpisodeLog("Breakout", writer, lambda text: print(text, flush=True))

        def per_update() -> None:
            log.add(0, info)
            log.flush()

        rows["logging_16_episodes_per_episode"] = [_ms(per_episode, repeats // 4 or 1, clock=time.process_time)]
        rows["logging_16_episodes_per_update"] = [_ms(per_update, repeats // 4 or 1, clock=time.process_time)]
        writer.close()
    rows.update(_third_round(repeats))
    report = {"what": "CPU milliseconds of this process, median; MinAtar trunk, one torch thread", "cpu": cpu_description(),
              "ms": {k: float(np.median(v)) for k, v in rows.items()}}
    for key, value in report["ms"].items():
        print(f"  {key:42s} {value:8.3f} ms")
    return report


def _third_round(repeats: int) -> dict[str, list[float]]:
    """Issue 19's third round, in CPU ms at one thread: one minibatch step as the loop runs it (take the
    minibatch, normalize its advantages, forward, PPO loss, backward, clip, fused Adam) on a Breakout-like
    batch (4 of the 10 input channels used) of 1024 observations, and the packed rollout policy with and
    without skipping the game's unused channels. Each row adds one change to the row above it."""
    from types import SimpleNamespace

    from agents.fastpath import FastPath
    from agents.lean import Minibatches, PackedPolicy, log_prob_entropy
    from agents.network import Agent
    from agents.ppo_math import normalize_advantages, ppo_loss, ppo_loss_autograd

    torch.manual_seed(0)
    agent = Agent((16,), 128, "minatar")
    agent.add_head(3)
    FastPath(SimpleNamespace(bf16="off", channels_last=True, overlap_env=False, fewer_syncs=True, num_envs=8,
                             compile=False), torch.device("cpu")).apply(agent)
    n = 1024
    obs = torch.zeros(n, 10, 10, 10, dtype=torch.uint8)
    obs[:, :4] = (torch.rand(n, 4, 10, 10) < 0.1).to(torch.uint8)
    actions = torch.randint(0, 3, (n,))
    with torch.no_grad():
        logp, _ = log_prob_entropy(agent.logits_and_value(obs, 0)[0], actions)
    cols = [logp + 0.1 * torch.randn(n), torch.randn(n), torch.randn(n), torch.randn(n)]  # ratios around the clip range
    params = list(agent.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-6, eps=1e-5, fused=True)
    coefs = dict(clip_coef=0.1, clip_vloss=True, ent_coef=0.01, vf_coef=0.5)

    def step(take, fused_loss: bool, channels: torch.Tensor | None) -> Callable[[], None]:
        perm = torch.randperm(n)

        def run() -> None:
            mb_obs, mb_actions, old_logprob, adv, returns, values = take(perm[:256])
            adv = normalize_advantages(adv)
            logits, value = agent.logits_and_value(mb_obs, 0, channels)
            loss_fn = ppo_loss if fused_loss else ppo_loss_autograd
            loss, _ = loss_fn(logits, value, mb_actions, old_logprob, adv, returns, values, **coefs)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
            optimizer.step()
        return run

    def indexing(index: torch.Tensor) -> tuple[torch.Tensor, ...]:  # the second round's loop: one [index] per tensor
        return obs[index], actions[index], cols[0][index], cols[1][index], cols[2][index], cols[3][index]

    whole = Minibatches(agent, obs, actions, *cols, skip_empty_channels=False)
    skipping = Minibatches(agent, obs, actions, *cols)
    x = obs[:8]
    packed, packed_used = PackedPolicy(agent, 0), PackedPolicy(agent, 0, 4)

    def rollout(policy: PackedPolicy) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                policy(x)
        return run

    timings = {
        "round3_minibatch_step_indexing_autograd_loss": step(indexing, False, None),
        "round3_minibatch_step_minibatches_autograd_loss": step(whole.take, False, None),
        "round3_minibatch_step_minibatches_fused_loss": step(whole.take, True, None),
        "round3_minibatch_step_minibatches_fused_loss_used_channels": step(skipping.take, True, skipping.channels),
        "round3_rollout_packed_all_channels": rollout(packed),
        "round3_rollout_packed_used_channels": rollout(packed_used),
    }
    rows: dict[str, list[float]] = {}
    for _ in range(max(repeats // 5, 1)):  # many short interleaved passes: the machine's drift hits every row alike
        for key, fn in timings.items():
            rows.setdefault(key, []).append(_ms(fn, 5, clock=time.process_time))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = tyro.cli(BenchArgs, args=argv, description=__doc__.split("\n\n")[0])
    if args.smoke:
        args.updates, args.rounds, args.env_seconds, args.seeds = 1, 1, 0.5, (1,)
        args.learning_steps, args.methods = (1024, 1024), ("finetune", "agscl")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    for mode in ("speed", "parts", "learning") if args.smoke else (args.mode,):
        t0 = time.time()
        report = {"speed": speed, "parts": parts, "learning": learning, "baseline": baseline,
                  "candidates": candidates}[mode](args)
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
