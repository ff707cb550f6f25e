"""The agent's ``--method`` choices and method flags, built from the :mod:`agscl` registry.

Each method class declares its hyperparameters (:class:`agscl.base.Hparam`); this module turns
the ones of every method the agent can drive (``learners`` contains ``"rl"``) into fields of the
agent's ``Args`` dataclass, so a new method needs no agent code: its file and one registry line.
A hyperparameter shared by several methods under the same flag (``--ewc-lambda`` of ewc and
online_ewc) is one flag. ``--method`` also takes every ``stability+plasticity`` composition
(``agscl+redo``, :mod:`agscl.compose`), whose flags are its two parts' flags. It also gives the
run's HParams with its own method's flags only (the reporting package is told which to drop).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

import tyro

from agscl.base import Hparam
from agscl.registry import method_hparams, method_names
from reporting import tensorboard_layout

LEARNER = "rl"


def flag_specs(learner: str = LEARNER) -> dict[str, tuple[Hparam, list[str]]]:
    """Agent field name -> (its declaration, the methods that take it), in registry order."""
    specs: dict[str, tuple[Hparam, list[str]]] = {}
    for method in method_names(learner):
        for hp in method_hparams(method):
            spec, users = specs.setdefault(hp.flag, (hp, []))
            if (spec.kind, spec.choices) != (hp.kind, hp.choices):
                raise TypeError(f"--{hp.flag.replace('_', '-')} is declared with two types ({spec.kind.__name__}, {hp.kind.__name__})")
            users.append(method)
    return specs


def _help(hp: Hparam, users: list[str]) -> str:
    text = f"{', '.join(users)}: {hp.help}"
    return text if hp.kind is bool or hp.choices is not None else f"{text}; allowed {hp.allowed()}"


def with_method_flags(base: type, default_method: str, learner: str = LEARNER) -> type:
    """``base`` (a dataclass) plus ``method`` (a Literal of the registered names) and one field
    per method flag, with the declared default (``rl_default`` when set), help and range."""
    names = method_names(learner, composites=True)
    fields: list[tuple[str, Any, Any]] = [(
        "method", Annotated[Literal[names], tyro.conf.arg(  # type: ignore[valid-type]
            help="the continual-learning method, or a stability method and a plasticity method (agscl+redo)")],
        dataclasses.field(default=default_method),
    )]
    for flag, (hp, users) in flag_specs(learner).items():
        kind: Any = Literal[hp.choices] if hp.choices is not None else hp.kind  # type: ignore[valid-type]
        default = hp.default if hp.rl_default is None else hp.rl_default
        fields.append((flag, Annotated[kind, tyro.conf.arg(help=_help(hp, users))], dataclasses.field(default=default)))
    cls = dataclasses.make_dataclass(base.__name__, fields, bases=(base,))
    cls.__module__, cls.__doc__ = base.__module__, base.__doc__
    return cls


def method_kwargs(args: Any, **context: Any) -> dict[str, Any]:
    """Keyword arguments of ``make_method`` for ``args.method``: its flags' values (under the
    constructor's names) plus ``context`` (``num_tasks``, ``seed``, ``init_fn``: passed only to
    constructors that take them)."""
    return {**context, **{hp.name: getattr(args, hp.flag) for hp in method_hparams(args.method)}}


def other_methods_flags(args: Any, learner: str = LEARNER) -> set[str]:
    """The method flags in ``args`` that ``args.method`` does not take (another method's
    hyperparameters, at their defaults): left out of what the run reports as its configuration."""
    own = {hp.flag for hp in method_hparams(args.method)}
    return set(flag_specs(learner)) - own


def run_hparams(args: Any) -> dict[str, Any]:
    """The run's configuration as TensorBoard HParams values, with its own method's flags only."""
    return tensorboard_layout.hparams_of(args, drop=other_methods_flags(args))


def write_hparams(writer: Any, args: Any, results: dict[str, Any]) -> None:
    """The run's HParams session (:func:`reporting.tensorboard_layout.write_hparams`) with :func:`run_hparams`."""
    tensorboard_layout.write_hparams(writer, run_hparams(args), results)
