"""Run-time plumbing of the agent: provenance, atomic checkpoint writes, RNG states."""

from __future__ import annotations

import random
import signal
import threading
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from common.runio import torch_save_atomic, versions  # noqa: F401 (versions: re-exported for the agent)


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` written atomically (:func:`common.runio.torch_save_atomic`)."""
    torch_save_atomic(obj, path)


class UserError(Exception):
    """Bad input: reported as one line and exit code 2, before any environment is built."""


class NonFiniteLoss(Exception):
    """The loss became NaN/inf: the run stops, its last checkpoint is left untouched."""


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
