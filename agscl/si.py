"""Path-integral baselines on the trunk parameters: SI (Zenke et al. 2017) and RWALK
(Chaudhry et al. 2018).

Both accumulate, after every optimizer step, a per-parameter contribution of that step to the
loss decrease, ``-g * delta``, where ``g`` is ``p.grad`` as the step used it (the gradient of
the *total* loss, penalty included) and ``delta`` the parameter change of the step. The
parameters before each step are remembered: snapshot at ``begin_task`` and after every
``after_step`` (if ``after_step`` comes first, the first call only takes the snapshot).

SI: ``w += -g * delta`` over the task; at ``end_task``,
``Omega += w / (Delta^2 + xi)`` with ``Delta`` the total change over the task, then ``w`` is
reset and the anchor becomes the current parameters. Contributions are not clamped (faithful
to Zenke et al.; with momentum or Adam a weight's contribution can be slightly negative).
Zenke et al.'s strength ``c`` corresponds to ``lam = 2 c`` (penalty ``lam/2 * sum Omega d^2``).

RWALK: an empirical Fisher ``F <- alpha * F + (1 - alpha) * g^2`` is updated every step and
kept across tasks (an EMA, as in the authors' code); the score
``s += -g * delta / (0.5 * F * delta^2 + eps)`` uses ``F`` after this step's update. At
``end_task``: ``s`` is clamped at 0, ``F`` and ``s`` are each divided by their maximum over
the whole trunk (so both lie in [0, 1]; an all-zero one stays zero), ``new = F_n + s_n``, the
importance becomes ``new`` after the first task and ``(old + new) / 2`` afterwards; ``s`` is
reset and the anchor becomes the current parameters.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from agscl._weightwise import WeightwiseMethod, accumulator_dtype, checked
from agscl.base import HeadSpec


class _PathIntegral(WeightwiseMethod):
    """Keeps ``_prev`` (parameters before the current step) and accumulates per-step terms."""

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, lam: float) -> None:
        super().__init__(trunk, heads, lam=lam)
        self._prev: list[torch.Tensor] | None = None

    def begin_task(self, task: int) -> None:
        super().begin_task(task)
        self._prev = self.snapshot()
        self._start_task()

    def _start_task(self) -> None:
        """Reset per-task accumulators."""

    def _accumulate(self, p: torch.Tensor, g: torch.Tensor, delta: torch.Tensor, k: int) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        if self._prev is None:  # no begin_task: start the path here
            self._prev = self.snapshot()
            self._start_task()
            return
        for k, (p, prev) in enumerate(zip(self.params(), self._prev)):
            g = p.grad
            if g is not None:
                dtype = accumulator_dtype(p)
                self._accumulate(p, g.detach().to(dtype), p.detach().to(dtype) - prev.to(dtype), k)
            prev.copy_(p.detach())


class SI(_PathIntegral):
    """Synaptic intelligence: path-integral importance normalized by the squared task drift."""

    name = "si"
    _state_lists = ("_w", "_start", "_prev")

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
        omega = [wk / ((p.to(wk.dtype) - s.to(wk.dtype)).square() + self.xi) for wk, p, s in zip(w, params, start)]
        if 0 in self.terms:
            omega = [old + new for old, new in zip(self.terms[0][0], omega)]
        self.terms[0] = (omega, params)
        self._w = self._start = self._prev = None
        super().end_task(task, inputs)


class RWALK(_PathIntegral):
    """Riemannian walk: normalized EMA Fisher plus clamped path score, averaged over tasks."""

    name = "rwalk"
    _state_lists = ("_fisher", "_score", "_prev")

    def __init__(
        self, trunk: nn.Module, heads: Sequence[HeadSpec], *, lam: float, alpha: float = 0.9, eps: float = 1e-8
    ) -> None:
        super().__init__(trunk, heads, lam=lam)
        self.alpha = checked("alpha", alpha, 0.0, 1.0, high_open=True)
        self.eps = checked("eps", eps, 0.0, math.inf, low_open=True, high_open=True)
        self._fisher: list[torch.Tensor] | None = None
        self._score: list[torch.Tensor] | None = None

    def _start_task(self) -> None:
        self._score = self.zeros()
        if self._fisher is None:
            self._fisher = self.zeros()

    def _accumulate(self, p: torch.Tensor, g: torch.Tensor, delta: torch.Tensor, k: int) -> None:
        assert self._fisher is not None and self._score is not None
        f = self._fisher[k]
        f.mul_(self.alpha).addcmul_(g, g, value=1.0 - self.alpha)
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
        new = [
            f + s
            for f, s in zip(self._max_normalized(fisher), self._max_normalized([s.clamp(min=0) for s in score]))
        ]
        if 0 in self.terms:
            new = [(old + n) / 2 for old, n in zip(self.terms[0][0], new)]
        self.terms[0] = (new, self.snapshot())
        self._fisher = fisher
        self._score = self._prev = None
        super().end_task(task, inputs)


__all__ = ["SI", "RWALK"]
