"""Elastic weight consolidation: per-task EWC (Kirkpatrick et al. 2017) and online EWC
(Schwarz et al. 2018), on the trunk parameters.

Importance is the diagonal of the *true* Fisher of the task's output head: for every input
``x`` of the task, ``fisher_samples`` labels ``y ~ softmax(head(trunk(x)))`` are drawn and
``F_i = mean over (x, y) of (d log p(y | x) / d theta_i)^2``, with per-sample gradients from
``torch.func`` (model in eval mode, so dropout is off; each module's train/eval flag is
restored afterwards). Labels come from torch's global RNG (seed it for reproducibility).

Penalty (see :mod:`agscl._weightwise` for the 1/2 convention):

- per-task (``online=False``): ``lam/2 * sum_t sum_i F_{t,i} (theta_i - theta*_{t,i})^2``,
  one (Fisher, anchor) pair per learned task (re-learning a task replaces its pair);
- online (``online=True``): one running ``F <- gamma * F + F_t`` and the latest anchor.
  ``gamma`` is ignored by the per-task variant.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agscl._weightwise import WeightwiseMethod, check_int, checked, per_sample_grad_mean
from agscl.base import HeadSpec, Hparam


def diagonal_fisher(
    trunk: nn.Module, head: nn.Module, names: Sequence[str], inputs: Iterable[Any], samples: int = 1
) -> list[torch.Tensor]:
    """Diagonal true Fisher of ``head(trunk(x))`` (logits) w.r.t. the trunk parameters ``names``.

    Per input batch, all labels are drawn at once with one ``torch.multinomial(probs, samples,
    replacement=True)`` call, so a seeded run is reproducible.
    """

    def expand(x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if logits.dim() != 2:
            raise ValueError(f"EWC needs (batch, classes) logits from the output head, got shape {tuple(logits.shape)}")
        if not torch.isfinite(logits).all():
            raise ValueError("EWC Fisher: the output head gave non-finite logits (has training diverged?)")
        labels = torch.multinomial(F.softmax(logits.float(), dim=1), samples, replacement=True)
        return x.repeat_interleave(samples, dim=0), labels.reshape(-1)

    def log_likelihood(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits, dim=-1).gather(0, label.unsqueeze(0)).squeeze(0)

    return per_sample_grad_mean(trunk, head, names, inputs, log_likelihood, expand, torch.square)


class EWC(WeightwiseMethod):
    """EWC with a diagonal true Fisher; ``online=True`` gives online EWC (registry "online_ewc")."""

    name = "ewc"
    hparams = (
        Hparam("lam", 5000.0, "penalty strength", low=0.0, high=math.inf, high_open=True, rl_flag="ewc_lambda", rl_default=1e4),
        Hparam("gamma", 1.0, "decay of the running Fisher", low=0.0, high=1.0, rl_flag="ewc_gamma"),
    )

    @classmethod
    def declared_hparams(cls, fixed: dict[str, Any]) -> tuple[Hparam, ...]:
        """``gamma`` only for online EWC."""
        return cls.hparams if fixed.get("online") else cls.hparams[:1]

    def __init__(
        self,
        trunk: nn.Module,
        heads: Sequence[HeadSpec],
        *,
        lam: float,
        online: bool = False,
        gamma: float = 1.0,
        fisher_samples: int = 1,
    ) -> None:
        super().__init__(trunk, heads, lam=lam)
        if not isinstance(online, bool):
            raise ValueError(f"online={online!r} is out of range: allowed online in {{True, False}}")
        self.online = online
        self.gamma = checked("gamma", gamma, 0.0, 1.0)
        self.fisher_samples = check_int("fisher_samples", fisher_samples, 1)
        if online:
            self.name = "online_ewc"

    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        fisher = diagonal_fisher(self.trunk, self.output_head(task), self.names, inputs, self.fisher_samples)
        anchor = self.snapshot()
        if self.online:
            if 0 in self.terms:
                fisher = [self.gamma * old + new for old, new in zip(self.terms[0][0], fisher)]
            self.terms[0] = (fisher, anchor)
        else:
            self.terms[task] = (fisher, anchor)
        super().end_task(task, inputs)


__all__ = ["EWC", "diagonal_fisher"]
