"""Run-time plumbing of the agent: provenance, atomic checkpoint writes, RNG states."""

from __future__ import annotations

import os
import platform
import random
import signal
import subprocess
import threading
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import tyro

from agents.results import write_atomic


class UserError(Exception):
    """Bad input: reported as one line and exit code 2, before any environment is built."""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform(), "torch": str(torch.__version__),
           "numpy": str(np.__version__), "tyro": str(tyro.__version__)}
    for name in ("envpool", "ale_py", "gymnasium"):
        try:
            out[name] = str(__import__(name).__version__)
        except Exception:
            out[name] = "unavailable"
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out["git_commit"] = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                           timeout=5).stdout.strip() or "unknown"
    except Exception:
        out["git_commit"] = "unknown"
    return out


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`agents.results.write_atomic` (never a half-written checkpoint)."""
    write_atomic(path, lambda f: torch.save(obj, f))


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


class StopRequest:
    """SIGINT and SIGTERM ask the run to stop cleanly: the handler only records the signal, and
    the training loop checkpoints and exits at the end of the current update. A second SIGINT
    interrupts at once (KeyboardInterrupt). Handlers are installed only in the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
