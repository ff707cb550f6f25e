"""Memory aware synapses (Aljundi et al. 2018) on the trunk parameters.

Importance of a task: ``Omega_i = mean over inputs x of |d ||f(x)||_2^2 / d theta_i|`` with
``f`` the task's output head on the trunk, per-sample gradients from ``torch.func``, model in
eval mode (dropout off; train/eval flags restored). No labels are needed.

Across tasks the importances are *summed* (``Omega <- Omega + Omega_t``, as the original MAS
and the released AGS-CL baseline accumulate them) and one anchor, the parameters after the
latest task, is kept. Penalty: ``lam/2 * sum_i Omega_i (theta_i - theta*_i)^2``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from agscl._weightwise import WeightwiseMethod, per_sample_grad_mean
from agscl.base import HeadSpec, Hparam


def mas_importance(trunk: nn.Module, head: nn.Module, names: Sequence[str], inputs: Iterable[Any]) -> list[torch.Tensor]:
    """Mean absolute per-sample gradient of the squared L2 norm of ``head(trunk(x))``."""

    def expand(x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.zeros(x.shape[0], device=x.device)  # no aux data

    def squared_norm(out: torch.Tensor, _aux: torch.Tensor) -> torch.Tensor:
        return out.square().sum()

    return per_sample_grad_mean(trunk, head, names, inputs, squared_norm, expand, torch.abs)


class MAS(WeightwiseMethod):
    """MAS: output-sensitivity importance, summed over tasks, latest anchor."""

    name = "mas"
    hparams = (Hparam("lam", 1.0, "penalty strength", low=0.0, high=math.inf, high_open=True, rl_flag="mas_lambda"),)

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, lam: float) -> None:
        super().__init__(trunk, heads, lam=lam)

    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        omega = mas_importance(self.trunk, self.output_head(task), self.names, inputs)
        if 0 in self.terms:
            omega = [old + new for old, new in zip(self.terms[0][0], omega)]
        self.terms[0] = (omega, self.snapshot())
        super().end_task(task, inputs)


__all__ = ["MAS", "mas_importance"]
