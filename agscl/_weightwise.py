"""Shared machinery of the weight-wise baselines (EWC, online EWC, MAS, SI, RWALK).

Every one of them adds the anchored quadratic penalty

    penalty = lam / 2 * sum_k sum_i Omega_{k,i} * (theta_i - theta*_{k,i})^2

over the trunk parameters ``theta``, where each *term* ``k`` is a pair (importance
``Omega_k``, anchor ``theta*_k``). Per-task EWC keeps one term per learned task; the other
methods keep a single term (running importance, latest anchor).

The 1/2 convention: ``lam`` multiplies half the weighted squared distance, as in the Laplace
approximation that motivates EWC (Kirkpatrick et al. 2017).
Zenke et al.'s SI strength ``c`` (no 1/2) is ``lam = 2 c`` here.

Importances that need per-sample gradients (EWC's Fisher, MAS) are computed with
``torch.func`` (``functional_call`` + ``vmap`` + ``grad``) in chunks sized so that one chunk of
per-sample gradients holds at most :data:`PER_SAMPLE_FLOATS` floats.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from agscl.base import ContinualMethod, HeadSpec, check_range, eval_mode, full_precision, iter_batches, module_device

#: Upper bound on the floats of one chunk of per-sample gradients (2**26 floats = 256 MiB fp32).
PER_SAMPLE_FLOATS = 2**26

Term = tuple[list[torch.Tensor], list[torch.Tensor]]  # (importance, anchor), one tensor per parameter


def as_number(name: str, value: Any) -> float:
    """``float(value)``, or ``ValueError`` naming ``name`` when it is not a real number."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name}={value!r} is not a number")
    try:
        return float(value)  # ints, floats, numpy scalars, 0-dim tensors
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number") from None


def checked(name: str, value: Any, low: float | None, high: float | None, **open_ends: bool) -> float:
    """``value`` as a float after :func:`agscl.base.check_range` (the message shows the value as given)."""
    number = as_number(name, value)
    check_range(name, value if isinstance(value, (int, float)) else number, low, high, **open_ends)
    return number


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is out of range: allowed {name} an integer >= {low}")
    return int(value)


def accumulator_dtype(p: torch.Tensor) -> torch.dtype:
    """At least float32 for importances and path integrals (fp16/bf16 parameters would lose them)."""
    return torch.promote_types(p.dtype, torch.float32)


def per_sample_grad_mean(
    trunk: nn.Module,
    head: nn.Module,
    names: Sequence[str],
    inputs: Iterable[Any],
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    expand: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    stat: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """Mean over samples of ``stat(d objective(head(trunk(x_s)), aux_s) / d theta)`` for the
    trunk parameters ``names``, in eval mode.

    ``expand(x, out)`` turns a batch and its (no-grad) outputs into the per-sample inputs and
    auxiliary data (e.g. EWC repeats each input once per sampled label). ``objective`` maps one
    sample's output (no batch dim) and its aux to a scalar.
    """
    device = module_device(trunk)
    named = dict(trunk.named_parameters())
    params = {n: named[n].detach() for n in names}
    head_params = {n: p.detach() for n, p in head.named_parameters()}
    numel = sum(p.numel() for p in params.values())
    chunk = max(1, PER_SAMPLE_FLOATS // max(1, numel))

    def single(theta: dict[str, torch.Tensor], x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        features = functional_call(trunk, theta, (x.unsqueeze(0),))
        out = functional_call(head, head_params, (features,))
        return objective(out.squeeze(0), aux)

    per_sample = vmap(grad(single), in_dims=(None, 0, 0))
    sums = [torch.zeros_like(p, dtype=accumulator_dtype(p)) for p in params.values()]
    count = 0
    with eval_mode(trunk, head), full_precision(trunk):
        for x in iter_batches(inputs):
            x = x.to(device)
            if x.shape[0] == 0:
                continue
            with torch.no_grad():
                out = head(trunk(x))
            xs, aux = expand(x, out)
            for start in range(0, xs.shape[0], chunk):
                grads = per_sample(params, xs[start : start + chunk], aux[start : start + chunk])
                for s, n in zip(sums, names):
                    s += stat(grads[n].to(s.dtype)).sum(0)
            count += xs.shape[0]
    if count == 0:
        raise ValueError("end_task got no input samples: importance needs at least one input of the task")
    return [s / count for s in sums]


class WeightwiseMethod(ContinualMethod):
    """Base of the anchored-quadratic baselines: penalty, bookkeeping and (de)serialization.

    Subclasses fill ``self.terms`` (key -> (importance, anchor)) in ``end_task`` and may keep
    extra per-parameter state: attributes of ``list[Tensor] | None`` named in ``state_keys``
    after ``"terms"``, saved and restored with the terms.
    """

    state_keys: ClassVar[tuple[str, ...]] = ("terms",)

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, lam: float) -> None:
        super().__init__(trunk, heads)
        self.lam = checked("lam", lam, 0.0, math.inf, high_open=True)
        self.names = [n for n, _ in self.trunk_parameters()]
        if not self.names:
            raise ValueError("the trunk has no trainable parameters to regularize")
        self.terms: dict[int, Term] = {}

    # -- parameters --------------------------------------------------------------------
    def params(self) -> list[torch.Tensor]:
        """The regularized trunk parameters, looked up by name (robust to ``trunk.to``)."""
        named = dict(self.trunk.named_parameters())
        return [named[n] for n in self.names]

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params()]

    def _penalty_params(self) -> list[torch.Tensor]:
        """The parameters as :meth:`penalty` reads them (a subclass may tap their gradient there)."""
        return self.params()

    def zeros(self) -> list[torch.Tensor]:
        return [torch.zeros_like(p, dtype=accumulator_dtype(p)).detach() for p in self.params()]

    # -- protocol ------------------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        """``lam/2 * sum_k sum_i Omega_{k,i} (theta_i - theta*_{k,i})^2``; zero before any task."""
        total = torch.zeros((), device=module_device(self.trunk))
        if not self.terms or self.lam == 0.0:
            return total
        params = self._penalty_params()
        for importance, anchor in self.terms.values():
            for p, omega, a in zip(params, importance, anchor):
                total = total + (omega * (p - a).square()).sum()
        return 0.5 * self.lam * total

    fused_penalty = True

    @torch.no_grad()
    def add_penalty_grad(self) -> torch.Tensor:
        """``p.grad += lam * sum_k Omega_k (p - anchor_k)``, the gradient of :meth:`penalty`,
        with a few multi-tensor (``torch._foreach``) kernels instead of an autograd graph (what it
        saves: docs/scale.md). Returns the penalty's value (detached)."""
        total = torch.zeros((), device=module_device(self.trunk))
        if not self.terms or self.lam == 0.0:
            return total
        params = self.params()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        for importance, anchor in self.terms.values():
            diff = torch._foreach_sub(params, anchor)
            weighted = torch._foreach_mul(diff, importance)
            total = total + torch.stack([torch.vdot(w.reshape(-1), d.reshape(-1)) for w, d in zip(weighted, diff)]).sum()
            torch._foreach_add_(grads, weighted, alpha=self.lam)
        return 0.5 * self.lam * total

    def stored_floats(self) -> int:
        return sum(t.numel() for importance, _ in self.terms.values() for t in importance)

    def anchor_floats(self) -> int:
        return sum(t.numel() for _, anchor in self.terms.values() for t in anchor)

    def statistics(self) -> dict[str, float]:
        stats = super().statistics()
        stats["anchor_floats"] = float(self.anchor_floats())
        return stats

    # -- serialization -------------------------------------------------------------------
    def _pack(self, tensors: list[torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        if tensors is None:
            return None
        return {n: t.detach().clone() for n, t in zip(self.names, tensors)}

    def _unpack(self, packed: dict[str, torch.Tensor] | None) -> list[torch.Tensor] | None:
        if packed is None:
            return None
        missing, unknown = sorted(set(self.names) - set(packed)), sorted(set(packed) - set(self.names))
        if missing or unknown:
            raise ValueError(f"state does not match the trunk: missing parameters {missing}, unknown parameters {unknown}")
        params = self.params()
        out = []
        for n, p in zip(self.names, params):
            t = packed[n]
            if t.shape != p.shape:
                raise ValueError(f"state tensor for {n!r} has shape {tuple(t.shape)}, the trunk has {tuple(p.shape)}")
            out.append(t.detach().to(p.device).clone())
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["terms"] = [
            {"key": key, "importance": self._pack(importance), "anchor": self._pack(anchor)}
            for key, (importance, anchor) in self.terms.items()
        ]
        for attr in self.state_keys[1:]:
            state[attr] = self._pack(getattr(self, attr))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        terms: dict[int, Term] = {}
        for record in state["terms"]:
            importance, anchor = self._unpack(record["importance"]), self._unpack(record["anchor"])
            assert importance is not None and anchor is not None
            terms[int(record["key"])] = (importance, anchor)
        self.terms = terms
        for attr in self.state_keys[1:]:
            setattr(self, attr, self._unpack(state.get(attr)))
