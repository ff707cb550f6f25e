"""A run's directory: its checkpoint, its stored config, its reference, and a clean restart.

Everything here answers a user mistake with :class:`agents.runtime.UserError` (one line, exit 2).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, TypeVar

import torch

from agents.runtime import UserError
from common.runio import TEMP_PATTERN, first_line
from reporting.results import RESULTS_FILE, load_results, reference_scores

CHECKPOINT_FORMAT = 1
T = TypeVar("T")


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint written by this agent; UserError naming the file when it is missing or corrupt."""
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: nothing to resume (checkpoints are written at game boundaries and every --checkpoint-every steps)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a truncated or foreign file
        raise UserError(f"{path} is corrupt or not a checkpoint ({first_line(exc)})") from None
    needed = ("format", "config", "games", "action_counts", "game", "update", "global_step", "agent", "method", "results")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in needed) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is corrupt or not a checkpoint of agents/ppo_continual.py (format {CHECKPOINT_FORMAT})")
    return ckpt


def has_run_files(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a run (results or a checkpoint); an empty leftover does not count."""
    return any(os.path.exists(os.path.join(run_dir, name)) for name in (RESULTS_FILE, os.path.join("ckpt", "latest.pt")))


def _leftover(run_dir: str, name: str) -> bool:
    """Whether ``name`` in ``run_dir`` is what a start killed before its first results left:
    TensorBoard events, temporaries of interrupted writes, a ``ckpt/`` holding only those."""
    path = os.path.join(run_dir, name)
    if name == "ckpt" and os.path.isdir(path):
        return all(TEMP_PATTERN.search(n) for n in os.listdir(path))
    return name.startswith("events.out.tfevents") or bool(TEMP_PATTERN.search(name))


def foreign_entries(run_dir: str) -> list[str]:
    """The entries of an existing ``run_dir`` without a run that are not a killed start's
    leftovers (:func:`_leftover`), sorted: a directory a new run must not be written into."""
    if not os.path.isdir(run_dir) or has_run_files(run_dir):
        return []
    return sorted(n for n in os.listdir(run_dir) if not _leftover(run_dir, n))


def stored_config(run_dir: str) -> dict[str, Any]:
    """The config in ``run_dir/results.json`` (written before the first update), for a restart."""
    try:
        config = load_results(run_dir)["config"]
    except ValueError as exc:
        raise UserError(f"--resume {run_dir}: no checkpoint and no usable stored config ({exc}); "
                        f"start it again with its flags: the directory will be reused") from None
    return config


def load_reference(path: str, games: list[str]) -> dict[str, Any]:
    """The fine-tuning reference of ``--reference-run``: a finetune run over the same games, in order.
    A reference that cannot normalize some games is accepted with one line saying which."""
    try:
        results = load_results(path)
        method = results["config"].get("method")
        if method != "finetune":
            raise ValueError(f"{path} is a {method!r} run: the reference must be a fine-tuning run (--method finetune)")
        if list(results["games"]) != list(games):
            raise ValueError(f"{path} learned {' '.join(results['games'])}, not this run's {' '.join(games)}")
        reference = reference_scores(results, games, path)
    except ValueError as exc:
        raise UserError(f"--reference-run: {exc}") from None
    if reference["undefined"]:
        # accepted: those games' normalized return is undefined (null), as for any gain within noise
        print(f"--reference-run {path}: never above the random policy beyond noise on {', '.join(reference['undefined'])}: "
              "their normalized return stays null (results.json) and unlogged (TensorBoard)", flush=True)
    return reference


def args_from_config(config: dict[str, Any], where: str, args_type: type[T]) -> T:
    """The stored ``config`` as an instance of the agent's ``Args`` dataclass (passed in, so this
    module never imports the agent: no import cycle); UserError on a field it does not know."""
    fields = {f.name for f in dataclasses.fields(args_type)}
    unknown = set(config) - fields
    if unknown:
        raise UserError(f"{where} has a config with unknown fields {sorted(unknown)}: written by another version")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return dataclasses.replace(args_type(), **values)


def clear_run_dir(run_dir: str) -> None:
    """Remove what a run that never checkpointed left (results, events, checkpoint temps) before
    it starts again in the same directory; anything else in it is kept."""
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if name == "ckpt":
            shutil.rmtree(path)
        elif name == RESULTS_FILE or name.startswith("events.out.tfevents") or ".tmp" in name:
            os.unlink(path)
