"""The GPU check: everything the first lent GPU should measure, in one command of under 8 minutes.

    make gpu-check                         # = python bench/gpu_check.py (one H100, 16 cores: about 7 minutes)
    python bench/gpu_check.py --smoke      # the same steps, tiny, on the CPU (under a minute; CI runs it)

Sections, in order (each one's failure is recorded in the report and the next one still runs):

1. ``machine``: CPU model, its flags, core and thread counts; GPU name, memory, capability; versions.
2. ``cuda_tests``: ``pytest -m cuda`` on the test files that hold CUDA tests (skipped without a GPU).
3. ``throughput``: training steps/s of ``finetune`` and ``agscl`` under ``--preset paper`` at 8, 64
   and 128 environments (a few PPO updates of Boxing each; rollout + update, no evaluation).
4. ``parts``: per-part costs in ms (8-env environment step, inference, one minibatch update, the
   AGS-CL prox step and masks, the EWC penalty), from ``bench/agent_throughput.py --mode parts``
   on the check's device (without ``--compile``, to stay in the time budget).
5. ``learning``: cleanrl's ``ppo_atari_envpool`` settings (the agent's defaults) on one game for
   about ``--learning-seconds`` of training, the end-of-game evaluation against the random policy
   and beside cleanrl's published return (see ``PUBLISHED``).
6. ``kill_resume``: a two-game ``--preset paper`` AGS-CL run (small: 16 envs) in a subprocess, killed
   with SIGKILL right after a mid-game checkpoint of game 2, resumed with ``--resume``, finished.

Then the expected cost of the paper's Figure 7 grid (``bench/configs/paper_fig7.toml``) from the
measured 128-environment steps/s. Writes one JSON report (``--out``) and prints a table.
"""

from __future__ import annotations

import glob
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agents import ppo_continual  # noqa: E402
from agents.runtime import versions  # noqa: E402
from common import runio  # noqa: E402
from common.cli import parse  # noqa: E402
from common.runio import check_output_file  # noqa: E402
from reporting.results import load_results, write_json_atomic  # noqa: E402

SECTIONS = ("machine", "cuda_tests", "throughput", "parts", "learning", "kill_resume")
#: cleanrl's published ppo_atari_envpool returns (10M steps, 3 seeds, mean +- std): the "Experiment
#: results" table of https://docs.cleanrl.dev/rl-algorithms/ppo/#ppo_atari_envpoolpy (source:
#: docs/rl-algorithms/ppo.md of vwxyzjn/cleanrl, runs openrlbenchmark/cleanrl/ppo_atari_envpool, tag
#: pr-424). Only the 10M-step end points are published as numbers; the curve before them is a figure.
PUBLISHED = {
    "Pong": {"steps": 10_000_000, "mean": 20.45, "std": 0.09},
    "BeamRider": {"steps": 10_000_000, "mean": 2501.85, "std": 210.52},
    "Breakout": {"steps": 10_000_000, "mean": 211.24, "std": 151.84},
}
PUBLISHED_SOURCE = ("https://docs.cleanrl.dev/rl-algorithms/ppo/#ppo_atari_envpoolpy, 'Experiment results' "
                    "(openrlbenchmark/cleanrl/ppo_atari_envpool, tag pr-424)")
#: the Figure 7 grid: runs per method (methods x hyperparameter values x 3 seeds), 8 games x 10M steps each
FIG7_RUNS = {"finetune": 3, "ewc": 9, "mas": 6, "agscl": 6}
FIG7_STEPS_PER_RUN = 8 * 10_000_000


@dataclass
class CheckArgs:
    smoke: bool = False
    """the same steps, tiny, on the CPU (a pipeline check: measures nothing)"""
    out: str = "runs/bench/gpu_check.json"
    """the JSON report"""
    envs: tuple[int, ...] = (8, 64, 128)
    """throughput: environment counts"""
    methods: tuple[str, ...] = ("finetune", "agscl")
    """throughput: methods"""
    updates: int = 3
    """throughput: PPO updates per timed run"""
    game: str = "Breakout"
    """learning check: the game (one of PUBLISHED)"""
    learning_seconds: float = 150.0
    """learning check: training time to aim for (steps = calibrated steps/s x this)"""
    sections: tuple[str, ...] = SECTIONS
    """which sections to run"""


# --------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """The CPU (model, flags, cores, threads; :func:`common.runio.machine`) and the GPU in detail."""
    info: dict[str, Any] = {**runio.machine(), "platform": platform.platform(), "versions": versions()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                       "capability": f"{p.major}.{p.minor}", "count": torch.cuda.device_count(),
                       "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}
    else:
        info["gpu"] = None
    return info


def cuda_tests(args: CheckArgs) -> dict[str, Any]:
    """``pytest -m cuda`` over the test files that hold CUDA tests (listed by their marker)."""
    files = sorted(f for f in glob.glob(os.path.join(ROOT, "tests", "test_*.py")) if "pytest.mark.cuda" in open(f).read())
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = (out.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", last)}
    return {"files": [os.path.relpath(f, ROOT) for f in files], "returncode": out.returncode, "summary": last,
            **counts, "ok": out.returncode in (0, 5) and not counts.get("failed") and not counts.get("error"),
            **({} if out.returncode in (0, 5) else {"output_tail": (out.stdout + out.stderr)[-4000:]})}


# --------------------------------------------------------------------------------------------
def _tiny(args: CheckArgs) -> list[str]:
    """Smoke mode: a small network and schedule, the same code path."""
    return ["--width", "1", "--channels", "8", "16", "16", "--hidden", "64", "--update-epochs", "1",
            "--num-minibatches", "2", "--num-steps", str(_num_steps(args)), "--no-cuda", "--torch-threads", "1",
            "--bf16", "off"] if args.smoke else []


def _num_steps(args: CheckArgs) -> int:
    return 16 if args.smoke else 64  # --preset paper: 64


def _quiet_run(argv: list[str]) -> dict[str, Any]:
    """One in-process agent run (its per-update lines silenced); its results."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        rc = ppo_continual.main(argv)
    run_dir = os.path.join(argv[argv.index("--runs-dir") + 1], argv[argv.index("--run-name") + 1])
    if rc != 0:
        raise RuntimeError(f"agent exited with {rc}: {' '.join(argv)}")
    return load_results(run_dir)


def _no_eval(runs: str, name: str) -> list[str]:
    return ["--eval-every", "0", "--eval-episodes", "1", "--random-episodes", "1", "--eval-envs", "1",
            "--eval-max-frames", "400", "--importance-obs", "256", "--checkpoint-every", "0",
            "--checkpoint-minutes", "0", "--runs-dir", runs, "--run-name", name]


def throughput(args: CheckArgs, runs: str) -> dict[str, Any]:
    """Training steps/s under --preset paper per method and environment count."""
    rows = []
    for n in args.envs:
        for method in args.methods:
            steps = args.updates * n * _num_steps(args)
            argv = ["--preset", "paper", "--games", "Boxing", "--method", method, "--num-envs", str(n),
                    "--steps-per-game", str(steps), *_tiny(args), *_no_eval(runs, f"tp_{method}_{n}")]
            res = _quiet_run(argv)
            info = res["games_info"][0]
            rows.append({"method": method, "num_envs": n, "steps": info["steps"], "train_seconds": info["train_seconds"],
                         "steps_per_s": info["train_sps"]})
            print(f"  throughput {method:8s} {n:4d} envs: {info['train_sps']:9.0f} steps/s", flush=True)
    return {"preset": "paper", "game": "Boxing", "updates": args.updates, "rows": rows}


def parts(args: CheckArgs, device: torch.device) -> dict[str, Any]:
    """bench/agent_throughput.py's per-part costs on this device."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import agent_throughput

    bench = agent_throughput.BenchArgs(mode="parts", smoke=args.smoke, device=device.type, part_compile=False,
                                       env_seconds=0.5 if args.smoke else 3.0,
                                       part_networks=("nature_cnn",) if args.smoke else ("nature_cnn", "paper_4x"))
    return agent_throughput.parts(bench)


def learning(args: CheckArgs, runs: str) -> dict[str, Any]:
    """cleanrl's settings on one game for about --learning-seconds, against the random policy."""
    base = ["--games", args.game, "--method", "finetune", *_tiny(args), *(["--num-envs", "4"] if args.smoke else [])]
    batch = 4 * _num_steps(args) if args.smoke else 8 * 128
    calib = _quiet_run([*base, "--steps-per-game", str(2 * batch), *_no_eval(runs, "learn_calibration")])
    sps = calib["games_info"][0]["train_sps"]
    steps = max(batch, int(sps * args.learning_seconds) // batch * batch)
    episodes = 2 if args.smoke else 10
    res = _quiet_run([*base, "--steps-per-game", str(steps), "--eval-every", "0", "--eval-episodes", str(episodes),
                      "--random-episodes", str(episodes), "--eval-envs", str(episodes), "--checkpoint-every", "0",
                      *(["--eval-max-frames", "400"] if args.smoke else []),
                      "--runs-dir", runs, "--run-name", "learn"])
    score = res["timeline"][-1]["scores"][args.game]
    rand = res["random"][args.game]
    se = math.sqrt(score["std"] ** 2 / score["episodes"] + rand["std"] ** 2 / rand["episodes"])
    return {"game": args.game, "steps": res["games_info"][0]["steps"], "train_seconds": res["games_info"][0]["train_seconds"],
            "eval_mean": score["mean"], "eval_std": score["std"], "episodes": score["episodes"],
            "random_mean": rand["mean"], "random_std": rand["std"],
            "above_random": bool(score["mean"] > rand["mean"] + 2 * se),
            "published": {**PUBLISHED.get(args.game, {}), "source": PUBLISHED_SOURCE},
            "note": "cleanrl publishes the 10M-step end point as a number; at this step count compare with its "
                    "learning-curve figure (same page)"}


def kill_resume(args: CheckArgs, runs: str) -> dict[str, Any]:
    """A two-game --preset paper run killed with SIGKILL after a mid-game checkpoint of game 2, then resumed."""
    n, updates = (4, 2) if args.smoke else (16, 4)
    batch = n * _num_steps(args)
    argv = ["--preset", "paper", "--games", "Boxing", "Pong", "--method", "agscl", "--num-envs", str(n),
            "--steps-per-game", str(updates * batch), *_tiny(args), *_no_eval(runs, "killed")]
    argv[argv.index("--checkpoint-every") + 1] = str(batch)
    proc = subprocess.Popen([sys.executable, "-u", os.path.join(ROOT, "agents", "ppo_continual.py"), *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(240, proc.kill)
    watchdog.start()
    killed_at, in_game_two, tail = None, False, []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            tail = (tail + [line.rstrip()])[-5:]
            in_game_two = in_game_two or " game 2/2:" in line
            if in_game_two and " checkpoint " in line and line.rstrip().endswith("latest.pt"):
                killed_at = int(line.split()[0].split("=")[1])
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.wait()
    if killed_at is None:
        raise RuntimeError(f"the run ended before a mid-game checkpoint of game 2 (exit {proc.returncode}): {tail}")
    run_dir = os.path.join(runs, "killed")
    before = load_results(run_dir)["progress"]
    res = _quiet_run(["--resume", run_dir, "--runs-dir", runs, "--run-name", "killed"])
    kinds = [(v["kind"], v["global_step"]) for v in res["versions"]]
    ok = (proc.returncode == -signal.SIGKILL and res["progress"]["status"] == "finished"
          and res["progress"]["global_step"] == 2 * updates * batch and kinds == [("start", 0), ("resume", killed_at)])
    return {"killed_at_global_step": killed_at, "progress_at_kill": before, "progress_after": res["progress"],
            "starts": kinds, "exit_code_of_killed": proc.returncode, "ok": bool(ok)}


# --------------------------------------------------------------------------------------------
def fig7_cost(report: dict[str, Any]) -> dict[str, Any] | None:
    """GPU-hours of the Figure 7 grid from the measured 128-env steps/s (ewc, mas at finetune's rate)."""
    rows = report.get("throughput", {}).get("rows", [])
    rate = {r["method"]: r["steps_per_s"] for r in rows if r["num_envs"] == max(r2["num_envs"] for r2 in rows)}
    if "finetune" not in rate:
        return None
    per_run = {m: FIG7_STEPS_PER_RUN / rate.get(m, rate["finetune"]) / 3600 for m in FIG7_RUNS}
    total = sum(FIG7_RUNS[m] * per_run[m] for m in FIG7_RUNS)
    return {"gpu_hours_per_run_training_only": per_run, "gpu_hours_total_training_only": total,
            "wall_hours_on_8_gpus": total / 8, "runs": FIG7_RUNS,
            "note": "training only, one run per GPU; evaluations (30 games per learned game at every --eval-every) add more"}


def _clean(obj: Any) -> Any:
    """Strict JSON: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def print_table(report: dict[str, Any]) -> None:
    m = report.get("machine", {})
    gpu = (m.get("gpu") or {}).get("name", "no GPU")
    print(f"\nGPU check on {gpu}; CPU {m.get('cpu_model')} ({m.get('usable_cpus')} usable CPUs, torch threads "
          f"{m.get('torch_threads')}, flags {' '.join(m.get('cpu_flags', []))}); smoke={report['config']['smoke']}")
    print(f"{'section':12s} {'seconds':>8s}  result")
    for name in SECTIONS:
        if name not in report["seconds"]:
            continue
        value = report.get(name)
        if name in report["errors"]:
            text = "ERROR " + report["errors"][name][:90]
        elif name == "cuda_tests":
            text = value["summary"]
        elif name == "throughput":
            text = ", ".join(f"{r['method']}@{r['num_envs']}={r['steps_per_s']:.0f}" for r in value["rows"]) + " steps/s"
        elif name == "parts":
            text = "; ".join(f"{k}: " + ", ".join(f"{kk}={vv:.2f}" for kk, vv in v.items() if "plain" not in kk)
                             for k, v in value["networks"].items()) + f"; env 8 envs {value['env_step_8_envs_ms']:.2f} ms"
        elif name == "learning":
            text = (f"{value['game']} {value['steps']} steps: {value['eval_mean']:.1f} vs random {value['random_mean']:.1f} "
                    f"(above random: {value['above_random']}); cleanrl 10M: {value['published'].get('mean')}")
        elif name == "kill_resume":
            text = f"killed at {value['killed_at_global_step']}, resumed, finished: {value['ok']}"
        else:
            text = value.get("cpu_model", "") if isinstance(value, dict) else str(value)
        print(f"{name:12s} {report['seconds'][name]:8.1f}  {text}")
    if report.get("fig7"):
        f = report["fig7"]
        print(f"Figure 7 grid (training only): {f['gpu_hours_total_training_only']:.0f} GPU-hours, "
              f"{f['wall_hours_on_8_gpus']:.1f} h on 8 GPUs")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(CheckArgs, argv, description=__doc__.split("\n\n")[0])
        check_output_file(args.out, "--out")  # its folder is created by the first write (a fresh clone has no runs/)
    except ValueError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        print(f"gpu_check: error: unknown section {bad[0]!r}: choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.smoke:
        args.envs, args.updates, args.learning_seconds = (4,), 1, 1.0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        torch.set_num_threads(1)
    report: dict[str, Any] = {"config": asdict(args), "device": device.type, "seconds": {}, "errors": {}}
    runs = tempfile.mkdtemp(prefix="gpu_check_")  # the sections' scratch runs, removed at the end
    steps: dict[str, Callable[[], Any]] = {
        "machine": machine, "cuda_tests": lambda: cuda_tests(args), "throughput": lambda: throughput(args, runs),
        "parts": lambda: parts(args, device), "learning": lambda: learning(args, runs),
        "kill_resume": lambda: kill_resume(args, runs)}
    start = time.time()
    try:
        for name in args.sections:
            t0 = time.time()
            print(f"[{time.time() - start:5.0f}s] {name}", flush=True)
            try:
                report[name] = steps[name]()
            except Exception as exc:  # recorded, and the next section still runs
                report["errors"][name] = f"{exc.__class__.__name__}: {exc}"
                report.setdefault("tracebacks", {})[name] = traceback.format_exc()[-3000:]
            report["seconds"][name] = time.time() - t0
            report["fig7"] = fig7_cost(report)
            write_json_atomic(args.out, _clean(report))
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    report["total_seconds"] = time.time() - start
    write_json_atomic(args.out, _clean(report))
    print_table(report)
    print(f"report: {args.out} ({report['total_seconds']:.0f}s)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
