"""The one protocol every continual-learning method follows, in RL and in supervised training.

A learner drives a method through the same hooks in the same order::

    method.begin_task(t)
    for each epoch:
        for each minibatch:
            loss = task_loss + method.penalty()
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            method.after_step(lr)          # masks, path integrals, prox if prox_every == "step"
        method.end_epoch(lr)               # prox if prox_every == "epoch"
    method.end_task(t, inputs)             # importance from the task's inputs (no labels needed)

``lr`` is the learning rate the optimizer just used (the proximal step size ``alpha``).
A method that has nothing to do in a hook does nothing there. Methods are small objects in
the style of ``torch.optim``: ``state_dict`` / ``load_state_dict``, no hidden globals.

The model contract is a shared ``trunk`` (``trunk(x)`` gives the features) and ``heads``, a
sequence indexed by task id whose items are one ``nn.Module`` or a sequence of them (e.g. an
actor and a critic). The first module of a task's heads is its *output head* (classifier or
actor logits): EWC and MAS measure importance through it. ``heads`` is read lazily, so a
list (or ``nn.ModuleList``) that grows as tasks arrive is fine.

A learner may instead ask a method with ``fused_penalty = True`` to add the penalty's gradient
to ``p.grad`` right after ``loss.backward()`` (:meth:`ContinualMethod.add_penalty_grad`): the
same update without an autograd graph for the penalty (the RL agent does, ``--fused-penalty``).

Architectural methods override optional hooks that every learner calls (their defaults do
nothing): ``parameters()`` (extra trainable parameters for the optimizer),
``set_epoch_length(batches)``, ``use_task(task)`` (the context in which a task is evaluated and
its importance collected; HAT in ``supervised/hat.py`` and PackNet select the task's gates or
weights) and ``prune(task)`` with a ``retrain_fraction`` (PackNet: called once when the task's
retraining phase begins, the last ``retrain_fraction`` of its updates or epochs, see
:func:`retrain_start`; the learner then resets its optimizer).

Every learner calls :meth:`ContinualMethod.attach_optimizer` with each optimizer it builds (a
task's first, a fresh one after PackNet's pruning or a plateau, one restored from a checkpoint),
before the first ``step()`` of that optimizer. Most methods ignore it; ReDo
(:mod:`agscl.redo`) needs it to zero the Adam moments of the units it re-initializes. Between
two calls the method may read and edit that optimizer's ``state`` in its hooks.

**State.** What a method learns or counts (PackNet's owner map and trained masks, AGS-CL's
Omega and anchors, EWC's importances, a plasticity method's generator) is its *state*, and
:attr:`ContinualMethod.state_keys` is the one place a method declares it: the entries its
``state_dict`` adds to the base's (``name``, ``task``, ``tasks_learned``), which its
``load_state_dict`` restores. A resumed run is the same run only if every such entry is there;
``tests/test_state_contract.py`` checks, for every registered method, that ``state_dict`` writes
exactly these keys and that a method restored from them continues bit for bit as the original.
Everything else a method holds is derived from the state and the network (rebuilt in
``load_state_dict`` or ``begin_task``).

A stability method (AGS-CL, PackNet) may be composed with a plasticity method (ReDo,
shrink-and-perturb, L2 Init) under one name, ``"agscl+redo"``: see :mod:`agscl.compose` for the
hook order and for the rule that a plasticity method never changes what the stability method
``protected()`` returns.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Iterable, Iterator, Sequence

import torch
from torch import nn

HeadSpec = nn.Module | Sequence[nn.Module]

#: Keywords a learner offers every method (the run's task count, seed, the network's initializer);
#: ``agscl.registry.make_method`` passes each only to a constructor that takes it.
CONTEXT_KEYS = ("num_tasks", "seed", "init_fn")


def task_heads(heads: Sequence[HeadSpec], task: int) -> list[nn.Module]:
    """The list of head modules of ``task`` (one module or a sequence of them)."""
    if task < 0 or task >= len(heads):
        raise ValueError(f"task {task} has no head: valid task ids are 0..{len(heads) - 1}")
    spec = heads[task]
    if isinstance(spec, nn.ModuleList) or not isinstance(spec, nn.Module):
        return list(spec)
    return [spec]


def iter_batches(inputs: Iterable[Any]) -> Iterator[torch.Tensor]:
    """Yield input tensors from an iterable of tensors or of ``(x, y, ...)`` tuples."""
    for item in inputs:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"end_task inputs must be tensors or (x, ...) tuples, got {type(item).__name__}")
        yield item


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode (dropout off, BatchNorm running stats), then restore each
    submodule's own train/eval flag, so a partially frozen model comes back exactly as it was."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def full_precision(module: nn.Module) -> ContextManager[Any]:
    """Autocast off on ``module``'s device: importances and proximal steps are computed in the
    parameters' own precision (fp32) even when a learner calls them inside a bf16/fp16 autocast
    region, so that exact zeros, exact freezes and importances never depend on it."""
    return torch.autocast(module_device(module).type, enabled=False)


def check_range(name: str, value: float, low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ``ValueError`` naming ``name=value`` and the allowed interval when out of range."""
    bad = value != value  # NaN
    if low is not None:
        bad = bad or (value <= low if low_open else value < low)
    if high is not None:
        bad = bad or (value >= high if high_open else value > high)
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name}={value!r} is out of range: allowed {name} in {interval}")


@dataclass(frozen=True)
class Hparam:
    """One user-facing hyperparameter of a method, declared on its class (``hparams``): the
    learners build their ``--method`` flags, defaults, help and range checks from it, so a new
    method needs no CLI code of its own.

    ``name`` is the constructor keyword (and the supervised trainer's flag); ``rl_flag`` the
    agent's flag when it differs (``agscl_lambda`` for AGS-CL's ``lam``), ``rl_default`` the
    agent's default when it differs. The type is the default's (bool, int, float or str).
    """

    name: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    rl_flag: str | None = None
    rl_default: Any = None

    @property
    def kind(self) -> type:
        return type(self.default)

    @property
    def flag(self) -> str:
        """The agent's field name for this hyperparameter."""
        return self.rl_flag or self.name

    def allowed(self) -> str:
        """The allowed values in words, as error messages and help pages show them."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.low is None and self.high is None:
            return "any number"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{lo}, {hi}{')' if self.high_open or self.high is None else ']'}"

    def check(self, value: Any, label: str | None = None) -> None:
        """``ValueError`` with one line naming ``label=value`` and :meth:`allowed` when out of range."""
        label = label or self.name
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{label}={value!r} is not valid: choose one of {', '.join(self.choices)}")
            return
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{label}={value!r} is out of range: allowed {label} true or false")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{label}={value!r} is not a number")
        check_range(label, float(value), self.low, self.high, low_open=self.low_open, high_open=self.high_open)


def retrain_start(method: "ContinualMethod", total: int) -> int | None:
    """The 1-based update (or epoch) of ``total`` at which ``method``'s retraining phase begins:
    the last ``round(retrain_fraction * total)`` of them retrain (at least one when the fraction
    is > 0). None: the method never retrains (fraction 0: the default, or a PackNet whose
    ``end_task`` prunes without retraining)."""
    fraction = float(method.retrain_fraction or 0.0)
    if fraction <= 0:
        return None
    retrain = min(total, max(1, round(fraction * total)))
    return total - retrain + 1


class ContinualMethod:
    """Base class: fine-tuning semantics (every hook does nothing).

    Subclasses override the hooks they need. ``trunk_parameters`` are the shared parameters
    that weight-wise methods (EWC, MAS, SI, RWALK) regularize; task heads are task-specific
    and receive no gradient from other tasks' losses, so they are not regularized.
    """

    name = "finetune"
    hparams: ClassVar[tuple[Hparam, ...]] = ()
    """The user-facing hyperparameters (constructor keywords); see :class:`Hparam`."""
    learners: ClassVar[tuple[str, ...]] = ("rl", "supervised")
    """Which learners can drive the method: ``rl`` (agents/ppo_continual.py), ``supervised``."""
    state_keys: ClassVar[tuple[str, ...]] = ()
    """The entries :meth:`state_dict` adds to the base's ``name``, ``task`` and ``tasks_learned``:
    the method's whole state (see the module docstring). A method that keeps anything a resumed
    run needs lists it here and writes and reads it in ``state_dict`` / ``load_state_dict``."""
    retrain_fraction: float = 0.0
    """The last fraction of each task's updates (epochs) spent retraining after :meth:`prune`; 0: none."""

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec]) -> None:
        self.trunk = trunk
        self.heads = heads
        self.task: int | None = None
        self.tasks_learned = 0

    @classmethod
    def declared_hparams(cls, fixed: dict[str, Any]) -> tuple[Hparam, ...]:
        """The hyperparameters a registry entry with constructor keywords ``fixed`` takes."""
        return tuple(h for h in cls.hparams if h.name not in fixed)

    # -- hooks -------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        """Called before the first optimizer step of ``task``."""
        self.task = task

    def penalty(self) -> torch.Tensor:
        """Differentiable term to add to the task loss (a 0-dim tensor)."""
        return torch.zeros((), device=module_device(self.trunk))

    fused_penalty: bool = False
    """Whether :meth:`add_penalty_grad` may replace ``penalty()`` in the loss."""

    def add_penalty_grad(self) -> torch.Tensor:
        """Add ``d penalty / d theta`` to the trunk's ``.grad`` in place (call it after
        ``loss.backward()`` on a loss without ``penalty()``) and return the penalty's value,
        detached. Only for methods with ``fused_penalty``."""
        raise NotImplementedError(f"{self.name} has no fused penalty gradient: add penalty() to the loss")

    def after_step(self, lr: float) -> None:
        """Called after every ``optimizer.step()`` with the lr that step used."""

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called by the learner with every optimizer it builds or restores, before that
        optimizer's first step (see the module docstring). Does nothing by default."""

    def end_epoch(self, lr: float) -> None:
        """Called after each epoch (a PPO epoch in RL) with the current lr."""

    def set_epoch_length(self, batches: int) -> None:
        """Called before each task with its optimizer steps per epoch (HAT anneals its gates over them)."""

    def prune(self, task: int) -> None:
        """Called once when ``task``'s retraining phase begins (:func:`retrain_start`); the learner
        then builds a fresh optimizer. Nothing to do by default (no retraining phase)."""

    def use_task(self, task: int) -> ContextManager[Any]:
        """The context in which the network computes ``task``'s function (evaluation, importance
        collection): a task's gates or weights for HAT and PackNet, nothing by default."""
        return contextlib.nullcontext()

    def parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of the method itself, for the learner's optimizer (HAT's task
        embeddings); none by default."""
        return iter(())

    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        """Called once ``task`` is learned, with an iterable of that task's input batches."""
        self.tasks_learned = max(self.tasks_learned, task + 1)
        self.task = None

    # -- bookkeeping -------------------------------------------------------------------
    def stored_floats(self) -> int:
        """Floats the method keeps for regularization (importances; the anchor copy that
        every anchored method keeps is reported separately as ``anchor_floats``)."""
        return 0

    def statistics(self) -> dict[str, float]:
        """Scalars for logging (TensorBoard, results files)."""
        return {"stored_floats": float(self.stored_floats())}

    def state_dict(self) -> dict[str, Any]:
        """The base entries; a subclass adds exactly its :attr:`state_keys`."""
        return {"name": self.name, "task": self.task, "tasks_learned": self.tasks_learned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state of method {state.get('name')!r} cannot be loaded into {self.name!r}")
        self.task = state["task"]
        self.tasks_learned = state["tasks_learned"]

    # -- helpers for subclasses --------------------------------------------------------
    def trunk_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.trunk.named_parameters() if p.requires_grad]

    def learned_heads_mask(self) -> dict[torch.Tensor, torch.Tensor]:
        """All-True masks over the heads of the tasks learned so far, the current one excepted:
        what a stability method's ``protected()`` always includes (those heads read frozen
        capacity; only the current task's head is free to change)."""
        masks: dict[torch.Tensor, torch.Tensor] = {}
        for task in range(min(len(self.heads), self.tasks_learned)):
            if task != self.task:
                for head in task_heads(self.heads, task):
                    for p in head.parameters():
                        masks[p] = torch.ones_like(p, dtype=torch.bool)
        return masks

    def output_head(self, task: int) -> nn.Module:
        return task_heads(self.heads, task)[0]

    def forward_output(self, task: int, x: torch.Tensor) -> torch.Tensor:
        """Output of ``task``'s output head on input ``x``."""
        return self.output_head(task)(self.trunk(x))


class FineTune(ContinualMethod):
    """Plain fine-tuning: no regularization at all (the lower baseline)."""

    name = "finetune"
