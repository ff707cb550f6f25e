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


def _baseline(a: np.ndarray, baseline: np.ndarray | list | None) -> np.ndarray | None:
    if baseline is None:
        return None
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (a.shape[0],):
        raise ValueError(f"baseline needs one score per task ({a.shape[0]}), got shape {b.shape}")
    return b


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where ``den > 0``, NaN elsewhere (no division warnings)."""
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=np.asarray(den) > 0)
    return out


def plasticity_per_task(matrix: np.ndarray | list, reference_diag: np.ndarray | list,
                        baseline: np.ndarray | list | None = None) -> np.ndarray:
    """``A[i, i] / A*_i``: how well each task is learned relative to fine-tuning.

    With ``baseline`` (RL: each game's random-policy score ``R``) both scores are shifted first,
    ``(A[i, i] - R_i) / (A*_i - R_i)``, and a task the reference never learned above its
    baseline gives NaN: a ratio of raw returns means nothing when they can be 0 or negative.
    """
    a = _square(matrix)
    ref = np.asarray(reference_diag, dtype=np.float64)
    if ref.shape != (a.shape[0],):
        raise ValueError(f"reference needs one score per task ({a.shape[0]}), got shape {ref.shape}")
    b = _baseline(a, baseline)
    if b is None:
        return np.diag(a) / ref
    return _ratio(np.diag(a) - b, ref - b)


def stability_per_task(matrix: np.ndarray | list, baseline: np.ndarray | list | None = None) -> np.ndarray:
    """``A[T, j] / max_{j<=i<=T} A[i, j]``: how much of its best score each task keeps.

    With ``baseline`` the scores are shifted by it first, ``(A[T, j] - R_j) / max_i (A[i, j] - R_j)``:
    1 keeps the whole gain over random, 0 is back at random, below 0 is worse than random;
    NaN for a task never learned above its baseline (nothing to keep).
    """
    a = _square(matrix)
    last = a.shape[0] - 1
    b = _baseline(a, baseline)
    if b is None:
        return np.array([a[last, j] / a[j:, j].max() for j in range(a.shape[0])])
    shifted = a - b[None, :]
    best = np.array([shifted[j:, j].max() for j in range(a.shape[0])])
    return _ratio(shifted[last], best)


def plasticity(matrix: np.ndarray | list, reference_diag: np.ndarray | list,
               baseline: np.ndarray | list | None = None) -> float:
    """P of the paper: mean of :func:`plasticity_per_task` (over defined tasks)."""
    return _mean(plasticity_per_task(matrix, reference_diag, baseline))


def stability(matrix: np.ndarray | list, baseline: np.ndarray | list | None = None) -> float:
    """S of the paper: mean of :func:`stability_per_task` (over defined tasks)."""
    return _mean(stability_per_task(matrix, baseline))


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def forgetting_per_task(matrix: np.ndarray | list) -> np.ndarray:
    """Per task ``j < T``: ``max_{j<=i<T} A[i, j] - A[T, j]`` (Chaudhry et al.); empty for one task."""
    a = _square(matrix)
    last = a.shape[0] - 1
    return np.array([a[j:last, j].max() - a[last, j] for j in range(last)])


def backward_transfer_per_task(matrix: np.ndarray | list) -> np.ndarray:
    """Per task ``j < T``: ``A[T, j] - A[j, j]`` (negative means forgetting); empty for one task."""
    a = _square(matrix)
    last = a.shape[0] - 1
    return np.array([a[last, j] - a[j, j] for j in range(last)])


def forgetting(matrix: np.ndarray | list) -> float:
    """Max-based forgetting: mean of :func:`forgetting_per_task` (0 for one task)."""
    per_task = forgetting_per_task(matrix)
    return float(per_task.mean()) if per_task.size else 0.0


def backward_transfer(matrix: np.ndarray | list) -> float:
    """BWT: mean of :func:`backward_transfer_per_task` (0 for one task)."""
    per_task = backward_transfer_per_task(matrix)
    return float(per_task.mean()) if per_task.size else 0.0
