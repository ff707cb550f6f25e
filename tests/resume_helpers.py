"""A method resumed from a saved state, as a learner rebuilds it after a restart (shared by the
AGS-CL and plasticity resume tests)."""

from __future__ import annotations

from typing import Any, Callable

import torch


def restore(build: Callable[[], tuple[Any, Any, Any]], saved: dict[str, Any], lr: float = 0.01) -> tuple[Any, Any, Any, Any]:
    """A fresh ``(trunk, heads, method)`` from ``build()`` with ``saved``'s trunk, heads, method
    and Adam states loaded; returns them and the Adam."""
    trunk, heads, method = build()
    trunk.load_state_dict(saved["trunk"])
    heads.load_state_dict(saved["heads"])
    opt = torch.optim.Adam(list(trunk.parameters()) + list(heads.parameters()), lr=lr)
    opt.load_state_dict(saved["opt"])
    method.load_state_dict(saved["method"])
    return trunk, heads, method, opt
