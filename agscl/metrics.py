"""Continual-learning metrics on a task-by-task score matrix (numpy, shared by RL and vision).

``A[i, j]`` is the score (accuracy or return) on task ``j`` after learning task ``i``; entries
with ``j > i`` (tasks not yet learned) are ignored and may be NaN. Definitions follow the
AGS-CL paper (Section 4.1, Analysis 3) and Chaudhry et al. (2018) for forgetting.
"""

from __future__ import annotations

import numpy as np


def _square(matrix: np.ndarray | list) -> np.ndarray:
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"score matrix must be square (tasks x tasks), got shape {a.shape}")
    return a


def average_score(matrix: np.ndarray | list) -> np.ndarray:
    """Mean score over the tasks learned so far, after each task: ``mean_{j<=i} A[i, j]``."""
    a = _square(matrix)
    return np.array([a[i, : i + 1].mean() for i in range(a.shape[0])])


def plasticity_per_task(matrix: np.ndarray | list, reference_diag: np.ndarray | list) -> np.ndarray:
    """``A[i, i] / A*_i``: how well each task is learned relative to fine-tuning."""
    a = _square(matrix)
    ref = np.asarray(reference_diag, dtype=np.float64)
    if ref.shape != (a.shape[0],):
        raise ValueError(f"reference needs one score per task ({a.shape[0]}), got shape {ref.shape}")
    return np.diag(a) / ref


def stability_per_task(matrix: np.ndarray | list) -> np.ndarray:
    """``A[T, j] / max_{j<=i<=T} A[i, j]``: how much of its best score each task keeps."""
    a = _square(matrix)
    last = a.shape[0] - 1
    return np.array([a[last, j] / a[j:, j].max() for j in range(a.shape[0])])


def plasticity(matrix: np.ndarray | list, reference_diag: np.ndarray | list) -> float:
    """P of the paper: mean of :func:`plasticity_per_task`."""
    return float(plasticity_per_task(matrix, reference_diag).mean())


def stability(matrix: np.ndarray | list) -> float:
    """S of the paper: mean of :func:`stability_per_task`."""
    return float(stability_per_task(matrix).mean())


def forgetting(matrix: np.ndarray | list) -> float:
    """Max-based forgetting: mean over ``j < T`` of ``max_{i<T} A[i, j] - A[T, j]`` (0 for one task)."""
    a = _square(matrix)
    last = a.shape[0] - 1
    if last == 0:
        return 0.0
    return float(np.mean([a[j:last, j].max() - a[last, j] for j in range(last)]))


def backward_transfer(matrix: np.ndarray | list) -> float:
    """BWT: mean over ``j < T`` of ``A[T, j] - A[j, j]`` (negative means forgetting)."""
    a = _square(matrix)
    last = a.shape[0] - 1
    if last == 0:
        return 0.0
    return float(np.mean([a[last, j] - a[j, j] for j in range(last)]))
