"""A stability method and a plasticity method under one name: ``make_method("agscl+redo", ...)``,
``--method agscl+redo``.

The stability part (AGS-CL, PackNet) keeps earlier tasks' functions; the plasticity part (ReDo,
shrink-and-perturb, L2 Init) keeps the network trainable. Both see every hook, always in the
same order, **stability first**:

    begin_task   stability, then plasticity   # what is protected during the task is known
                                              # (PackNet's frozen set, AGS-CL's anchor) before
                                              # shrink-and-perturb reads it
    penalty      stability + plasticity       # the two penalties add
    after_step   stability, then plasticity   # PackNet restores its weights and AGS-CL applies
                                              # its masks (and, per step, its prox) first; ReDo
                                              # then scores and recycles units on the weights the
                                              # next forward will use
    end_epoch    stability, then plasticity   # AGS-CL's epoch prox, then nothing to do
    end_task     stability, then plasticity   # importance is measured on the network as
                                              # trained; the task's inputs go to the stability
                                              # part only (the supervised learner passes a
                                              # one-shot iterator, no plasticity method needs them)

**The rule.** A plasticity method never changes what the stability method protects. A stability
method declares it with ``protected()``: per parameter a boolean mask (AGS-CL: the rows of its
important nodes, ``Omega > 0``, and of the free nodes its lasso holds at exactly zero; PackNet:
every owned weight, the frozen biases; both: every head but the current task's). The plasticity
part's ``protect`` is set to it and every write of a plasticity method goes through it. A method
without ``protected()`` (EWC, MAS, SI, RWALK: every weight is protected a little, none entirely)
cannot be composed: a one-line ``ValueError`` names the valid stability methods.

``agscl+redo`` and the lasso: AGS-CL empties unimportant nodes on purpose (the group lasso
drives them to exactly zero so later tasks find them free) and re-draws a fraction ``rho`` of
them at each task's end (I.2). ReDo would see such a node as dormant and re-fill it at its next
check, undoing within the task what the lasso decided, and the lasso would empty it again: a
churn that costs AGS-CL the capacity it frees. So AGS-CL protects the nodes its proximal step
holds at exactly zero (``held_zero``) as well as its important ones, and ReDo recycles only nodes
that are dormant *and* free *and* not emptied by the lasso: units that died with nonzero weights
(a saturated ReLU), which AGS-CL cannot revive within a task and which its lasso, without a
gradient to fight, would only slowly empty.

``state_dict`` nests both parts' states; ``statistics()`` prefixes each part's keys with its
name (``agscl/sparsity``, ``redo/recycled_units``) and adds the total ``stored_floats``. The
optional hooks go to both parts (``use_task`` nests the stability part's context outside the
plasticity part's, ``parameters`` chains them), except the retraining phase (``prune``,
``retrain_fraction``), which is the stability part's.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import torch
from torch import nn

from agscl.base import ContinualMethod, HeadSpec, Hparam, module_device
from agscl.base import CONTEXT_KEYS


class Composite(ContinualMethod):
    """``stability + plasticity`` as one method; subclasses made by :func:`composite_class`
    fix the two parts' names and classes."""

    stability_name: ClassVar[str]
    plasticity_name: ClassVar[str]
    state_keys = ("stability", "plasticity")
    #: the parts' classes and builders (the registry's ``make_method`` for each part's name), set
    #: by :func:`composite_class`; this module does not import the registry, which imports it
    part_classes: ClassVar[tuple[type[ContinualMethod], type[ContinualMethod]]]
    part_builders: ClassVar[tuple[Callable[..., ContinualMethod], Callable[..., ContinualMethod]]]

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], **kwargs: Any) -> None:
        super().__init__(trunk, heads)
        names = (self.stability_name, self.plasticity_name)
        routed: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        accepts = [self._accepted(c) for c in self.part_classes]
        for key, value in kwargs.items():
            takers = [i for i in (0, 1) if key in accepts[i]]
            if key in CONTEXT_KEYS:
                for i in (0, 1):
                    routed[i][key] = value
            elif len(takers) == 1:
                routed[takers[0]][key] = value
            elif takers:
                raise ValueError(f"{self.name}: both {names[0]} and {names[1]} take {key!r}")
            else:
                raise TypeError(f"{self.name} got an unexpected keyword argument {key!r}")
        self.stability = self.part_builders[0](trunk, heads, **routed[0])
        self.plasticity = self.part_builders[1](trunk, heads, **routed[1])
        self.plasticity.protect = self.stability.protected  # the rule: see the module docstring

    @staticmethod
    def _accepted(cls: type[ContinualMethod]) -> set[str]:
        params = inspect.signature(cls.__init__).parameters
        return {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}

    @property
    def parts(self) -> tuple[ContinualMethod, ContinualMethod]:
        return (self.stability, self.plasticity)

    # -- hooks, stability first ---------------------------------------------------------
    def begin_task(self, task: int) -> None:
        super().begin_task(task)
        for part in self.parts:
            part.begin_task(task)

    def penalty(self) -> torch.Tensor:
        return self.stability.penalty() + self.plasticity.penalty()

    fused_penalty = True

    def add_penalty_grad(self) -> torch.Tensor:
        """Each part's fused gradient; a part without one has its ``penalty()`` back-propagated
        here (AGS-CL's and PackNet's are constant zeros: nothing to do)."""
        total = torch.zeros((), device=module_device(self.trunk))
        for part in self.parts:
            if part.fused_penalty:
                total = total + part.add_penalty_grad()
            else:
                value = part.penalty()
                if value.requires_grad:
                    value.backward()
                total = total + value.detach()
        return total

    def after_step(self, lr: float) -> None:
        for part in self.parts:
            part.after_step(lr)

    def end_epoch(self, lr: float) -> None:
        for part in self.parts:
            part.end_epoch(lr)

    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        self.stability.end_task(task, inputs)
        self.plasticity.end_task(task, ())
        super().end_task(task, ())

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        for part in self.parts:
            part.attach_optimizer(optimizer)

    def protected(self) -> dict[torch.Tensor, torch.Tensor]:
        return self.stability.protected()

    # -- optional hooks --------------------------------------------------------------------
    @property
    def retrain_fraction(self) -> float:  # type: ignore[override]
        return self.stability.retrain_fraction

    def prune(self, task: int) -> None:
        self.stability.prune(task)

    @contextlib.contextmanager
    def use_task(self, task: int) -> Iterator[None]:  # type: ignore[override]
        with self.stability.use_task(task), self.plasticity.use_task(task):
            yield

    def set_epoch_length(self, batches: int) -> None:
        for part in self.parts:
            part.set_epoch_length(batches)

    def parameters(self) -> Iterator[nn.Parameter]:
        for part in self.parts:
            yield from part.parameters()

    # -- bookkeeping ----------------------------------------------------------------------
    def stored_floats(self) -> int:
        return self.stability.stored_floats() + self.plasticity.stored_floats()

    def statistics(self) -> dict[str, float]:
        stats = {"stored_floats": float(self.stored_floats())}
        for part in self.parts:
            stats.update({f"{part.name}/{k}": v for k, v in part.statistics().items()})
        return stats

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(stability=self.stability.state_dict(), plasticity=self.plasticity.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stability.load_state_dict(state["stability"])
        self.plasticity.load_state_dict(state["plasticity"])


def composite_class(name: str, stability: type[ContinualMethod], plasticity: type[ContinualMethod],
                    stability_hparams: tuple[Hparam, ...], plasticity_hparams: tuple[Hparam, ...],
                    builders: tuple[Callable[..., ContinualMethod], Callable[..., ContinualMethod]]) -> type[Composite]:
    """The :class:`Composite` subclass for ``name`` (``"agscl+redo"``): both parts' hyperparameters
    (no name may be declared by both) and the learners both parts support; ``builders`` build
    each part from ``(trunk, heads, **kwargs)``."""
    stability_name, plasticity_name = name.split("+")
    clash = {h.name for h in stability_hparams} & {h.name for h in plasticity_hparams}
    if clash:
        raise TypeError(f"{name}: {stability_name} and {plasticity_name} both declare {', '.join(sorted(clash))}")
    namespace: dict[str, Any] = {
        "name": name,
        "stability_name": stability_name,
        "plasticity_name": plasticity_name,
        "hparams": stability_hparams + plasticity_hparams,
        "part_classes": (stability, plasticity),
        "part_builders": tuple(staticmethod(b) for b in builders),
        "learners": tuple(l for l in stability.learners if l in plasticity.learners),
        "__doc__": f"{stability_name} (stability) composed with {plasticity_name} (plasticity); see agscl.compose.",
    }
    cls = type(f"Composite[{name}]", (Composite,), namespace)
    cls.__module__ = __name__
    return cls
