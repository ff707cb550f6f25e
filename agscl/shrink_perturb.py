"""Shrink-and-perturb (Ash & Adams, NeurIPS 2020, "On Warm-Starting Neural Network Training").

At the start of every task after the first, each trunk parameter becomes

    theta <- sp_shrink * theta + sp_perturb * theta_init

where ``theta_init`` is a fresh draw of the same layer from the network's own initializer
(``init_fn``, the agent's orthogonal init; else ``reset_parameters``), from this method's
generator seeded by the run's ``seed``: the noise has the initializer's distribution, as in
Plasticine's implementation (p <- c * p + (1 - c) * p_init, RLE-Foundation/Plasticine,
plasticine/continual/ppo_procgen_snp.py), which is the special case ``sp_perturb = 1 - sp_shrink``.

When: Ash & Adams shrink and perturb a warm-started network once, each time new data arrive,
before training on them; in continual learning that moment is a task's start (the network
trained on the earlier tasks is the warm start of the next one). Plasticine's ``soft`` variant
instead applies a tiny step (c = 0.999999) after every optimizer step, compounding to about
0.995 over one MinAtar game of ~4700 steps: too weak to matter at a task boundary and a cost on
every step, so it is not offered here. The first task is left alone: its weights are the
initialization already. A resumed run does not shrink the same task twice.

Only the trunk is shrunk (the heads are per task). In a composition (:mod:`agscl.compose`)
protected elements keep their values exactly: AGS-CL's important nodes, PackNet's owned weights
(so with PackNet only free weights are shrunk and perturbed).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from agscl.base import HeadSpec, Hparam
from agscl.plasticity import PlasticityMethod


class ShrinkPerturb(PlasticityMethod):
    """Shrink-and-perturb of the trunk at each task's start; see the module docstring."""

    name = "shrink_perturb"
    state_keys = ("generator", "hparams", "applied_task", "applications")
    hparams = (
        # 0.8 / 0.2: the form of Plasticine's implementation (perturb = 1 - shrink, so the weight scale stays the
        # initializer's); the value is ours for a once-per-task step: Ash & Adams tune (lambda, sigma) per setting and
        # Plasticine's per-update c = 0.999999 does not transfer to a task boundary
        Hparam("sp_shrink", 0.8, "factor lambda on the trained trunk weights at each task's start", low=0.0, high=1.0),
        Hparam("sp_perturb", 0.2, "scale sigma of the fresh draw from the network's initializer added to them", low=0.0),
    )

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, sp_shrink: float = 0.8,
                 sp_perturb: float = 0.2, seed: int | None = None,
                 init_fn: Callable[[nn.Module], Any] | None = None) -> None:
        for spec, value in zip(self.hparams, (sp_shrink, sp_perturb)):
            spec.check(value)
        super().__init__(trunk, heads, seed=seed, init_fn=init_fn)
        self.shrink, self.perturb = float(sp_shrink), float(sp_perturb)
        self.modules = [m for m in trunk.modules() if any(True for _ in m.parameters(recurse=False))]
        odd = [type(m).__name__ for m in self.modules if not callable(getattr(m, "reset_parameters", None))]
        if odd:
            raise ValueError(f"shrink_perturb needs every trunk module with parameters to have reset_parameters() "
                             f"(to draw the perturbation); {', '.join(odd)} has none")
        self.applied_task: int | None = None
        self.applications = 0

    def begin_task(self, task: int) -> None:
        super().begin_task(task)
        if self.tasks_learned > 0 and self.applied_task != task:
            self.shrink_perturb()
            self.applied_task = task

    @torch.no_grad()
    def shrink_perturb(self) -> None:
        """``theta <- shrink * theta + perturb * fresh`` on every unprotected trunk element."""
        protection = self.protect()
        for module in self.modules:
            fresh = dict(self.fresh_copy(module).named_parameters(recurse=False))
            for name, param in module.named_parameters(recurse=False):
                new = self.shrink * param + self.perturb * fresh[name].detach()
                mask = protection.get(param)
                param.copy_(new if mask is None else torch.where(mask, param, new))
        self.applications += 1

    def statistics(self) -> dict[str, float]:
        return {**super().statistics(), "applications": float(self.applications)}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(hparams={"sp_shrink": self.shrink, "sp_perturb": self.perturb}, applied_task=self.applied_task,
                     applications=self.applications)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.shrink, self.perturb = float(state["hparams"]["sp_shrink"]), float(state["hparams"]["sp_perturb"])
        self.applied_task, self.applications = state["applied_task"], int(state["applications"])
