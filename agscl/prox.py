"""The two closed-form proximal operators of AGS-CL (paper eq. 6-7), one group per row.

Both are exact: a group below its threshold becomes exactly zero (soft threshold) or exactly
its anchor (drift shrink), with no epsilon, and a zero-norm group yields no NaN.
"""

from __future__ import annotations

import torch


def _per_row(tau: float | torch.Tensor, rows: int, like: torch.Tensor) -> torch.Tensor:
    tau = torch.as_tensor(tau, dtype=like.dtype, device=like.device)
    if tau.ndim == 0:
        return tau.expand(rows)
    if tau.shape != (rows,):
        raise ValueError(f"tau must be a scalar or hold one value per row ({rows}), got shape {tuple(tau.shape)}")
    return tau


def shrink_factor(norm: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``max(0, 1 - tau/norm)``: exactly 0 when ``norm <= tau``, and 0 (not NaN) for
    ``norm == tau == 0``, where the row already equals its target and any factor is right."""
    return (1.0 - tau / norm).clamp_min_(0.0).nan_to_num_(0.0)


def group_soft_threshold(theta: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """``prox`` of ``tau * ||row||_2`` per row: ``max(0, 1 - tau/||row||) * row``.

    ``theta`` is 2-D (groups x group size); ``tau`` >= 0 a scalar or one value per row.
    """
    if theta.ndim != 2:
        raise ValueError(f"theta must be 2-D (one group per row), got {theta.ndim}-D")
    tau = _per_row(tau, theta.shape[0], theta)
    norm = torch.linalg.vector_norm(theta, dim=1)
    return theta * shrink_factor(norm, tau).unsqueeze(1)


def drift_shrink(theta: torch.Tensor, anchor: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """``prox`` of ``tau * ||row - anchor_row||_2`` per row (Lemma 1).

    Returns ``gamma * theta + (1 - gamma) * anchor`` with
    ``gamma = max(0, 1 - tau/||theta - anchor||)``: rows closer than ``tau`` to their anchor
    become exactly the anchor (frozen).
    """
    if theta.ndim != 2 or anchor.shape != theta.shape:
        raise ValueError(f"theta and anchor must be 2-D of equal shape, got {tuple(theta.shape)} and {tuple(anchor.shape)}")
    tau = _per_row(tau, theta.shape[0], theta)
    gamma = shrink_factor(torch.linalg.vector_norm(theta - anchor, dim=1), tau).unsqueeze(1)
    return gamma * theta + (1.0 - gamma) * anchor
