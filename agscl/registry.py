"""Build a method by name: the one entry point learners use (``make_method("agscl", ...)``)."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from agscl.base import ContinualMethod, HeadSpec

METHODS = ("finetune", "ewc", "online_ewc", "mas", "si", "rwalk", "agscl")


def method_class(name: str) -> type[ContinualMethod]:
    """The class implementing method ``name`` (one of :data:`METHODS`)."""
    if name == "finetune":
        from agscl.base import FineTune
        return FineTune
    if name in ("ewc", "online_ewc"):
        from agscl.ewc import EWC
        return EWC
    if name == "mas":
        from agscl.mas import MAS
        return MAS
    if name == "si":
        from agscl.si import SI
        return SI
    if name == "rwalk":
        from agscl.si import RWALK
        return RWALK
    if name == "agscl":
        from agscl.ags import AGSCL
        return AGSCL
    raise ValueError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")


def make_method(name: str, trunk: nn.Module, heads: Sequence[HeadSpec], **hparams: Any) -> ContinualMethod:
    """Instantiate method ``name`` on ``trunk``/``heads``; ``online_ewc`` is EWC with ``online=True``."""
    cls = method_class(name)
    if name == "online_ewc":
        hparams.setdefault("online", True)
    return cls(trunk, heads, **hparams)
