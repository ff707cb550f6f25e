"""AGS-CL: adaptive group sparsity based continual learning (Jung et al., NeurIPS 2020).

While learning task t the trunk's nodes split by their importance ``Omega^{t-1}``:
unimportant nodes (``Omega == 0``, the set G0) get a group-lasso penalty ``mu * ||theta_n||``
that sparsifies them; important nodes get ``lam * Omega_n * ||theta_n - theta_hat_n||`` that
freezes them. Both are applied by their exact proximal operators after the gradient step
(per step, or once per epoch as the authors' code does), never through the loss gradient.
After a task: ``Omega <- eta * Omega + mean ReLU activation``, then (I.1) every outgoing
weight of an unimportant node is set to zero, and those into important nodes and into learned
tasks' heads stay zero for good; then (I.2) each unimportant node's incoming weights are
re-drawn with probability ``rho`` (independently per node, as in the paper; the authors' code
re-draws a fixed fraction) from the network's own initializer. A trunk with BatchNorm is
refused: its parameters belong to no group, so freezing could not be exact.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from agscl.base import (ContinualMethod, HeadSpec, Hparam, check_range, eval_mode, full_precision, iter_batches, module_device,
                        task_heads)
from agscl.groups import NodeLayer, discover_layers, group_count, head_input_layer, spread_over_inputs
from agscl.prox import shrink_factor

PROX_FREQUENCIES = ("epoch", "step")
BLOCK_FLOATS = 1 << 18  # prox step block: ~1 MiB of float32 temporaries, stays in cache


def _weight_rows(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def _group_norms(layer: nn.Module, anchor_w: torch.Tensor | None = None, anchor_b: torch.Tensor | None = None) -> torch.Tensor:
    """Per-node L2 norm of (weight row, bias), or of its difference to the anchor."""
    w = _weight_rows(layer)
    b = layer.bias.detach() if layer.bias is not None else None
    if anchor_w is not None:
        w = w - anchor_w.reshape_as(w)
        if b is not None:
            b = b - anchor_b
    norm = torch.linalg.vector_norm(w, dim=1)
    return norm if b is None else torch.hypot(norm, b)


def _union(fixed: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    """Zero-fixed sets only grow: a weight fixed after one task stays fixed for all later ones."""
    return new.clone() if fixed is None else fixed | new


class AGSCL(ContinualMethod):
    """AGS-CL on a trunk of Conv2d/Linear+ReLU layers with per-task heads.

    Args:
        mu: group-lasso strength on unimportant nodes (term (a)).
        lam: drift-penalty strength on important nodes (term (b)).
        eta: decay of the accumulated importance, in (0, 1].
        rho: probability that an unimportant node's incoming weights are re-drawn, in [0, 1].
        prox_every: ``"epoch"`` (the authors' code; default) or ``"step"`` (the paper's equations).
        zero_init, rand_init: ablation switches for (I.1) and (I.2).
        seed: seed of the re-initialization draws (None: from torch's global generator).
        init_fn: re-initializes a trunk layer in place the way the network was initialized
            (e.g. orthogonal with gain sqrt(2)); (I.2) draws re-initialized rows from it.
            None: the layer's own ``reset_parameters()`` (PyTorch's default initialization).
    """

    name = "agscl"
    state_keys = ("hparams", "omega", "anchor_w", "anchor_b", "released", "fixed_zero", "head_fixed_zero", "generator",
                  "history", "held_zero")
    hparams = (
        Hparam("lam", 400.0, "drift-penalty strength on important nodes; in RL, Omega is the plain mean activation, "
               "about 1/21 of the authors' RL Omega, so their lambda 100 / 1000 is 2100 / 21000 here",
               low=0.0, rl_flag="agscl_lambda", rl_default=2100.0),
        Hparam("mu", 10.0, "group-lasso strength on unimportant nodes", low=0.0, rl_default=0.1),
        Hparam("eta", 0.9, "decay of the accumulated node importance", low=0.0, high=1.0, low_open=True),
        Hparam("rho", 0.3, "probability of re-initializing an unimportant node's incoming weights", low=0.0, high=1.0),
        Hparam("prox_every", "epoch", "proximal step once per (PPO) epoch (the authors' code) or after every optimizer "
               "step (the paper's equations)", choices=PROX_FREQUENCIES),
        Hparam("zero_init", True, "(I.1) zero every outgoing weight of an unimportant node, and keep those into "
               "important nodes and learned heads at zero for good (--no-zero-init: ablation)"),
        Hparam("rand_init", True, "(I.2) re-draw an unimportant node's incoming weights with probability rho, from the "
               "network's own initializer (--no-rand-init: ablation)"),
    )

    def __init__(
        self,
        trunk: nn.Module,
        heads: Sequence[HeadSpec],
        *,
        mu: float,
        lam: float,
        eta: float = 0.9,
        rho: float = 0.3,
        prox_every: str = "epoch",
        zero_init: bool = True,
        rand_init: bool = True,
        seed: int | None = None,
        init_fn: Callable[[nn.Module], Any] | None = None,
    ) -> None:
        check_range("mu", mu, 0.0, None)
        check_range("lam", lam, 0.0, None)
        check_range("eta", eta, 0.0, 1.0, low_open=True)
        check_range("rho", rho, 0.0, 1.0)
        if prox_every not in PROX_FREQUENCIES:
            raise ValueError(f"prox_every={prox_every!r} is not valid: choose one of {', '.join(PROX_FREQUENCIES)}")
        super().__init__(trunk, heads)
        self.mu, self.lam, self.eta, self.rho = float(mu), float(lam), float(eta), float(rho)
        self.prox_every = prox_every
        self.zero_init, self.rand_init = bool(zero_init), bool(rand_init)
        self.init_fn = init_fn
        self.layers: list[NodeLayer] = discover_layers(trunk)
        norms = [name for name, m in trunk.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            raise ValueError(f"the trunk has BatchNorm layers ({', '.join(norms)}): their scale, shift and running "
                             "statistics are not part of any node's group, so AGS-CL could not freeze nodes exactly; "
                             "use a trunk without BatchNorm")
        self.num_groups = group_count(self.layers)
        device = module_device(trunk)
        self.omega = [torch.zeros(layer.num_nodes, device=device) for layer in self.layers]
        # Proximal targets per layer, snapshot after each task's re-init: theta_hat for the
        # important nodes' rows and 0 for the unimportant ones (their operator shrinks to 0), so
        # that one operator serves both kinds of rows. The unimportant rows' own snapshot is kept
        # aside (same memory in total) for the used-capacity statistic.
        self.anchor_w: list[torch.Tensor] | None = None
        self.anchor_b: list[torch.Tensor | None] | None = None
        self.released: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None = None
        # Zero-fixed weights (I.1): per trunk layer, and per (task, head index) for heads.
        self.fixed_zero: list[torch.Tensor | None] = [None] * len(self.layers)
        self.head_fixed_zero: dict[tuple[int, int], torch.Tensor] = {}
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed))
        self.history: list[dict[str, float]] = []
        # Unimportant nodes whose group the proximal operator left exactly zero at its latest
        # step (or that were zero at the task's start): the lasso's decision, see protected_nodes.
        self.held_zero: list[torch.Tensor] = [torch.zeros(layer.num_nodes, dtype=torch.bool, device=device)
                                              for layer in self.layers]

    # -- hooks -------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        super().begin_task(task)
        if self.anchor_w is None:
            self._snapshot_anchor()
        with torch.no_grad():
            self.held_zero = [(omega == 0) & (_group_norms(layer.module) == 0) for omega, layer in zip(self.omega, self.layers)]

    def penalty(self) -> torch.Tensor:
        """Zero: both penalty terms act through the proximal step, not through the gradient."""
        return torch.zeros((), device=module_device(self.trunk))

    def after_step(self, lr: float) -> None:
        # Masks first: zero-fixed weights that the optimizer just moved must not enter the
        # drift norms of the prox step (they would let frozen nodes move).
        self.apply_masks()
        if self.prox_every == "step":
            self.proximal_step(lr)  # keeps exact zeros: targets are 0 wherever a mask is

    def end_epoch(self, lr: float) -> None:
        if self.prox_every == "epoch":  # after_step has applied the masks already
            self.proximal_step(lr)

    @torch.no_grad()
    def proximal_step(self, alpha: float) -> None:
        """Apply eq. (7) with step size ``alpha`` to every node of every trunk layer.

        Every row shrinks towards its target (the anchor for important nodes, 0 for the
        others) by ``max(0, 1 - tau/||row - target||)`` with ``tau = alpha*lam*Omega`` or
        ``alpha*mu``. Rows are processed in blocks of about ``BLOCK_FLOATS`` so that the
        temporary ``row - target`` stays in cache: the step reads weights and targets once and
        writes the weights once. ``torch.lerp`` is exact at both ends, so frozen groups equal
        their anchor and untouched groups (threshold 0) equal themselves bit for bit.
        """
        if self.anchor_w is None:
            self._snapshot_anchor()
        with full_precision(self.trunk):
            self._proximal_step(alpha)

    def _proximal_step(self, alpha: float) -> None:
        for index, layer in enumerate(self.layers):
            module = layer.module
            weight = module.weight.detach()
            rows = weight.view(weight.shape[0], -1) if weight.is_contiguous() else weight.flatten(1)
            target = self.anchor_w[index].view(rows.shape)
            omega = self.omega[index]
            tau = torch.where(omega > 0, alpha * self.lam * omega, torch.full_like(omega, alpha * self.mu))
            bias = None if module.bias is None else module.bias.detach()
            bias_drift = None if bias is None else bias - self.anchor_b[index]
            block = max(1, BLOCK_FLOATS // rows.shape[1])
            factors = []
            for start in range(0, rows.shape[0], block):
                part = slice(start, start + block)
                norm = torch.linalg.vector_norm(rows[part] - target[part], dim=1)
                if bias_drift is not None:
                    norm = torch.hypot(norm, bias_drift[part])
                factor = shrink_factor(norm, tau[part])
                torch.lerp(target[part], rows[part], factor.unsqueeze(1), out=rows[part])
                factors.append(factor)
            factor = torch.cat(factors)
            if bias is not None:
                bias.copy_(torch.lerp(self.anchor_b[index], bias, factor))
            if rows.data_ptr() != weight.data_ptr():
                weight.copy_(rows.view_as(weight))
            self.held_zero[index] = (omega == 0) & (factor == 0)  # shrunk exactly to their target 0

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Keep every zero-fixed weight (I.1) at exactly zero."""
        for layer, fixed in zip(self.layers, self.fixed_zero):
            if fixed is not None:
                layer.module.weight.masked_fill_(fixed, 0.0)
        for (task, position), fixed in self.head_fixed_zero.items():
            head_input_layer(task_heads(self.heads, task)[position]).weight.masked_fill_(fixed, 0.0)

    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        """Update Omega from ``inputs`` (that task's data), then (I.1), (I.2), new anchor."""
        moved = self._moved_nodes()
        mean_activation = self.mean_activations(inputs)
        for index, activation in enumerate(mean_activation):
            self.omega[index] = self.eta * self.omega[index] + activation
        super().end_task(task, inputs=())
        if self.zero_init:
            self._zero_fix(task)
        if self.rand_init:
            self._rand_init()
        self.apply_masks()
        self._snapshot_anchor()
        self.history.append(
            {
                "task": float(task),
                "sparsity": self.sparsity(),
                "used_capacity": float(self.num_groups - int(moved.sum())) / self.num_groups,
            }
        )

    # -- importance ------------------------------------------------------------------------
    @torch.no_grad()
    def mean_activations(self, inputs: Iterable[Any]) -> list[torch.Tensor]:
        """Mean ReLU activation of every node over ``inputs`` (conv: over batch and positions),
        in eval mode (dropout off, batch norm frozen) and without gradients."""
        device = module_device(self.trunk)
        sums = [torch.zeros(layer.num_nodes, device=device, dtype=torch.float64) for layer in self.layers]
        count = 0

        def hook_for(index: int):
            def hook(_module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
                per_sample = out if out.ndim == 2 else out.flatten(2).mean(dim=2)
                sums[index] += per_sample.sum(dim=0, dtype=torch.float64)
            return hook

        handles = [layer.activation.register_forward_hook(hook_for(i)) for i, layer in enumerate(self.layers)]
        try:
            with eval_mode(self.trunk), full_precision(self.trunk):
                for x in iter_batches(inputs):
                    self.trunk(x.to(device))
                    count += x.shape[0]
        finally:
            for handle in handles:
                handle.remove()
        if count == 0:
            raise ValueError("end_task got no inputs: AGS-CL needs the task's data to compute node importance")
        return [(s / count).to(self.omega[i].dtype) for i, s in enumerate(sums)]

    # -- re-initialization -----------------------------------------------------------------
    @torch.no_grad()
    def _zero_fix(self, task: int) -> None:
        """(I.1), in the paper's scope and order: every outgoing weight of an unimportant node
        is set to 0, into every row of the next layer (the not re-drawn unimportant rows too);
        those into important nodes and into learned tasks' heads stay 0 for all later tasks."""
        for index in range(1, len(self.layers)):
            layer = self.layers[index]
            weight = layer.module.weight
            from_unimportant = spread_over_inputs(self.omega[index - 1] == 0, weight, layer.in_repeat)
            weight.masked_fill_(from_unimportant.expand_as(weight), 0.0)
            into_important = (self.omega[index] > 0).view((-1,) + (1,) * (weight.ndim - 1))
            self.fixed_zero[index] = _union(self.fixed_zero[index], (from_unimportant & into_important).expand_as(weight))
        last_unimportant = self.omega[-1] == 0
        for learned in range(task + 1):
            for position, head in enumerate(task_heads(self.heads, learned)):
                weight = head_input_layer(head).weight
                new = spread_over_inputs(last_unimportant, weight).expand_as(weight)
                key = (learned, position)
                self.head_fixed_zero[key] = _union(self.head_fixed_zero.get(key), new)

    @torch.no_grad()
    def _rand_init(self) -> None:
        """(I.2): re-draw the incoming weights (and bias) of each unimportant node with
        probability rho, from the network's own initialization: a copy of the layer is
        re-initialized (``init_fn``, else the layer's ``reset_parameters``) and the chosen rows
        are taken from it, as the authors took them from a freshly built model. The draws come
        from this method's generator, never from torch's global ones: the fresh copy is built on
        the CPU, from the CPU generator seeded by this method's generator inside ``fork_rng``,
        which restores it; no device's generator is seeded (``torch.manual_seed`` would reset
        every CUDA generator too), so a run on any device draws the same re-initialization."""
        for index, layer in enumerate(self.layers):
            module = layer.module
            chosen = (self.omega[index] == 0).cpu() & (torch.rand(layer.num_nodes, generator=self.generator) < self.rho)
            if not bool(chosen.any()):
                continue
            fresh = copy.deepcopy(module).cpu()
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(int(torch.randint(0, 2**62, (), generator=self.generator)))
                if self.init_fn is not None:
                    self.init_fn(fresh)
                else:
                    fresh.reset_parameters()
            fresh = fresh.to(module.weight.device)
            chosen_dev = chosen.to(module.weight.device)
            module.weight[chosen_dev] = fresh.weight.detach()[chosen_dev]
            if module.bias is not None:
                module.bias[chosen_dev] = fresh.bias.detach()[chosen_dev]

    @torch.no_grad()
    def _snapshot_anchor(self) -> None:
        """Targets of the next task's prox (anchor rows of important nodes, zeros for the
        others) and the released rows' own values (for the used-capacity statistic)."""
        self.anchor_w, self.anchor_b, self.released = [], [], []
        for index, layer in enumerate(self.layers):
            module = layer.module
            unimportant = self.omega[index] == 0
            keep = (~unimportant).to(module.weight.dtype)
            self.anchor_w.append(module.weight.detach() * keep.view((-1,) + (1,) * (module.weight.ndim - 1)))
            self.anchor_b.append(None if module.bias is None else module.bias.detach() * keep)
            self.released.append((
                unimportant.clone(),
                module.weight.detach()[unimportant].clone(),
                None if module.bias is None else module.bias.detach()[unimportant].clone(),
            ))

    @torch.no_grad()
    def _moved_nodes(self) -> torch.Tensor:
        """Boolean per node (all layers concatenated): did its group change since the snapshot?"""
        if self.anchor_w is None:
            return torch.ones(self.num_groups, dtype=torch.bool)
        moved = []
        for index, layer in enumerate(self.layers):
            module = layer.module
            drift = _group_norms(module, self.anchor_w[index], self.anchor_b[index])
            rows, old_w, old_b = self.released[index]
            change = torch.linalg.vector_norm((module.weight.detach()[rows] - old_w).flatten(1), dim=1)
            if old_b is not None:
                change = torch.hypot(change, module.bias.detach()[rows] - old_b)
            drift[rows] = change
            moved.append(drift != 0)
        return torch.cat(moved).cpu()

    # -- what a composed plasticity method must leave alone (agscl/compose.py) ---------------
    def protected_nodes(self) -> list[torch.Tensor]:
        """Per trunk layer, True for the nodes no plasticity method may change: the important
        nodes of earlier tasks (``Omega > 0``, frozen by the drift penalty) and the unimportant
        nodes the group lasso holds at exactly zero (``held_zero``). The lasso empties a node on
        purpose, to free it for later tasks, and (I.2) re-draws a fraction ``rho`` of the freed
        nodes at each task's end; a plasticity method re-filling them would undo that decision
        within the task. What stays free: unimportant nodes with a nonzero group, e.g. ReLUs that
        died with their weights, which AGS-CL has no mechanism to revive during a task."""
        return [(omega > 0) | held for omega, held in zip(self.omega, self.held_zero)]

    @torch.no_grad()
    def protected(self) -> dict[torch.Tensor, torch.Tensor]:
        """Per parameter, True where no plasticity method may write: the rows (weights and bias)
        of :meth:`protected_nodes`, and the heads of learned tasks other than the current one (such
        a head reads the frozen nodes; its columns of free nodes are zero-fixed by (I.1))."""
        masks: dict[torch.Tensor, torch.Tensor] = {}
        for layer, nodes in zip(self.layers, self.protected_nodes()):
            module = layer.module
            masks[module.weight] = nodes.view((-1,) + (1,) * (module.weight.ndim - 1)).expand_as(module.weight)
            if module.bias is not None:
                masks[module.bias] = nodes
        masks.update(self.learned_heads_mask())
        return masks

    # -- statistics ------------------------------------------------------------------------
    def sparsity(self) -> float:
        """``|G0| / |G|``: fraction of nodes that are still unimportant."""
        return float(sum(int((o == 0).sum()) for o in self.omega)) / self.num_groups

    @torch.no_grad()
    def group_counts(self) -> dict[str, int]:
        """Important nodes exactly at their anchor (frozen) and groups exactly zero, right now."""
        frozen = zero = 0
        for index, layer in enumerate(self.layers):
            important = self.omega[index] > 0
            zero += int((_group_norms(layer.module) == 0).sum())
            if self.anchor_w is not None and bool(important.any()):
                drift = _group_norms(layer.module, self.anchor_w[index], self.anchor_b[index])
                frozen += int(((drift == 0) & important).sum())
        return {"frozen_groups": frozen, "zero_groups": zero}

    def stored_floats(self) -> int:
        """One importance value per node (the paper's memory measure, Figure 6a)."""
        return self.num_groups

    def statistics(self) -> dict[str, float]:
        counts = self.group_counts()
        masks = [m for m in self.fixed_zero if m is not None] + list(self.head_fixed_zero.values())
        stats = {
            "stored_floats": float(self.stored_floats()),
            "anchor_floats": float(sum(w.numel() + (0 if b is None else b.numel()) for w, b in zip(self.anchor_w or [], self.anchor_b or []))),
            "zero_fixed_weights": float(sum(int(m.sum()) for m in masks)),
            "sparsity": self.sparsity(),
            "groups": float(self.num_groups),
            "frozen_groups": float(counts["frozen_groups"]),
            "zero_groups": float(counts["zero_groups"]),
        }
        if self.history:
            stats["used_capacity"] = self.history[-1]["used_capacity"]
        return stats

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            hparams={"mu": self.mu, "lam": self.lam, "eta": self.eta, "rho": self.rho, "prox_every": self.prox_every,
                     "zero_init": self.zero_init, "rand_init": self.rand_init},
            omega=[o.clone() for o in self.omega],
            anchor_w=None if self.anchor_w is None else [w.clone() for w in self.anchor_w],
            anchor_b=None if self.anchor_b is None else [None if b is None else b.clone() for b in self.anchor_b],
            released=None if self.released is None else [
                tuple(None if t is None else t.clone() for t in entry) for entry in self.released
            ],
            fixed_zero=[None if m is None else m.clone() for m in self.fixed_zero],
            head_fixed_zero={f"{t}:{p}": m.clone() for (t, p), m in self.head_fixed_zero.items()},
            generator=self.generator.get_state(),
            history=[dict(h) for h in self.history],
            held_zero=[h.clone() for h in self.held_zero],
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = module_device(self.trunk)
        if len(state["omega"]) != len(self.layers):
            raise ValueError(f"state has {len(state['omega'])} layers but the trunk has {len(self.layers)}")
        for key, value in state["hparams"].items():
            setattr(self, key, value)
        self.omega = [o.to(device) for o in state["omega"]]
        self.anchor_w = None if state["anchor_w"] is None else [w.to(device) for w in state["anchor_w"]]
        self.anchor_b = None if state["anchor_b"] is None else [None if b is None else b.to(device) for b in state["anchor_b"]]
        self.released = None if state["released"] is None else [
            tuple(None if t is None else t.to(device) for t in entry) for entry in state["released"]
        ]
        self.fixed_zero = [None if m is None else m.to(device) for m in state["fixed_zero"]]
        self.head_fixed_zero = {}
        for key, mask in state["head_fixed_zero"].items():
            task, position = (int(v) for v in key.split(":"))
            self.head_fixed_zero[(task, position)] = mask.to(device)
        self.generator.set_state(state["generator"])
        self.history = [dict(h) for h in state["history"]]
        if "held_zero" in state:  # states written before it was kept: begin_task recomputes it
            self.held_zero = [h.to(device) for h in state["held_zero"]]
