"""Build a method by name: the one entry point learners use (``make_method("agscl", ...)``).

Adding a method is its own file plus one line in :data:`REGISTRY` (or, from outside this
library, one :func:`register` call when its module is imported: ``supervised/hat.py`` registers
``hat``, so a learner sees it once ``supervised`` is imported). The class declares its
``name``, its user-facing hyperparameters (:class:`agscl.base.Hparam`: default, allowed range,
one-line help) and which learners can drive it (``learners``); both learners build their
``--method`` choices and method flags from here (``agents/methods_cli.py``, ``supervised/train.py``).

A name ``"a+b"`` composes a stability method ``a`` (one with ``protected()``: agscl, packnet)
with a plasticity method ``b`` (``role = "plasticity"``: redo, shrink_perturb, l2init); every
function here accepts it (:mod:`agscl.compose`). Its hyperparameters are both parts'.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Sequence

from torch import nn

from agscl.base import CONTEXT_KEYS, ContinualMethod, HeadSpec, Hparam

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
    "redo": ("agscl.redo:ReDo", {}),
    "shrink_perturb": ("agscl.shrink_perturb:ShrinkPerturb", {}),
    "l2init": ("agscl.l2init:L2Init", {}),
}

#: the names :func:`register` added from outside this library (``hat``, by ``supervised``)
REGISTERED: set[str] = set()

__all__ = ["CONTEXT_KEYS", "REGISTRY", "make_method", "method_class", "method_hparams", "method_names", "register"]


def register(name: str, target: str | type[ContinualMethod], fixed: dict[str, Any] | None = None) -> None:
    """Add method ``name`` (a class, or ``"module:Class"`` loaded lazily) with fixed constructor
    keywords ``fixed``; registering the same entry again is a no-op, another one under a taken
    name a ``ValueError``."""
    entry = (target, dict(fixed or {}))
    if "+" in name:
        raise ValueError(f"method name {name!r}: '+' joins a composition and cannot be part of a name")
    if REGISTRY.setdefault(name, entry) != entry:
        raise ValueError(f"method {name!r} is already registered as {REGISTRY[name][0]!r}")
    REGISTERED.add(name)


def method_names(learner: str | None = None, *, composites: bool = False) -> tuple[str, ...]:
    """Registered method names, in registration order; with ``learner`` ("rl" or "supervised")
    only those that learner can drive; ``composites``: then every valid ``stability+plasticity``
    pair that learner can drive."""
    names = tuple(n for n in REGISTRY if learner is None or learner in method_class(n).learners)
    if not composites:
        return names
    pairs = tuple(f"{a}+{b}" for a in stability_names() for b in plasticity_names())
    return names + tuple(p for p in pairs if learner is None or learner in method_class(p).learners)


def stability_names() -> tuple[str, ...]:
    """Registered methods that declare what they protect (``protected()``): the first part of a composition."""
    return tuple(n for n in REGISTRY if callable(getattr(method_class(n), "protected", None)))


def plasticity_names() -> tuple[str, ...]:
    """Registered plasticity methods (``role = "plasticity"``): the second part of a composition."""
    return tuple(n for n in REGISTRY if getattr(method_class(n), "role", None) == "plasticity")


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown method {name!r}: choose one of {', '.join(REGISTRY)}, "
                      f"or a stability+plasticity pair such as agscl+redo")


def _parts(name: str) -> tuple[str, str]:
    """``"a+b"`` checked: a stability method, then a plasticity method (one-line ``ValueError``)."""
    parts = name.split("+")
    for part in parts:
        if part not in REGISTRY:
            raise _unknown(part)
    stability, plasticity = ", ".join(stability_names()), ", ".join(plasticity_names())
    if len(parts) != 2:
        raise ValueError(f"method {name!r}: a composition is one stability method and one plasticity method, "
                         f"e.g. agscl+redo")
    a, b = parts
    if a in plasticity_names() and b not in plasticity_names():
        raise ValueError(f"method {name!r}: write the stability method first ({b}+{a})")
    if b not in plasticity_names():
        raise ValueError(f"method {name!r}: {b} is not a plasticity method; the second part must be one of {plasticity}")
    if a not in stability_names():
        raise ValueError(f"method {name!r}: {a} has no notion of protected capacity, so {b} could not know what to "
                         f"leave alone; compose {b} with one of {stability}")
    return a, b


_COMPOSITES: dict[str, type[ContinualMethod]] = {}


def method_class(name: str) -> type[ContinualMethod]:
    """The class implementing method ``name`` (a key of :data:`REGISTRY`, or ``"a+b"``)."""
    if "+" in name:
        if name not in _COMPOSITES:
            from agscl.compose import composite_class

            a, b = _parts(name)
            builders = tuple(functools.partial(make_method, part) for part in (a, b))
            _COMPOSITES[name] = composite_class(name, method_class(a), method_class(b), method_hparams(a), method_hparams(b),
                                                builders)  # type: ignore[arg-type]
        return _COMPOSITES[name]
    if name not in REGISTRY:
        raise _unknown(name)
    target = REGISTRY[name][0]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def method_hparams(name: str) -> tuple[Hparam, ...]:
    """The hyperparameters method ``name`` takes (its class's, less what the entry fixes; a
    composition's: both parts')."""
    if "+" in name:
        return tuple(method_class(name).hparams)
    cls, fixed = method_class(name), REGISTRY[name][1]
    return tuple(cls.declared_hparams(fixed))


def make_method(name: str, trunk: nn.Module, heads: Sequence[HeadSpec], **hparams: Any) -> ContinualMethod:
    """Instantiate method ``name`` on ``trunk``/``heads``. :data:`CONTEXT_KEYS` among ``hparams``
    go only to a constructor that takes them (``num_tasks`` to PackNet and HAT, ``seed`` and
    ``init_fn`` to AGS-CL and the plasticity methods); ``online_ewc`` is EWC with
    ``online=True``; ``"a+b"`` builds both parts (:class:`agscl.compose.Composite`)."""
    if "+" in name:
        return method_class(name)(trunk, heads, **hparams)
    if name not in REGISTRY:
        raise _unknown(name)
    cls, fixed = method_class(name), REGISTRY[name][1]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k not in CONTEXT_KEYS or k in accepted}
    for key, value in fixed.items():
        kwargs.setdefault(key, value)
    return cls(trunk, heads, **kwargs)


def __getattr__(attr: str) -> Any:
    if attr == "METHODS":  # the library's names, read at call time (a test may add more to REGISTRY)
        return tuple(n for n in REGISTRY if n not in REGISTERED)
    raise AttributeError(attr)
