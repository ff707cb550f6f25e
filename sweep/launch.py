"""Run one trial to its end: skip it when finished, resume it from its checkpoint, retry it when it dies.

The same function runs in the sweep's own process (sequential engine) and inside a Ray task,
so both engines write the same files: the trial's run directory (the trainer's own output)
and ``<sweep dir>/logs/<trial>.log`` (its stdout and stderr, one header line per attempt).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from sweep.spec import TRAINERS, Trial

ROOT = Path(__file__).resolve().parents[1]
EXIT_USAGE = 2
LOCK_WAIT_S = 120.0


class Sink(Protocol):
    """Where a trial reports its state changes: ``put((trial name, state, detail))``."""

    def put(self, item: tuple[str, str, str]) -> Any: ...


@dataclass(frozen=True)
class LaunchOptions:
    sweep_dir: str
    retries: int = 2
    """attempts after the first one when a trial dies (bad input, exit code 2, is never retried)"""
    threads: int = 1
    """OMP_NUM_THREADS of the trainer: its CPU share"""
    cwd: str | None = None
    """working directory of the trainer (relative paths in its flags); default: the project root"""


@dataclass
class Outcome:
    name: str
    state: str
    """finished, skipped (finished earlier), failed, or usage (bad input: exit code 2)"""
    rc: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's results.json, or None while it has none (or it is being replaced)."""
    try:
        data = json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(trial: Trial) -> bool:
    results = read_results(trial.run_dir)
    return results is not None and TRAINERS[trial.trainer].finished(results)


def write_text_atomic(path: Path, text: str) -> None:
    """Readers (a dashboard, a re-run) never see a half-written file (:func:`common.runio.write_text_atomic`)."""
    from common.runio import write_text_atomic as write

    path.parent.mkdir(parents=True, exist_ok=True)
    write(str(path), text)


def log_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / "logs" / f"{name}.log"


def last_line(path: Path) -> str:
    """The trainer's last words (its one-line error on bad input)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 4096))
            lines = [l.strip() for l in handle.read().decode(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [l for l in lines if l]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def trial_lock(path: Path) -> Iterator[int]:
    """An exclusive lock on the trial, inherited by its trainer: a re-run waits until a trainer
    of a killed sweep is really gone before it touches the run directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield fd
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{path} is held by another process for {LOCK_WAIT_S:.0f} s: is this trial running elsewhere?")
                time.sleep(0.2)
        yield fd
    finally:
        os.close(fd)


def command(trial: Trial, sweep_dir: Path, resume: bool) -> list[str]:
    """The trainer's command line, as a user would type it."""
    trainer = TRAINERS[trial.trainer]
    fresh = trial.argv(sweep_dir)
    argv = trainer.resume_argv(fresh, Path(trial.run_dir)) if resume else fresh
    return [sys.executable, "-m", trainer.module, *argv]


def _environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env["AGSCL_SWEEP_PARENT"] = str(os.getpid())
    return env


def run_trial(trial: Trial, options: LaunchOptions, sink: Sink | None = None) -> Outcome:
    """Run ``trial`` until it finishes, fails ``options.retries + 1`` times, or reports bad input."""

    def emit(state: str, detail: str = "") -> None:
        if sink is not None:
            sink.put((trial.name, state, detail))

    sweep_dir = Path(options.sweep_dir)
    run_dir = Path(trial.run_dir)
    log = log_path(sweep_dir, trial.name)
    cwd = options.cwd if options.cwd and os.path.isdir(options.cwd) else str(ROOT)
    start = time.monotonic()
    with trial_lock(log.with_suffix(".lock")) as lock_fd:
        if is_finished(trial):
            return Outcome(trial.name, "skipped")
        rc: int | None = None
        for attempt in range(1, options.retries + 2):
            resume = (run_dir / TRAINERS[trial.trainer].checkpoint).is_file()
            if not resume and run_dir.exists():
                shutil.rmtree(run_dir)  # nothing resumable in it: start clean
            argv = command(trial, sweep_dir, resume)
            emit("running", f"attempt {attempt}, {'resumed from its checkpoint' if resume else 'fresh'}")
            with open(log, "a") as out:
                out.write(f"=== attempt {attempt} {time.strftime('%Y-%m-%d %H:%M:%S')} launcher {socket.gethostname()}:{os.getpid()}: "
                          f"{subprocess.list2cmdline(argv)}\n")
                out.flush()
                child = [argv[0], "-m", "sweep._child", *argv[2:]]
                rc = subprocess.call(child, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                     env=_environment(options.threads), pass_fds=(lock_fd,))
            if rc == 0 and is_finished(trial):
                return Outcome(trial.name, "finished", rc, attempt, time.monotonic() - start)
            error = last_line(log) if rc else "exited 0 without finishing its results"
            if rc == EXIT_USAGE:
                return Outcome(trial.name, "usage", rc, attempt, time.monotonic() - start, error)
            if attempt <= options.retries:
                emit("retrying", f"exit code {rc}: {error}")
        return Outcome(trial.name, "failed", rc, options.retries + 1, time.monotonic() - start, error)
