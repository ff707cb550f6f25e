"""ReDo: recycling dormant neurons (Sokar et al., ICML 2023, "The Dormant Neuron Phenomenon in
Deep Reinforcement Learning").

Every ``redo_interval`` optimizer steps of a task, each trunk unit (a Linear output or a conv
output channel, read at the ReLU that follows it) gets the score

    s_i = mean|h_i| / mean_j mean|h_j|        (per layer; conv: mean over batch and positions)

on the latest training minibatch of the current task (forward hooks on the trunk's ReLUs keep
the per-unit mean |h| of the last forward before a check; nothing is kept in between). A layer
whose units are all silent scores them all 0. Units with ``s_i <= redo_tau`` are recycled:

- their incoming weights and bias are re-drawn from the network's own initializer (``init_fn``,
  the agent's orthogonal init; else the layer's ``reset_parameters``);
- their outgoing weights are set to zero: the next trunk layer's input columns, or, for the
  last trunk layer, those columns in every task's heads, so the network computes exactly the
  same outputs right after a recycle as with those units silent;
- the attached optimizer's moments of every weight so changed are zeroed
  (:meth:`agscl.base.ContinualMethod.attach_optimizer`).

In a composition (:mod:`agscl.compose`) ReDo writes only elements the stability method does
not protect, and recycles a unit only where it keeps the current task's outputs as they are: at
least one of its incoming elements is free and every protected outgoing weight the current task
reads (the next trunk layer's; the current head is never protected) is already exactly zero.
Earlier tasks' heads are protected whole and keep their columns: such a task does not see the
change (AGS-CL recycles only nodes no earlier task reads, PackNet only weights no earlier task
sees). With PackNet this leaves the units that feed owned weights of the next trunk layer as
they are.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from agscl.base import HeadSpec, Hparam, task_heads
from agscl.groups import NodeLayer, discover_layers, head_input_layer, spread_over_inputs
from agscl.plasticity import PlasticityMethod, Protection


def unit_means(out: torch.Tensor) -> torch.Tensor:
    """Per-unit mean |h| of one batch of activations: over the batch, and positions for a conv."""
    dims = (0,) if out.ndim == 2 else (0,) + tuple(range(2, out.ndim))
    return out.detach().abs().float().mean(dim=dims)


def scores(means: torch.Tensor) -> torch.Tensor:
    """``s_i = m_i / mean_j m_j``; all zeros when the whole layer is silent (no NaN)."""
    total = means.mean()
    return means / total if bool(total > 0) else torch.zeros_like(means)


def _per_node(mask: torch.Tensor, nodes: int) -> torch.Tensor:
    """Per input column of a consumer's weight (conv: (out, C, k, k); linear: (out, in)), any
    True over everything the feeding node reaches: one bool per feeding node."""
    if mask.ndim == 4:
        return mask.any(dim=(0, 2, 3))
    return mask.any(dim=0).view(nodes, -1).any(dim=1)


class ReDo(PlasticityMethod):
    """ReDo on a trunk of Conv2d/Linear+ReLU layers; see the module docstring."""

    name = "redo"
    state_keys = ("generator", "hparams", "steps", "checks", "recycled", "last_dormant")
    hparams = (
        # 0.025: the tau-dormant threshold of the issue and of Plasticine's PPO scripts
        # (RLE-Foundation/Plasticine, plasticine/continual/ppo_procgen_redo.py: redo_tau = 0.025)
        Hparam("redo_tau", 0.025, "units with score mean|h_i| / (layer mean) <= tau are re-initialized", low=0.0),
        # 240 optimizer steps: Plasticine's PPO recycles every 10 iterations (redo_frequency = 10, same file) of
        # 3 epochs x 8 minibatches = 240 optimizer steps
        Hparam("redo_interval", 240, "optimizer steps between two dormancy checks within a task", low=1),
    )

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, redo_tau: float = 0.025,
                 redo_interval: int = 240, seed: int | None = None,
                 init_fn: Callable[[nn.Module], Any] | None = None) -> None:
        self.hparams[0].check(redo_tau)
        if isinstance(redo_interval, bool) or not isinstance(redo_interval, int) or redo_interval < 1:
            raise ValueError(f"redo_interval={redo_interval!r} is out of range: allowed redo_interval an integer >= 1")
        super().__init__(trunk, heads, seed=seed, init_fn=init_fn)
        self.tau, self.interval = float(redo_tau), int(redo_interval)
        self.layers: list[NodeLayer] = discover_layers(trunk)
        self.steps = 0  # optimizer steps of the current task
        self.checks = 0
        self.recycled = 0  # units re-initialized, all tasks
        self.last_dormant = 0.0  # fraction of units at or below tau at the last check
        self._armed = False
        self._means: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles = [layer.activation.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

    def _hook(self, index: int):
        def record(_module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if self._armed:
                self._means[index] = unit_means(out)
        return record

    # -- hooks -------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        if task != self.task:  # a resumed run calls begin_task again for its current task
            self.steps = 0
        super().begin_task(task)
        self._arm()

    def _arm(self) -> None:
        """Record activations only in the forward pass before a check (free otherwise)."""
        self._armed = (self.steps + 1) % self.interval == 0
        if not self._armed:
            self._means = [None] * len(self.layers)

    def after_step(self, lr: float) -> None:
        self.steps += 1
        if self.steps % self.interval == 0:
            self.recycle()
        self._arm()

    def end_task(self, task: int, inputs: Any) -> None:
        super().end_task(task, inputs)
        self._armed = False
        self._means = [None] * len(self.layers)

    # -- the recycle -------------------------------------------------------------------
    def dormant(self) -> list[torch.Tensor]:
        """Per trunk layer, True for the units whose score is <= tau on the recorded minibatch."""
        if any(m is None for m in self._means):
            raise RuntimeError("ReDo found no recorded activations of the trunk: the learner must run the trunk's "
                               "modules (their forward hooks) on a training minibatch before each optimizer step")
        return [scores(m) <= self.tau for m in self._means]  # type: ignore[arg-type]

    def _consumers(self, index: int) -> list[tuple[torch.Tensor, int | None, bool]]:
        """The weights that read layer ``index``'s units, with the input-column repeat (None:
        inferred from the shapes) and whether the current task reads them: the next trunk
        layer's, or the input layer of every task's heads."""
        if index + 1 < len(self.layers):
            nxt = self.layers[index + 1]
            return [(nxt.module.weight, nxt.in_repeat, True)]
        return [(head_input_layer(h).weight, None, t == self.task)
                for t in range(len(self.heads)) for h in task_heads(self.heads, t)]

    @torch.no_grad()
    def recycle(self) -> int:
        """Score the units on the recorded minibatch and recycle the dormant ones that may be
        (see the module docstring); returns how many were recycled."""
        dormant = self.dormant()
        self.checks += 1
        total = sum(d.numel() for d in dormant)
        self.last_dormant = float(sum(int(d.sum()) for d in dormant)) / total
        protection = self.protect()
        chosen = [d.to(layer.module.weight.device) & self._recyclable(i, protection)
                  for i, (d, layer) in enumerate(zip(dormant, self.layers))]
        count = 0
        # last layer first: a recycled unit's fresh row may read a unit of the layer before that
        # is recycled too, and that unit's outgoing weights (in the fresh row) must end at zero
        for index in reversed(range(len(self.layers))):
            if bool(chosen[index].any()):
                self._recycle_layer(index, chosen[index], protection)
                count += int(chosen[index].sum())
        self.recycled += count
        return count

    def _recyclable(self, index: int, protection: Protection) -> torch.Tensor:
        """Units with a free incoming element whose protected outgoing weights that the current
        task reads are all zero (so the current task's outputs stay as they are; an earlier
        task's head is protected whole and keeps its columns, and the stability method keeps the
        unit's value as that task sees it: AGS-CL recycles only nodes no earlier task reads,
        PackNet only weights no earlier task sees)."""
        module = self.layers[index].module
        nodes = module.weight.shape[0]
        free_in = torch.ones(nodes, dtype=torch.bool, device=module.weight.device)
        mask_w = protection.get(module.weight)
        mask_b = None if module.bias is None else protection.get(module.bias)
        if mask_w is not None:  # else every incoming weight is free
            free_in = ~mask_w.reshape(nodes, -1).all(dim=1)
            if module.bias is not None:
                free_in |= True if mask_b is None else ~mask_b
        blocked = torch.zeros_like(free_in)
        for weight, _repeat, current in self._consumers(index):
            mask = protection.get(weight)
            if mask is not None and current:
                blocked |= _per_node(mask & (weight != 0), nodes)
        return free_in & ~blocked

    def _recycle_layer(self, index: int, chosen: torch.Tensor, protection: Protection) -> None:
        module = self.layers[index].module
        fresh = self.fresh_copy(module)
        rows = chosen.view((-1,) + (1,) * (module.weight.ndim - 1))
        pairs = [(module.weight, fresh.weight, rows)]
        if module.bias is not None:
            pairs.append((module.bias, fresh.bias, chosen))
        for param, new, where in pairs:
            changed = where.expand_as(param)
            mask = protection.get(param)
            if mask is not None:
                changed = changed & ~mask
            param.copy_(torch.where(changed, new.detach(), param))
            self.zero_moments(param, changed)
        for weight, repeat, _current in self._consumers(index):
            changed = spread_over_inputs(chosen, weight, repeat).expand_as(weight)
            mask = protection.get(weight)
            if mask is not None:
                changed = changed & ~mask
            weight.masked_fill_(changed, 0.0)
            self.zero_moments(weight, changed)

    # -- bookkeeping -------------------------------------------------------------------
    def statistics(self) -> dict[str, float]:
        return {**super().statistics(), "recycled_units": float(self.recycled), "checks": float(self.checks),
                "dormant_at_last_check": self.last_dormant}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(hparams={"redo_tau": self.tau, "redo_interval": self.interval}, steps=self.steps,
                     checks=self.checks, recycled=self.recycled, last_dormant=self.last_dormant)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.tau, self.interval = float(state["hparams"]["redo_tau"]), int(state["hparams"]["redo_interval"])
        self.steps, self.checks, self.recycled = int(state["steps"]), int(state["checks"]), int(state["recycled"])
        self.last_dormant = float(state["last_dormant"])
        self._arm()
