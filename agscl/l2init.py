"""L2 Init, regenerative regularization (Kumar, Marklund & Van Roy, CoLLAs 2023, "Maintaining
Plasticity in Continual Learning via Regenerative Regularization").

The penalty pulls the trunk toward its initial weights rather than toward the origin:

    penalty = l2init_lambda / 2 * ||theta - theta_0||^2

``theta_0`` is the trunk as the method finds it when built (the learners build it on the
freshly initialized, or pre-trained, network) and is part of :meth:`state_dict`, so a resumed
run pulls toward the same point. Kumar et al. write ``lambda * ||theta - theta_0||^2``: their
lambda is half of ``l2init_lambda`` here (this repository's 1/2 convention, as EWC's). The
gradient ``l2init_lambda * (theta - theta_0)`` can be added to ``.grad`` directly
(``fused_penalty``, the agent's ``--fused-penalty``). In a composition (:mod:`agscl.compose`)
protected elements are not pulled (their difference counts as zero).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from agscl.base import HeadSpec, Hparam, module_device
from agscl.plasticity import PlasticityMethod


class L2Init(PlasticityMethod):
    """``l2init_lambda/2 * ||theta - theta_0||^2`` over the trunk; see the module docstring."""

    name = "l2init"
    state_keys = ("generator", "hparams", "theta0")
    hparams = (
        # 0.01: Plasticine's regenerative-regularization weight (rr_weight = 0.01, RLE-Foundation/Plasticine,
        # plasticine/standard/ppo_procgen_rr.py, the PPO setting closest to ours); Kumar et al. tune lambda per problem
        Hparam("l2init_lambda", 0.01, "strength of the pull toward the initial trunk weights (lambda/2 ||theta - "
               "theta_0||^2)", low=0.0),
    )
    fused_penalty = True

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, l2init_lambda: float = 0.01) -> None:
        self.hparams[0].check(l2init_lambda)
        super().__init__(trunk, heads, seed=0)
        self.lam = float(l2init_lambda)
        self.names = [n for n, _ in self.trunk_parameters()]
        if not self.names:
            raise ValueError("the trunk has no trainable parameters to regularize")
        self.theta0 = [p.detach().clone() for p in self.params()]

    def params(self) -> list[torch.Tensor]:
        """The trunk's trainable parameters, looked up by name (robust to ``trunk.to``)."""
        named = dict(self.trunk.named_parameters())
        return [named[n] for n in self.names]

    def _diffs(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """``theta - theta_0`` per parameter, zero where protected."""
        protection = self.protect()
        diffs = torch._foreach_sub([p.detach() for p in params], self.theta0)
        for p, d in zip(params, diffs):
            mask = protection.get(p)
            if mask is not None:
                d.masked_fill_(mask, 0.0)
        return diffs

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=module_device(self.trunk))
        if self.lam == 0.0:
            return total
        protection = self.protect()
        for p, p0 in zip(self.params(), self.theta0):
            diff = p - p0
            mask = protection.get(p)
            if mask is not None:
                diff = diff.masked_fill(mask, 0.0)
            total = total + diff.square().sum()
        return 0.5 * self.lam * total

    @torch.no_grad()
    def add_penalty_grad(self) -> torch.Tensor:
        """``p.grad += lambda * (p - theta_0)`` (masked), the gradient of :meth:`penalty`, with
        multi-tensor kernels; returns the penalty's value."""
        total = torch.zeros((), device=module_device(self.trunk))
        if self.lam == 0.0:
            return total
        params = self.params()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        diffs = self._diffs(params)
        torch._foreach_add_([p.grad for p in params], diffs, alpha=self.lam)
        total = total + torch.stack([d.reshape(-1).dot(d.reshape(-1)) for d in diffs]).sum()
        return 0.5 * self.lam * total

    @torch.no_grad()
    def distance(self) -> float:
        """``||theta - theta_0||`` over the whole trunk (protected elements included)."""
        diffs = torch._foreach_sub([p.detach() for p in self.params()], self.theta0)
        return float(torch.stack([d.square().sum() for d in diffs]).sum().sqrt())

    def statistics(self) -> dict[str, float]:
        return {**super().statistics(), "anchor_floats": float(sum(t.numel() for t in self.theta0)),
                "distance_to_init": self.distance()}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(hparams={"l2init_lambda": self.lam}, theta0={n: t.clone() for n, t in zip(self.names, self.theta0)})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.lam = float(state["hparams"]["l2init_lambda"])
        saved = state["theta0"]
        if sorted(saved) != sorted(self.names) or any(saved[n].shape != p.shape for n, p in zip(self.names, self.params())):
            raise ValueError("the l2init state's theta_0 does not fit this trunk's parameters")
        self.theta0 = [saved[n].detach().to(p.device).clone() for n, p in zip(self.names, self.params())]
