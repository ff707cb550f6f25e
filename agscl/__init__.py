"""Continual-learning regularizers behind one protocol: AGS-CL and its baselines (pure torch)."""

from agscl.base import ContinualMethod, FineTune, task_heads

__all__ = ["ContinualMethod", "FineTune", "task_heads"]
