"""Run-time plumbing of the agent: provenance, atomic checkpoint writes, RNG states."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import tyro


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
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
