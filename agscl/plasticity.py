"""What the plasticity methods (ReDo, shrink-and-perturb, L2 Init) share: fresh draws from the
network's own initializer, the protection they honour inside a composition, and the optimizer
state they may reset.

A plasticity method changes trunk weights to keep the network trainable; a stability method
(AGS-CL, PackNet) keeps some of them as they are so that earlier tasks keep their function.
In a composition (:mod:`agscl.compose`) the stability method's ``protected()`` tells the
plasticity method which elements it must never change: :attr:`PlasticityMethod.protect` is set
to it, and every write of a plasticity method goes through the masks it returns. Alone, a
plasticity method protects nothing.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from agscl.base import ContinualMethod, HeadSpec

#: Parameter -> boolean mask of its shape, True where no plasticity method may change the value.
Protection = dict[torch.Tensor, torch.Tensor]
INIT_LAYERS = (nn.Conv2d, nn.Linear)


def nothing_protected() -> Protection:
    return {}


class PlasticityMethod(ContinualMethod):
    """Base of the plasticity methods: a seeded generator for the initializer's draws, the
    attached optimizer and the protection hook.

    Args:
        seed: seed of this method's draws (None: from torch's global generator).
        init_fn: re-initializes a Conv2d/Linear in place the way the network was initialized
            (the agent's orthogonal ``layer_init``); None: the layer's ``reset_parameters()``.
            Other modules with parameters are re-initialized by their ``reset_parameters()``.
    """

    role: ClassVar[str] = "plasticity"
    state_keys: ClassVar[tuple[str, ...]] = ("generator",)

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, seed: int | None = None,
                 init_fn: Callable[[nn.Module], Any] | None = None) -> None:
        super().__init__(trunk, heads)
        self.init_fn = init_fn
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed))
        self.optimizer: torch.optim.Optimizer | None = None
        #: what the stability method of a composition protects (set by :class:`agscl.compose.Composite`)
        self.protect: Callable[[], Protection] = nothing_protected

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @torch.no_grad()
    def fresh_copy(self, module: nn.Module) -> nn.Module:
        """A copy of ``module`` re-initialized as the network was (``init_fn`` for Conv2d/Linear,
        else ``reset_parameters``), drawn on the CPU from this method's generator inside
        ``fork_rng`` (torch's global generators are left as they were, so a run on any device
        draws the same values), then moved to the module's device."""
        fresh = copy.deepcopy(module).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(torch.randint(0, 2**62, (), generator=self.generator)))
            if self.init_fn is not None and isinstance(fresh, INIT_LAYERS):
                self.init_fn(fresh)
            else:
                fresh.reset_parameters()  # type: ignore[operator]
        device = next(module.parameters()).device
        return fresh.to(device)

    @torch.no_grad()
    def zero_moments(self, param: torch.Tensor, changed: torch.Tensor) -> None:
        """Zero the attached optimizer's per-element state of ``param`` where ``changed`` (Adam's
        ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; SGD's ``momentum_buffer``): a changed
        weight starts without the momentum of the weight it replaced. Scalars (Adam's ``step``,
        one per tensor) are kept: a re-initialized row's first Adam step is then bias-corrected
        as the tensor's other rows are."""
        if self.optimizer is None:
            return
        state = self.optimizer.state.get(param)
        if not state:
            return
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                value.masked_fill_(changed, 0)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])


def allowed(protection: Protection, param: torch.Tensor) -> torch.Tensor | None:
    """``~mask`` of ``param`` (True where a plasticity method may write), None: everywhere."""
    mask = protection.get(param)
    return None if mask is None else ~mask
