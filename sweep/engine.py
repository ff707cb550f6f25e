"""Schedule a sweep's trials on Ray (this machine or a cluster) or, without Ray, one after another.

Both engines call :func:`sweep.launch.run_trial` per trial and differ only in where it runs.
Trials measured against a fine-tuning trial start once it has finished. The driver prints one
line per state change of a trial, draws an overall bar with an ETA, and keeps
``<sweep dir>/sweep.json`` (the spec, every trial's command and state) up to date.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sweep.launch import LaunchOptions, Outcome, command, is_finished, run_trial, write_text_atomic
from sweep.spec import Spec, SweepError, Trial

SWEEP_FORMAT = "agscl-sweep/1"
TERMINAL = ("finished", "skipped", "failed", "blocked")


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class EngineOptions:
    engine: str = "auto"
    """auto (ray when installed), ray or sequential"""
    address: str | None = None
    """Ray cluster address (``auto`` or host:port of ``ray start --head``); default: a local instance"""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    retries: int = 2
    progress: bool = True

    def resolved_engine(self) -> str:
        if self.engine == "auto" and not self.address:
            return "ray" if ray_available() else "sequential"
        if self.engine in ("auto", "ray") and not ray_available():
            raise SweepError('ray is not installed here: pip install -e ".[sweep]" (or --engine sequential)')
        if self.engine not in ("auto", "ray", "sequential"):
            raise SweepError(f"unknown engine {self.engine!r}: choose auto, ray or sequential")
        if self.address and self.engine == "sequential":
            raise SweepError("--address needs the ray engine")
        return "ray" if self.engine == "auto" else self.engine


def init_ray(options: EngineOptions) -> None:
    """Connect to ``--address`` or start a local instance with this machine's cores."""
    import ray

    from sweep.launch import ROOT

    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    for attempt in (1, 2):  # a local raylet gets 30 s to start: not always enough on a loaded machine
        try:
            ray.init(address=options.address or "local", include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
            return
        except Exception as exc:  # noqa: BLE001 - ray raises plain Exception here
            ray.shutdown()
            if attempt == 2 or options.address:
                where = options.address or "a local instance"
                hint = ""
                if options.address and not os.environ.get("RAY_AUTH_MODE"):
                    # Ray >= 2.59 starts `ray start --head` with token authentication, but a client
                    # of a remote address sends the token only with RAY_AUTH_MODE=token (Ray 2.60).
                    hint = ("; if the cluster uses token authentication (the default of `ray start` since Ray 2.59), "
                            "set RAY_AUTH_MODE=token, with its token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
                raise RuntimeError(f"could not start Ray ({where}): {str(exc).splitlines()[0]}{hint}") from None


class Progress:
    """One line per trial state change on stdout, an overall bar with ETA on stderr."""

    def __init__(self, names: list[str], enabled: bool, on_change: Callable[[], None] = lambda: None,
                 total: int | None = None) -> None:
        from tqdm.auto import tqdm

        self.states: dict[str, dict[str, Any]] = {n: {"state": "pending"} for n in names}
        self.total = len(names) if total is None else total
        self.bar = tqdm(total=self.total, unit="trial", desc="sweep", file=sys.stderr, dynamic_ncols=True,
                        disable=not enabled, smoothing=0.0)
        self.on_change = on_change

    def __call__(self, name: str, state: str, detail: str = "", **extra: Any) -> None:
        record = self.states.setdefault(name, {})
        if record.get("state") in TERMINAL and state not in TERMINAL:
            return  # a late message from a trial that has already ended
        record.update(state=state, detail=detail, **extra)
        done = sum(r["state"] in TERMINAL for r in self.states.values())
        stamp = time.strftime("%H:%M:%S")
        self.bar.write(f"[{stamp} {done}/{self.total}] {name}: {state}{f' ({detail})' if detail else ''}", file=sys.stdout)
        sys.stdout.flush()
        if state in TERMINAL:
            self.bar.update(1)
        self.on_change()

    def put(self, item: tuple[str, str, str]) -> None:
        self(*item)

    def close(self) -> None:
        self.bar.close()


@dataclass
class SweepResult:
    sweep_dir: Path
    trials: list[Trial]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    engine: str = "sequential"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.state in ("finished", "skipped") for o in self.outcomes.values()) and len(self.outcomes) == len(self.trials)


def _previous_trials(path: Path) -> dict[str, dict[str, Any]]:
    """Trial records of earlier runs of this sweep directory (kept in sweep.json when the spec grows)."""
    try:
        return {t["name"]: t for t in json.loads(path.read_text()).get("trials", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _check_same_sweep(sweep_dir: Path, previous: dict[str, dict[str, Any]], trials: list[Trial]) -> None:
    """A finished trial is skipped only if it was run with the same flags."""
    for trial in trials:
        before = previous.get(trial.name)
        if before is not None and before.get("flags") != list(trial.flags) and Path(trial.run_dir).exists():
            raise SweepError(f"{sweep_dir} holds trial {trial.name} run with other flags: use another --dir or remove it")


def _write_state(path: Path, spec: Spec, trials: list[Trial], progress: Progress, engine: str,
                 previous: dict[str, dict[str, Any]]) -> None:
    current = [{"name": t.name, "method": t.method, "variant": t.variant, "seed": t.seed, "params": dict(t.params), "label": t.label,
                "reference": t.reference, "flags": list(t.flags),
                "command": command(t, path.parent, False)[1:], **progress.states[t.name]} for t in trials]
    names = {t.name for t in trials}
    payload = {
        "format": SWEEP_FORMAT,
        "spec": asdict(spec),
        "engine": engine,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "trials": current + [r for n, r in previous.items() if n not in names],
    }
    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def run_sweep(spec: Spec, sweep_dir: str | Path, options: EngineOptions, cwd: str | None = None) -> SweepResult:
    """Run every trial of ``spec`` in ``sweep_dir`` that has not finished yet."""
    engine = options.resolved_engine()
    sweep_dir = Path(sweep_dir).resolve()
    trials = spec.trials(sweep_dir)
    state_path = sweep_dir / "sweep.json"
    previous = _previous_trials(state_path)
    _check_same_sweep(sweep_dir, previous, trials)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, int(round(options.cpus_per_trial)))
    launch = LaunchOptions(str(sweep_dir), options.retries, threads, cwd or os.getcwd())
    result = SweepResult(sweep_dir, trials, engine=engine)
    progress = Progress([t.name for t in trials], options.progress,
                        lambda: _write_state(state_path, spec, trials, progress, engine, previous))
    start = time.monotonic()
    try:
        for trial in trials:  # finished earlier: skipped without a worker
            if is_finished(trial):
                result.outcomes[trial.name] = Outcome(trial.name, "skipped")
                progress(trial.name, "skipped", "finished earlier")
        todo = [t for t in trials if t.name not in result.outcomes]
        if engine == "ray" and todo:
            _run_ray(todo, launch, options, progress, result)
        else:
            _run_sequential(todo, launch, progress, result)
    finally:
        progress.close()
        result.seconds = time.monotonic() - start
    return result


def _ready(trial: Trial, outcomes: dict[str, Outcome]) -> bool | None:
    """True: can start; False: its reference is still running; None: its reference failed."""
    if trial.reference is None:
        return True
    ref = outcomes.get(trial.reference)
    if ref is None:
        return False
    return True if ref.state in ("finished", "skipped") else None


def _settle(outcome: Outcome, progress: Progress, result: SweepResult) -> None:
    """Record a finished attempt. A trial's exit code 2 (its trainer refused its input) is that
    trial's failure, not the sweep's bad input: it is reported, not retried, and the other trials
    carry on (the sweep validated its own input before starting; its exit code is 1 at the end)."""
    if outcome.state == "usage":
        outcome = Outcome(outcome.name, "failed", outcome.rc, outcome.attempts, outcome.seconds,
                          f"its trainer refused its input (exit code 2, not retried): {outcome.error}")
        result.outcomes[outcome.name] = outcome
        progress(outcome.name, "failed", outcome.error or "", seconds=round(outcome.seconds, 3), attempts=outcome.attempts)
        return
    result.outcomes[outcome.name] = outcome
    detail = (f"{outcome.seconds:.1f} s, attempt {outcome.attempts}" if outcome.state == "finished"
              else "finished earlier" if outcome.state == "skipped"
              else f"exit code {outcome.rc} after {outcome.attempts} attempts: {outcome.error}")
    progress(outcome.name, outcome.state, detail, seconds=round(outcome.seconds, 3), attempts=outcome.attempts)


def _block_dependents(todo: list[Trial], progress: Progress, result: SweepResult) -> list[Trial]:
    """Trials whose reference failed are not run; returns the rest."""
    keep = []
    for trial in todo:
        if _ready(trial, result.outcomes) is None:
            result.outcomes[trial.name] = Outcome(trial.name, "blocked", error=f"reference {trial.reference} failed")
            progress(trial.name, "blocked", f"its reference {trial.reference} failed")
        else:
            keep.append(trial)
    return keep


def _run_sequential(todo: list[Trial], launch: LaunchOptions, progress: Progress, result: SweepResult) -> None:
    for trial in todo:  # already ordered: references first
        if _block_dependents([trial], progress, result):
            _settle(run_trial(trial, launch, progress), progress, result)


class _Events:
    """A Ray actor holding the trials' state changes until the driver prints them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []

    def put(self, item: tuple[str, str, str]) -> None:
        self.items.append(item)

    def drain(self) -> list[tuple[str, str, str]]:
        items, self.items = self.items, []
        return items


@dataclass(frozen=True)
class _EventSink:
    """Fire and forget: a task blocked in ``ray.get`` lends its CPU to another task, which would
    run more trials at once than the machine has cores."""

    actor: Any

    def put(self, item: tuple[str, str, str]) -> None:
        self.actor.put.remote(item)


def _run_ray(todo: list[Trial], launch: LaunchOptions, options: EngineOptions, progress: Progress,
             result: SweepResult) -> None:
    import ray

    if not ray.is_initialized():
        init_ray(options)
    events = ray.remote(num_cpus=0)(_Events).remote()
    sink = _EventSink(events)
    remote = ray.remote(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial,
                        max_retries=options.retries)(run_trial)
    running: dict[Any, Trial] = {}
    waiting = list(todo)

    def drain() -> None:
        for item in ray.get(events.drain.remote()):
            progress.put(item)

    try:
        while waiting or running:
            waiting = _block_dependents(waiting, progress, result)
            for trial in [t for t in waiting if _ready(t, result.outcomes)]:
                waiting.remove(trial)
                running[remote.remote(trial, launch, sink)] = trial
                progress(trial.name, "queued")
            if not running:
                continue
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            drain()
            for ref in done:
                trial = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died more often than --retries
                    outcome = Outcome(trial.name, "failed", None, options.retries + 1, error=str(exc).splitlines()[0])
                drain()
                _settle(outcome, progress, result)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        drain()
