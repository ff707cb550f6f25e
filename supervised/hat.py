"""HAT, hard attention to the task (Serra et al., ICML 2018): the paper's architectural baseline.

Every node of the trunk (the same nodes AGS-CL regularizes: Linear units and Conv2d channels,
read by ``agscl.groups.discover_layers``) gets a per-task gate ``a_t = sigmoid(s * e_t)`` that
multiplies its ReLU output. ``e_t`` is a learned task embedding; ``s`` is annealed from
``1/smax`` to ``smax`` over the batches of each epoch, and inference uses ``smax`` so the gates
are (numerically) binary. After a task the cumulative mask ``a_<=t = max(a_<=t-1, a_t)`` is kept
and from then on the gradient of each weight ``w_ij`` (unit ``j`` of layer ``l-1`` into unit
``i`` of layer ``l``) is multiplied by ``1 - min(a_<=t[l, i], a_<=t[l-1, j])`` (bias: by
``1 - a_<=t[l, i]``): units that earlier tasks use receive no gradient from later ones.
The loss adds ``c * sum(a_t * (1 - a_<t)) / sum(1 - a_<t)`` so a task uses few new units.

It follows the ``agscl`` protocol without changes to the trainer loop: the gates are forward
hooks on the trunk's ReLUs, the gradient masks and the embedding-gradient compensation are
tensor hooks, so a plain ``loss.backward(); optimizer.step()`` does the right thing. The
trainer additionally (1) optimizes :meth:`HAT.parameters` (the embeddings), (2) tells the
number of batches per epoch (:meth:`HAT.set_epoch_length`) for the annealing, and (3) selects
the task whose gates to use when evaluating (:meth:`HAT.use_task`).

Hyperparameters ``c = 0.75`` and ``smax = 400`` are HAT's published choices, also those of the
AGS-CL authors' HAT baseline; embeddings are clamped to ``[-6, 6]`` and ``cosh`` arguments to
``[-50, 50]`` as in HAT's code.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from agscl.base import ContinualMethod, HeadSpec, Hparam, check_range, module_device
from agscl.groups import NodeLayer, discover_layers, spread_over_inputs
from agscl.registry import register

THRES_COSH = 50.0
THRES_EMB = 6.0


class HAT(ContinualMethod):
    """Hard attention to the task on a plain Conv2d/Linear+ReLU trunk.

    Args:
        num_tasks: number of task embeddings to allocate (HAT needs it up front).
        c: strength of the capacity regularizer.
        smax: final (and inference) gate slope.
    """

    name = "hat"
    state_keys = ("hparams", "embeddings", "mask_pre")
    learners = ("supervised",)  # the agent has no per-epoch gate annealing
    hparams = (
        Hparam("c", 0.75, "capacity regularization strength", low=0.0),
        Hparam("smax", 400.0, "final (and inference) gate slope", low=1.0),
    )

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, num_tasks: int, c: float = 0.75, smax: float = 400.0) -> None:
        if isinstance(num_tasks, bool) or int(num_tasks) != num_tasks or num_tasks < 1:
            raise ValueError(f"num_tasks={num_tasks!r} must be an integer >= 1")
        check_range("c", c, 0.0, None)
        check_range("smax", smax, 1.0, None)
        super().__init__(trunk, heads)
        try:
            self.layers: list[NodeLayer] = discover_layers(trunk)
        except ValueError as exc:
            raise ValueError(f"HAT needs a plain Conv2d/Linear+ReLU chain trunk: {exc}") from None
        self.num_tasks, self.c, self.smax = int(num_tasks), float(c), float(smax)
        device = module_device(trunk)
        # One embedding table per layer; HAT initializes them N(0, 1).
        self.embeddings = nn.ModuleList(nn.Embedding(self.num_tasks, layer.num_nodes) for layer in self.layers).to(device)
        self.mask_pre: list[torch.Tensor] | None = None  # cumulative gates of the tasks learned
        self._grad_masks: dict[int, torch.Tensor] = {}  # id(parameter) -> gradient multiplier
        self._active_task: int | None = None
        self._batches_per_epoch = 1
        self._batch = 0
        self._handles = [layer.activation.register_forward_hook(self._gate_hook(i)) for i, layer in enumerate(self.layers)]
        for layer in self.layers:
            for param in (layer.module.weight, layer.module.bias):
                if param is not None:
                    self._handles.append(param.register_hook(self._grad_hook(param)))
        for table in self.embeddings:
            self._handles.append(table.weight.register_hook(self._compensate_hook(table.weight)))

    # -- extra plumbing the trainer uses -----------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        """The task embeddings: optimize them with the trunk and heads."""
        return self.embeddings.parameters()

    def set_epoch_length(self, batches: int) -> None:
        """Number of optimizer steps per epoch (the annealing of ``s`` restarts every epoch)."""
        if batches < 1:
            raise ValueError(f"batches={batches} must be >= 1")
        self._batches_per_epoch = int(batches)

    @contextlib.contextmanager
    def use_task(self, task: int) -> Iterator[None]:
        """Run the trunk with ``task``'s gates inside the block (evaluation of any task)."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task {task} has no embedding: valid task ids are 0..{self.num_tasks - 1}")
        previous = self._active_task
        self._active_task = task
        try:
            yield
        finally:
            self._active_task = previous

    def remove_hooks(self) -> None:
        """Detach HAT from the trunk (the trunk then runs ungated)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- gates -------------------------------------------------------------------------------
    @property
    def s(self) -> float:
        """Current gate slope: annealed within the epoch in training, ``smax`` otherwise."""
        if not self.trunk.training:
            return self.smax
        progress = min(self._batch, self._batches_per_epoch - 1) / max(self._batches_per_epoch - 1, 1)
        return 1.0 / self.smax + (self.smax - 1.0 / self.smax) * progress

    def gate(self, index: int, task: int, s: float | None = None) -> torch.Tensor:
        """``sigmoid(s * e_task)`` of layer ``index`` (differentiable in the embedding)."""
        s = self.s if s is None else s
        return torch.sigmoid(s * self.embeddings[index].weight[task])

    def gates(self, task: int, s: float | None = None) -> list[torch.Tensor]:
        """:meth:`gate` of every layer."""
        return [self.gate(i, task, s) for i in range(len(self.layers))]

    def _gate_hook(self, index: int):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            task = self._active_task if self._active_task is not None else self.task
            if task is None:
                raise RuntimeError("HAT gates need a task: call begin_task(t) or run inside use_task(t)")
            gate = self.gate(index, task)
            return output * gate.view((1, -1) + (1,) * (output.ndim - 2))
        return hook

    # -- gradient surgery ------------------------------------------------------------------
    def _grad_hook(self, param: nn.Parameter):
        key = id(param)

        def hook(grad: torch.Tensor) -> torch.Tensor:
            mask = self._grad_masks.get(key)
            return grad if mask is None else grad * mask
        return hook

    def _compensate_hook(self, weight: nn.Parameter):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            # d sigmoid(s e)/de vanishes for small s early in an epoch; rescale towards the
            # gradient at smax (HAT eq. 5), keeping the cosh arguments in range.
            s = self.s
            e = weight.detach()
            num = torch.cosh(torch.clamp(s * e, -THRES_COSH, THRES_COSH)) + 1
            den = torch.cosh(e) + 1
            return grad * (self.smax / s) * num / den
        return hook

    @torch.no_grad()
    def _update_grad_masks(self) -> None:
        self._grad_masks = {}
        if self.mask_pre is None:
            return
        previous: torch.Tensor | None = None
        for layer, used in zip(self.layers, self.mask_pre):
            weight = layer.module.weight
            rows = used.view((-1,) + (1,) * (weight.ndim - 1))
            if previous is None:
                blocked = rows.expand_as(weight)
            else:
                blocked = torch.minimum(rows, spread_over_inputs(previous, weight, layer.in_repeat)).expand_as(weight)
            self._grad_masks[id(weight)] = (1.0 - blocked).contiguous()
            if layer.module.bias is not None:
                self._grad_masks[id(layer.module.bias)] = 1.0 - used
            previous = used

    # -- protocol ------------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task {task} is out of range: HAT was built for tasks 0..{self.num_tasks - 1}")
        super().begin_task(task)
        self._batch = 0

    def penalty(self) -> torch.Tensor:
        """``c * sum(a_t * (1 - a_<t)) / sum(1 - a_<t)`` over all nodes."""
        if self.task is None or self.c == 0.0:
            return torch.zeros((), device=module_device(self.trunk))
        gates = torch.cat(self.gates(self.task))
        free = torch.ones_like(gates) if self.mask_pre is None else 1.0 - torch.cat(self.mask_pre)
        return self.c * (gates * free).sum() / free.sum().clamp_min(1e-12)

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        for table in self.embeddings:
            table.weight.clamp_(-THRES_EMB, THRES_EMB)
        self._batch += 1

    def end_epoch(self, lr: float) -> None:
        self._batch = 0

    @torch.no_grad()
    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        """Fold ``task``'s binary-ish gates (at ``smax``) into the cumulative mask."""
        current = [g.detach().clone() for g in self.gates(task, s=self.smax)]
        self.mask_pre = current if self.mask_pre is None else [torch.maximum(p, g) for p, g in zip(self.mask_pre, current)]
        self._update_grad_masks()
        super().end_task(task, inputs)

    # -- bookkeeping -------------------------------------------------------------------------
    def used_fraction(self) -> float:
        """Fraction of nodes whose cumulative gate is above 1/2 (used by some learned task)."""
        if self.mask_pre is None:
            return 0.0
        used = torch.cat(self.mask_pre)
        return float((used > 0.5).float().mean())

    def stored_floats(self) -> int:
        """The cumulative mask (one float per node) plus the learned tasks' embeddings."""
        nodes = sum(layer.num_nodes for layer in self.layers)
        return (nodes if self.mask_pre is not None else 0) + self.tasks_learned * nodes

    def statistics(self) -> dict[str, float]:
        used = self.used_fraction()
        return {
            "stored_floats": float(self.stored_floats()),
            "used_capacity": used,
            "sparsity": 1.0 - used if self.mask_pre is not None else 1.0,
            "groups": float(sum(layer.num_nodes for layer in self.layers)),
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            hparams={"c": self.c, "smax": self.smax, "num_tasks": self.num_tasks},
            embeddings=[t.weight.detach().clone() for t in self.embeddings],
            mask_pre=None if self.mask_pre is None else [m.clone() for m in self.mask_pre],
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["hparams"]["num_tasks"] != self.num_tasks or len(state["embeddings"]) != len(self.embeddings):
            raise ValueError(
                f"HAT state for {state['hparams']['num_tasks']} tasks / {len(state['embeddings'])} layers "
                f"cannot be loaded into {self.num_tasks} tasks / {len(self.embeddings)} layers"
            )
        self.c, self.smax = float(state["hparams"]["c"]), float(state["hparams"]["smax"])
        device = self.embeddings[0].weight.device
        with torch.no_grad():
            for table, weight in zip(self.embeddings, state["embeddings"]):
                table.weight.copy_(weight.to(device))
        self.mask_pre = None if state["mask_pre"] is None else [m.to(device) for m in state["mask_pre"]]
        self._update_grad_masks()


register("hat", HAT)  # the agscl registry is the library's; this learner adds its baseline on import
