"""Path-integral baselines on the trunk parameters: SI (Zenke et al. 2017) and RWALK
(Chaudhry et al. 2018).

Both accumulate, after every optimizer step, a per-parameter contribution of that step to the
decrease of the *task* loss, ``-g * delta``: ``delta`` is the parameter change of the step and
``g`` the gradient of the task loss alone at the parameters before the step, as in Zenke et
al.'s reference (their ``unreg_grads``). The learner only hands over ``p.grad`` of the total
loss, so :meth:`penalty` taps the gradient that flows back through the penalty (a hook on a
view of each parameter) and ``after_step`` subtracts it: ``g = p.grad - d penalty / d p``.
That is exact for any weighting of the penalty in the loss (and for gradient accumulation over
several backward calls); a learner that clips or rescales ``p.grad`` after ``backward`` makes
``g`` approximate. The parameters before each step are remembered: snapshot at
``begin_task`` and after every ``after_step`` (if ``after_step`` comes first, the first call
only takes the snapshot).

SI: ``w += -g * delta`` over the task; at ``end_task``,
``Omega += max(w, 0) / (Delta^2 + xi)`` with ``Delta`` the total change over the task (the
task's importance is clipped at 0, as in Zenke et al.'s reference), then ``w`` is reset and
the anchor becomes the current parameters. Zenke et al.'s strength ``c`` corresponds to
``lam = 2 c`` (penalty ``lam/2 * sum Omega d^2``). The AGS-CL authors' SI used the total
gradient and no clipping; this follows the SI paper's reference instead.

RWALK: an empirical Fisher ``F <- alpha * g^2 + (1 - alpha) * F`` (``alpha = 0.9``: the newest
squared gradient weighs 0.9, as in Chaudhry et al.'s reference and the AGS-CL authors'
``rwalk.py``) is updated every step and kept across tasks; the score
``s += -g * delta / (0.5 * F * delta^2 + eps)`` uses ``F`` after this step's update. At
``end_task``: ``s`` is clamped at 0 and divided by its maximum over the whole trunk, the
running score becomes ``s_n`` after the first task and ``(old + s_n) / 2`` afterwards (only
the score is averaged over tasks), and the importance is ``F / max F + running score`` with
the Fisher as it stands at the end of the task (an all-zero ``F`` or ``s`` stays zero); ``s``
is reset and the anchor becomes the current parameters.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from agscl._weightwise import WeightwiseMethod, accumulator_dtype, checked
from agscl.base import HeadSpec, Hparam


class _PathIntegral(WeightwiseMethod):
    """Keeps ``_prev`` (parameters before the current step) and accumulates per-step terms of
    the task-loss gradient (``p.grad`` minus the penalty's share, recorded by :meth:`penalty`)."""

    fused_penalty = False  # the path integral taps the penalty's gradient through autograd

    def add_penalty_grad(self) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no fused penalty gradient: add penalty() to the loss "
                                  "(its path integral separates the penalty's share of the gradient there)")

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, lam: float) -> None:
        super().__init__(trunk, heads, lam=lam)
        self._prev: list[torch.Tensor] | None = None
        self._penalty_grad: list[torch.Tensor | None] = [None] * len(self.names)

    def begin_task(self, task: int) -> None:
        super().begin_task(task)
        self._prev = self.snapshot()
        self._penalty_grad = [None] * len(self.names)
        self._start_task()

    def _start_task(self) -> None:
        """Reset per-task accumulators."""

    def _accumulate(self, p: torch.Tensor, g: torch.Tensor, delta: torch.Tensor, k: int) -> None:
        raise NotImplementedError

    def _penalty_params(self) -> list[torch.Tensor]:
        """Views of the parameters whose gradient hook records the penalty's share of ``p.grad``."""
        params = self.params()
        if not torch.is_grad_enabled():
            return params
        tapped = []
        for k, p in enumerate(params):
            if p.requires_grad:
                view = p.view_as(p)
                view.register_hook(functools.partial(self._record_penalty_grad, k))
                p = view
            tapped.append(p)
        return tapped

    def _record_penalty_grad(self, k: int, grad: torch.Tensor) -> None:
        seen = self._penalty_grad[k]
        self._penalty_grad[k] = grad.detach().clone() if seen is None else seen + grad.detach()

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        penalty_grad, self._penalty_grad = self._penalty_grad, [None] * len(self.names)
        if self._prev is None:  # no begin_task: start the path here
            self._prev = self.snapshot()
            self._start_task()
            return
        for k, (p, prev, pen) in enumerate(zip(self.params(), self._prev, penalty_grad)):
            if p.grad is not None:
                dtype = accumulator_dtype(p)
                g = p.grad.detach().to(dtype)
                if pen is not None:
                    g = g - pen.to(dtype)
                self._accumulate(p, g, p.detach().to(dtype) - prev.to(dtype), k)
            prev.copy_(p.detach())


class SI(_PathIntegral):
    """Synaptic intelligence: path-integral importance normalized by the squared task drift."""

    name = "si"
    learners = ("supervised",)
    hparams = (
        Hparam("lam", 1.0, "penalty strength", low=0.0, high=math.inf, high_open=True, rl_flag="si_lambda"),
        Hparam("xi", 0.1, "damping of the path-integral importance", low=0.0, high=math.inf, low_open=True, high_open=True),
    )
    state_keys = ("terms", "_w", "_start", "_prev")

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, lam: float, xi: float = 0.1) -> None:
        super().__init__(trunk, heads, lam=lam)
        self.xi = checked("xi", xi, 0.0, math.inf, low_open=True, high_open=True)
        self._w: list[torch.Tensor] | None = None
        self._start: list[torch.Tensor] | None = None

    def _start_task(self) -> None:
        self._w = self.zeros()
        self._start = self.snapshot()

    def _accumulate(self, p: torch.Tensor, g: torch.Tensor, delta: torch.Tensor, k: int) -> None:
        assert self._w is not None
        self._w[k].sub_(g * delta)

    @torch.no_grad()
    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        params = self.snapshot()
        w = self._w if self._w is not None else self.zeros()
        start = self._start if self._start is not None else params
        omega = [
            wk.clamp(min=0) / ((p.to(wk.dtype) - s.to(wk.dtype)).square() + self.xi)
            for wk, p, s in zip(w, params, start)
        ]
        if 0 in self.terms:
            omega = [old + new for old, new in zip(self.terms[0][0], omega)]
        self.terms[0] = (omega, params)
        self._w = self._start = self._prev = None
        super().end_task(task, inputs)


class RWALK(_PathIntegral):
    """Riemannian walk: normalized running Fisher plus the clamped path score averaged over tasks."""

    name = "rwalk"
    learners = ("supervised",)
    hparams = (
        Hparam("lam", 1.0, "penalty strength", low=0.0, high=math.inf, high_open=True, rl_flag="rwalk_lambda"),
        Hparam("alpha", 0.9, "weight of the newest squared gradient in the running Fisher", low=0.0, high=1.0, low_open=True),
    )
    state_keys = ("terms", "_fisher", "_score", "_avg_score", "_prev")

    def __init__(
        self, trunk: nn.Module, heads: Sequence[HeadSpec], *, lam: float, alpha: float = 0.9, eps: float = 1e-8
    ) -> None:
        super().__init__(trunk, heads, lam=lam)
        self.alpha = checked("alpha", alpha, 0.0, 1.0, low_open=True)
        self.eps = checked("eps", eps, 0.0, math.inf, low_open=True, high_open=True)
        self._fisher: list[torch.Tensor] | None = None
        self._score: list[torch.Tensor] | None = None
        self._avg_score: list[torch.Tensor] | None = None

    def _start_task(self) -> None:
        self._score = self.zeros()
        if self._fisher is None:
            self._fisher = self.zeros()

    def _accumulate(self, p: torch.Tensor, g: torch.Tensor, delta: torch.Tensor, k: int) -> None:
        assert self._fisher is not None and self._score is not None
        f = self._fisher[k]
        f.mul_(1.0 - self.alpha).addcmul_(g, g, value=self.alpha)
        self._score[k].sub_(g * delta / (0.5 * f * delta.square() + self.eps))

    @staticmethod
    def _max_normalized(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        top = torch.stack([t.max() for t in tensors]).max()
        scale = torch.where(top > 0, 1.0 / top, torch.zeros_like(top))
        return [t * scale for t in tensors]

    @torch.no_grad()
    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        fisher = self._fisher if self._fisher is not None else self.zeros()
        score = self._score if self._score is not None else self.zeros()
        new_score = self._max_normalized([s.clamp(min=0) for s in score])
        if self._avg_score is not None:
            new_score = [(old + s) / 2 for old, s in zip(self._avg_score, new_score)]
        self._avg_score = new_score
        self.terms[0] = ([f + s for f, s in zip(self._max_normalized(fisher), new_score)], self.snapshot())
        self._fisher = fisher
        self._score = self._prev = None
        super().end_task(task, inputs)


__all__ = ["SI", "RWALK"]
