"""``--track``: Weights & Biases logging of a run, as cleanrl's ``--track`` does it.

W&B mirrors the run's TensorBoard events (``sync_tensorboard``: every scalar, text and image the
agent writes, with its ``global_step``) and stores the ``Args`` as the run's config. The W&B run
id is the run directory's name, so a resumed run (``--resume``) continues the same W&B run.
Files go to ``<run_dir>/wandb``. ``WANDB_MODE=offline`` keeps everything on disk (``wandb sync``
uploads it later); W&B is the optional extra ``.[track]``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Any


def available() -> bool:
    """Whether the ``wandb`` package is installed (checked before any heavy work)."""
    return importlib.util.find_spec("wandb") is not None


def start(args: Any, run_dir: str) -> Any:
    """Start (or resume) the W&B run of ``run_dir``; call it before the run's ``SummaryWriter``
    exists, so that W&B's TensorBoard hook sees every event file. Returns the W&B run."""
    import wandb

    name = os.path.basename(os.path.normpath(run_dir))
    return wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=name,
                      id=re.sub(r"[^A-Za-z0-9_-]", "-", name), resume="allow", dir=run_dir,
                      config=dataclasses.asdict(args), sync_tensorboard=True, save_code=False)
