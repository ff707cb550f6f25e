"""Build a method by name: the one entry point learners use (``make_method("agscl", ...)``).

Adding a method is its own file plus one line in :data:`REGISTRY`. The class declares its
``name``, its user-facing hyperparameters (:class:`agscl.base.Hparam`: default, allowed range,
one-line help) and which learners can drive it (``learners``); both learners build their
``--method`` choices and method flags from here (``agents/methods_cli.py``, ``supervised/train.py``).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Sequence

from torch import nn

from agscl.base import ContinualMethod, HeadSpec, Hparam

#: name -> ("module:Class" or the class itself, fixed constructor keywords). Classes load lazily.
REGISTRY: dict[str, tuple[str | type[ContinualMethod], dict[str, Any]]] = {
    "finetune": ("agscl.base:FineTune", {}),
    "ewc": ("agscl.ewc:EWC", {}),
    "online_ewc": ("agscl.ewc:EWC", {"online": True}),
    "mas": ("agscl.mas:MAS", {}),
    "si": ("agscl.si:SI", {}),
    "rwalk": ("agscl.si:RWALK", {}),
    "agscl": ("agscl.ags:AGSCL", {}),
    "packnet": ("agscl.packnet:PackNet", {}),
    "hat": ("supervised.hat:HAT", {}),
    "redo": ("agscl.redo:ReDo", {}),
    "shrink_perturb": ("agscl.shrink_perturb:ShrinkPerturb", {}),
    "l2init": ("agscl.l2init:L2Init", {}),
}

#: Keywords a learner offers every method (the run's task count, seed, the network's initializer);
#: :func:`make_method` passes each only to a constructor that takes it.
CONTEXT_KEYS = ("num_tasks", "seed", "init_fn")


def method_names(learner: str | None = None) -> tuple[str, ...]:
    """Registered method names, in registration order; with ``learner`` ("rl" or "supervised")
    only those that learner can drive."""
    return tuple(n for n in REGISTRY if learner is None or learner in method_class(n).learners)


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown method {name!r}: choose one of {', '.join(REGISTRY)}")


def method_class(name: str) -> type[ContinualMethod]:
    """The class implementing method ``name`` (a key of :data:`REGISTRY`)."""
    if name not in REGISTRY:
        raise _unknown(name)
    target = REGISTRY[name][0]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def method_hparams(name: str) -> tuple[Hparam, ...]:
    """The hyperparameters method ``name`` takes (its class's, less what the entry fixes)."""
    cls, fixed = method_class(name), REGISTRY[name][1]
    return tuple(cls.declared_hparams(fixed))


def make_method(name: str, trunk: nn.Module, heads: Sequence[HeadSpec], **hparams: Any) -> ContinualMethod:
    """Instantiate method ``name`` on ``trunk``/``heads``. :data:`CONTEXT_KEYS` among ``hparams``
    go only to a constructor that takes them (``num_tasks`` to PackNet and HAT, ``seed`` and
    ``init_fn`` to AGS-CL); ``online_ewc`` is EWC with ``online=True``."""
    if name not in REGISTRY:
        raise _unknown(name)
    cls, fixed = method_class(name), REGISTRY[name][1]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k not in CONTEXT_KEYS or k in accepted}
    for key, value in fixed.items():
        kwargs.setdefault(key, value)
    return cls(trunk, heads, **kwargs)


def __getattr__(attr: str) -> Any:
    if attr == "METHODS":  # the registered names, read at call time (a test may register more)
        return tuple(n for n in REGISTRY if n != "hat")
    raise AttributeError(attr)
