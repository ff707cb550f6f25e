"""Plasticity metrics of the trunk (pure torch): dormant units, effective rank, weight size, gradient size.

The measures the plasticity literature reads a network's loss of plasticity from (Plasticine,
Yuan et al. 2025; Kumar et al. 2021; Abbas et al. 2023; docs/metrics.md, "Plasticity metrics"):

- :func:`dormant_fraction`: the fraction of the activations' outputs that are 0 on every input
  (at every position of a conv map);
- :func:`srank`: the effective rank of the trunk's features on a batch of observations, Kumar et
  al.'s ``srank_delta``, the smallest ``k`` whose top-``k`` singular values sum to at least
  ``(1 - delta)`` of them all (``delta = 0.01``);
- :func:`weight_magnitude`: the mean ``|w|`` of each Conv2d/Linear layer (weight and bias);
- :func:`grad_norms` and :class:`GradNormMeter`: the L2 norm of each layer's gradient (weight and
  bias together), read from ``.grad`` after the backward pass.

Layers are named by kind and order, ``conv1 .. convN, fc1`` (:func:`trunk_layers`), so the names
stay the same whatever ``--layer-norm`` and ``--activation`` add to the Sequential.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from agents.layers import ACTIVATIONS
from agscl.base import eval_mode

#: Kumar et al. (2021)'s delta: the top singular values that hold 99% of the sum
SRANK_DELTA = 0.01


def trunk_layers(trunk: nn.Module) -> list[tuple[str, nn.Module]]:
    """The trunk's Conv2d and Linear layers in order, named ``conv1, conv2, .., fc1, ..``."""
    out: list[tuple[str, nn.Module]] = []
    counts = {"conv": 0, "fc": 0}
    for module in trunk.modules():
        kind = "conv" if isinstance(module, nn.Conv2d) else "fc" if isinstance(module, nn.Linear) else None
        if kind is not None:
            counts[kind] += 1
            out.append((f"{kind}{counts[kind]}", module))
    return out


def srank(features: torch.Tensor, delta: float = SRANK_DELTA) -> int:
    """Kumar et al. (2021)'s effective rank of a (samples, features) matrix: the smallest ``k``
    with ``sum_{i<=k} s_i >= (1 - delta) * sum_i s_i`` (singular values in decreasing order); 0 for
    an all-zero matrix. Float64, so that the threshold is not decided by float32 rounding."""
    s = torch.linalg.svdvals(features.detach().double())
    cumulative = s.cumsum(0)
    total = cumulative[-1] if cumulative.numel() else cumulative.new_zeros(())
    if not bool(total > 0):
        return 0
    return int((cumulative < (1.0 - delta) * total).sum()) + 1


@torch.no_grad()
def activity(trunk: nn.Module, inputs: Iterable[torch.Tensor]) -> tuple[float, torch.Tensor]:
    """One pass of ``inputs`` (scaled float batches) through ``trunk`` in eval mode and fp32: the
    fraction of dormant activation outputs (:func:`dormant_fraction`) and the trunk's output
    features, one row per input (for :func:`srank`)."""
    activations = [m for m in trunk.modules() if isinstance(m, ACTIVATIONS)]
    fired: dict[int, torch.Tensor] = {}

    def hook(index: int) -> Callable[..., None]:
        def record(_module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            active = (out > 0).flatten(2).any(dim=2) if out.dim() > 2 else out > 0  # (batch, outputs)
            seen = active.any(dim=0)
            fired[index] = seen if index not in fired else fired[index] | seen
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(activations)]
    features = []
    try:
        with eval_mode(trunk):
            for batch in inputs:
                features.append(trunk(batch).float().flatten(1))
    finally:
        for h in handles:
            h.remove()
    outputs = sum(int(f.numel()) for f in fired.values())
    dormant = 0.0 if outputs == 0 else float(sum(int((~f).sum()) for f in fired.values())) / outputs
    return dormant, torch.cat(features) if features else torch.zeros(0, 0)


def dormant_fraction(trunk: torch.nn.Module, inputs: Any) -> float:
    """Fraction of the trunk's activation outputs that never fire on ``inputs`` (scaled float batches).

    An output is a conv channel or a linear unit read after its activation (ReLU; CReLU: each of a
    unit's two outputs); it is dormant when it is 0 at every position of every input. Measured on the
    observations the trained policy collected at the end of a game, it says how much of the
    trunk the current game leaves unused (capacity a later game can still take).
    """
    return activity(trunk, inputs)[0]


@torch.no_grad()
def weight_magnitude(trunk: nn.Module) -> dict[str, float]:
    """Mean ``|p|`` over each Conv2d/Linear layer's parameters (weight and bias), by layer name."""
    layers = trunk_layers(trunk)
    means = torch.stack([torch.cat([p.detach().abs().flatten() for p in m.parameters()]).mean() for _, m in layers])
    return dict(zip((n for n, _ in layers), means.tolist()))


class GradNormMeter:
    """Per-layer L2 norm of the trunk's gradient (a layer's weight and bias together), averaged over
    the minibatches at which :meth:`add` is called: the PPO loop calls it after the backward pass and
    before clipping, only in updates followed by an evaluation. No host sync until :meth:`result`."""

    def __init__(self, trunk: nn.Module) -> None:
        layers = trunk_layers(trunk)
        self.names = [n for n, _ in layers]
        self.params = [p for _, m in layers for p in m.parameters()]
        device = self.params[0].device if self.params else torch.device("cpu")
        self.layer_of = torch.tensor([i for i, (_, m) in enumerate(layers) for _ in m.parameters()],
                                     dtype=torch.long, device=device)
        self.total: torch.Tensor | None = None
        self.count = 0

    def reset(self) -> None:
        self.total, self.count = None, 0

    def current(self) -> torch.Tensor:
        """Each layer's gradient norm now (absent gradients count as zero)."""
        grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        squares = torch.stack(torch._foreach_norm(grads)).float().square()
        per_layer = torch.zeros(len(self.names), dtype=squares.dtype, device=squares.device)
        return per_layer.index_add_(0, self.layer_of.to(squares.device), squares).sqrt_()

    def add(self) -> None:
        norms = self.current()
        self.total = norms if self.total is None else self.total + norms
        self.count += 1

    def result(self) -> dict[str, float]:
        """The mean over the recorded minibatches, by layer name; empty when none was recorded."""
        if self.total is None or self.count == 0:
            return {}
        return dict(zip(self.names, (self.total / self.count).tolist()))


def grad_norms(trunk: nn.Module) -> dict[str, float]:
    """Each Conv2d/Linear layer's gradient L2 norm (weight and bias together) from ``.grad`` now."""
    meter = GradNormMeter(trunk)
    return dict(zip(meter.names, meter.current().tolist()))


def plasticity_metrics(trunk: nn.Module, inputs: Iterable[torch.Tensor],
                       grads: dict[str, float] | None = None) -> dict[str, float]:
    """Every measure, flat, as results.json and TensorBoard (``plasticity/<key>``) hold them:
    ``dormant_fraction``, ``srank``, ``weight_magnitude/<layer>`` and, when given, ``grad_norm/<layer>``."""
    dormant, features = activity(trunk, inputs)
    out: dict[str, float] = {"dormant_fraction": dormant, "srank": float(srank(features))}
    out.update({f"weight_magnitude/{k}": v for k, v in weight_magnitude(trunk).items()})
    out.update({f"grad_norm/{k}": v for k, v in (grads or {}).items()})
    return out
