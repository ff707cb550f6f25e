"""Continual-learning regularizers behind one protocol: AGS-CL and its baselines (pure torch)."""

from agscl.ags import AGSCL
from agscl.base import ContinualMethod, FineTune, task_heads
from agscl.prox import drift_shrink, group_soft_threshold
from agscl.registry import METHODS, make_method

__all__ = [
    "AGSCL",
    "ContinualMethod",
    "FineTune",
    "METHODS",
    "drift_shrink",
    "group_soft_threshold",
    "make_method",
    "task_heads",
]
