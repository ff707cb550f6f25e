"""Continual training on a vision benchmark: ``python -m supervised.train --benchmark ... --method ...``.

One fresh optimizer per task, multi-head (task-aware) evaluation, the ``agscl`` protocol in the
same hook order as the RL agent::

    method.begin_task(t)
    per epoch: per minibatch: loss = CE + method.penalty(); backward; step; method.after_step(lr)
               method.end_epoch(lr)           # AGS-CL's proximal step by default (prox_every="epoch")
    method.end_task(t, task.inputs("train"))  # trunk in eval mode: no dropout in the importances

After every task the test accuracy of all tasks learned so far fills a row of the task-by-task
matrix; ``runs/<run_name>/results.json`` (written atomically after every task) holds it with
the metrics, the config, versions and per-task statistics, next to TensorBoard events in
``tb/`` and ``checkpoint.pt`` from which ``--resume`` continues at the last finished task.

Hyperparameters not given on the command line come from ``supervised.presets`` (the authors'
values where published). Bad input (unknown benchmark, method or network, out-of-range values,
missing data, a weights file that does not fit) ends with one line on stderr and exit code 2,
before any file is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agscl.base import ContinualMethod, Hparam, check_range, retrain_start
from agscl.registry import method_hparams
from agscl.registry import method_names as method_names_of
from common.cli import CliError, parse
from common.runio import OutputError, check_output_dir, first_line, torch_save_atomic, write_bytes_atomic
from common.runio import versions as runio_versions
from reporting import metrics as M
from supervised import presets
from supervised.results import RESULTS_FORMAT, differences, mean_defined, plasticity_per_task, setting_of, stability_per_task, task_order_of
from supervised.networks import (
    DEFAULT_NETWORK,
    NETWORKS,
    PLAIN_NETWORKS,
    WeightsMismatchError,
    build_heads,
    build_trunk,
    feature_dim,
    load_pretrained,
)

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("plateau", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
PROX_FREQUENCIES = ("epoch", "step")
# Methods that read the trunk as a Conv2d/Linear+ReLU chain (agscl/groups.py): no skip connections.
CHAIN_METHODS = ("agscl", "hat", "redo")
# Config fields that may change between an interrupted run and its resumption.
RESUMABLE_FIELDS = ("resume", "overwrite", "progress", "tensorboard", "device", "threads", "data_dir", "runs_dir")


class UsageError(ValueError):
    """Bad user input: reported as one line, exit code 2."""


def _by_benchmark(values: dict[str, Any]) -> str:
    """``v (bench w, ...)``: the most common value, then the benchmarks that differ."""
    fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    texts = {bench: fmt(v) for bench, v in values.items()}
    common = max(set(texts.values()), key=list(texts.values()).count)
    others = [f"{bench} {v}" for bench, v in texts.items() if v != common]
    return common + (f" ({', '.join(others)})" if others else "")


def _preset(key: str) -> Any:
    """tyro marker: the help shows the preset values a ``None`` default resolves to."""
    import tyro

    from supervised.data import VALID_FRACTION

    if key == "network":
        text = ", ".join(f"{bench} {net}" for bench, net in DEFAULT_NETWORK.items())
    elif key == "valid_fraction":
        text = _by_benchmark(VALID_FRACTION)
    elif key in presets.Schedule.__dataclass_fields__:
        text = _by_benchmark({bench: sched.as_dict()[key] for bench, sched in presets.SCHEDULES.items()})
    else:  # a method hyperparameter
        text = "; ".join(
            f"{method} {_by_benchmark({bench: presets.HPARAMS[bench][method][key] for bench in presets.HPARAMS})}"
            for method, keys in presets.METHOD_HPARAMS.items() if key in keys
        )
    return tyro.conf.arg(help_behavior_hint=f"(preset: {text})")


def _no_hint() -> Any:
    """tyro marker for ``None`` defaults whose meaning the help text already says."""
    import tyro

    return tyro.conf.arg(help_behavior_hint="")


@dataclass
class Config:
    """Continual training of one method on one benchmark (None: take the preset value)."""

    benchmark: str = "split_digits"
    """split_digits (no data needed), split_cifar100, split_cifar10_100, omniglot, cub200, mixture8"""
    data_dir: Annotated[str | None, _no_hint()] = None
    """dataset root (default: $AGSCL_DATA_DIR, else ./data)"""
    network: Annotated[str | None, _preset("network")] = None
    """trunk architecture (the paper's network for the benchmark)"""
    weights: Annotated[str | None, _no_hint()] = None
    """pretrained trunk weights in torchvision's state_dict layout (alexnet, resnet18; default: none)"""
    seed: int = 0
    """seeds the task order, the validation split, initialization and shuffling"""
    num_tasks: Annotated[int | None, _no_hint()] = None
    """keep only the first tasks (quick runs; default: all)"""
    valid_fraction: Annotated[float | None, _preset("valid_fraction")] = None
    """fraction of each task's training data held out for validation (lr schedule), as the released code"""
    cub_split: Annotated[str | None, _no_hint()] = None
    """cub200: 'released' (default: the first 80% of each class's images train) or 'official' (train_test_split.txt)"""

    epochs: Annotated[int | None, _preset("epochs")] = None
    """epochs per task"""
    batch_size: Annotated[int | None, _preset("batch_size")] = None
    """minibatch size"""
    lr: Annotated[float | None, _preset("lr")] = None
    """learning rate at the start of each task (also AGS-CL's proximal step size)"""
    optimizer: Annotated[str | None, _preset("optimizer")] = None
    """adam or sgd (momentum 0.9)"""
    lr_schedule: Annotated[str | None, _preset("lr_schedule")] = None
    """plateau (a fresh optimizer at lr / lr_factor after lr_patience epochs without a better validation loss), step, constant"""
    lr_patience: Annotated[int | None, _preset("lr_patience")] = None
    """plateau: epochs without a better validation loss before the lr drops"""
    lr_factor: Annotated[float | None, _preset("lr_factor")] = None
    """plateau and step: divisor of the lr"""
    lr_min: Annotated[float | None, _preset("lr_min")] = None
    """lower bound of the lr"""
    restore_best: bool = False
    """end each task with the weights of its best validation-loss epoch (the released code did)"""

    run_name: Annotated[str | None, _no_hint()] = None
    """default: <benchmark>_<method>_seed<seed>"""
    runs_dir: str = "runs"
    """results go to <runs_dir>/<run_name>/"""
    label: Annotated[str | None, _no_hint()] = None
    """name of this run in plots and tables (default: method and ablations)"""
    reference: Annotated[str | None, _no_hint()] = None
    """results.json of a finetune run in the same setting, seed and task order, for plasticity (default: found in runs_dir)"""
    resume: bool = False
    """continue an interrupted run at its last finished task"""
    overwrite: bool = False
    """replace an existing run of the same name"""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda"""
    threads: Annotated[int | None, _no_hint()] = None
    """torch CPU threads (default: torch's choice)"""
    progress: bool = True
    """progress bars over tasks and epochs"""
    tensorboard: bool = True
    """TensorBoard events in <run dir>/tb"""
    # --method and the method flags (--lam, --mu, ..., --no-zero-init) follow, built from the agscl registry


def method_flag_specs() -> dict[str, tuple[list[Hparam], list[str]]]:
    """Flag (constructor keyword) -> (its declarations, the methods that take it), over the
    methods the supervised trainer drives, in registry order: ``--lam`` serves every method
    that has a ``lam``."""
    specs: dict[str, tuple[list[Hparam], list[str]]] = {}
    for method in presets.METHOD_NAMES:
        for hp in method_hparams(method):
            decls, users = specs.setdefault(hp.name, ([], []))
            if decls and (decls[0].kind, decls[0].choices) != (hp.kind, hp.choices):
                raise TypeError(f"--{hp.name.replace('_', '-')} is declared with two types by {users[0]} and {method}")
            decls.append(hp)
            users.append(method)
    return specs


def _method_flag_help(decls: list[Hparam], users: list[str]) -> str:
    """``ewc, mas: penalty strength, allowed [0, inf); agscl: ...``: one clause per distinct text."""
    clauses: dict[str, list[str]] = {}
    for hp, method in zip(decls, users):
        text = hp.help if hp.kind is bool or hp.choices is not None else f"{hp.help}, allowed {hp.allowed()}"
        clauses.setdefault(text, []).append(method)
    return "; ".join(f"{', '.join(ms)}: {text}" for text, ms in clauses.items())


def _with_method_flags(base: type) -> type:
    """``base`` plus ``--method`` (the registry's supervised methods) and one flag per method
    hyperparameter: ``None`` (the benchmark's preset) for values, the declared default for switches."""
    import tyro

    methods = ", ".join(presets.METHOD_NAMES) + "; or a stability and a plasticity method, e.g. agscl+redo"
    fields: list[tuple[str, Any, Any]] = [("method", Annotated[str, tyro.conf.arg(help=methods)],
                                           dataclasses.field(default="agscl"))]
    for name, (decls, users) in method_flag_specs().items():
        help_text = _method_flag_help(decls, users)
        if decls[0].kind is bool:
            fields.append((name, Annotated[bool, tyro.conf.arg(help=help_text)], dataclasses.field(default=decls[0].default)))
        else:
            kind = str if decls[0].choices is not None else decls[0].kind
            hint = _preset(name).help_behavior_hint
            fields.append((name, Annotated[kind | None, tyro.conf.arg(help=help_text, help_behavior_hint=hint)],
                           dataclasses.field(default=None)))
    cls = dataclasses.make_dataclass(base.__name__, fields, bases=(base,))
    cls.__module__, cls.__doc__ = base.__module__, base.__doc__
    return cls


Config = _with_method_flags(Config)  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# configuration


def method_names() -> tuple[str, ...]:
    """The methods this trainer drives (agscl registry, ``learners`` with "supervised"), and the
    ``stability+plasticity`` compositions of them (``agscl+redo``, agscl/compose.py)."""
    return method_names_of("supervised", composites=True)


def _check(name: str, value: float, low: float | None, high: float | None, **kw: bool) -> None:
    try:
        check_range(name, value, low, high, **kw)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {name} {value!r}: valid choices are {', '.join(choices)}")


@dataclass
class Resolved:
    """A config with every preset filled in and checked."""

    config: Config
    network: str
    schedule: dict[str, Any]
    hparams: dict[str, Any]
    run_dir: Path
    label: str
    device: torch.device
    valid_fraction: float
    cub_split: str | None


def resolve(config: Config) -> Resolved:
    """Fill presets and validate everything that needs no data; ``UsageError`` on bad input."""
    from supervised.data import BENCHMARKS

    _choice("benchmark", config.benchmark, tuple(BENCHMARKS))
    _choice("method", config.method, method_names())
    network = config.network or DEFAULT_NETWORK[config.benchmark]
    _choice("network", network, NETWORKS)
    if set(config.method.split("+")) & set(CHAIN_METHODS) and network not in PLAIN_NETWORKS:
        raise UsageError(
            f"method {config.method!r} needs a plain Conv2d/Linear+ReLU chain network ({', '.join(PLAIN_NETWORKS)}); "
            f"{network!r} has skip connections: use it with a method other than {', '.join(CHAIN_METHODS)}"
        )
    _choice("device", config.device, DEVICES)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' is not available here: valid choices on this machine are auto, cpu")
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          "cpu" if config.device == "auto" else config.device)
    if config.seed < 0:
        raise UsageError(f"seed={config.seed} must be >= 0")
    if config.num_tasks is not None and config.num_tasks < 1:
        raise UsageError(f"num_tasks={config.num_tasks} must be >= 1")
    from supervised.data import VALID_FRACTION
    from supervised.readers import CUB_SPLITS

    valid_fraction = VALID_FRACTION[config.benchmark] if config.valid_fraction is None else config.valid_fraction
    _check("valid_fraction", valid_fraction, 0.0, 1.0, high_open=True)
    cub_split = config.cub_split
    if config.benchmark == "cub200":
        cub_split = cub_split or "released"
        _choice("cub_split", cub_split, CUB_SPLITS)
    elif cub_split is not None:
        raise UsageError(f"--cub-split applies to benchmark cub200 only, not {config.benchmark!r}")
    if config.threads is not None and config.threads < 1:
        raise UsageError(f"threads={config.threads} must be >= 1")
    if config.reference is not None and not Path(config.reference).exists():
        raise UsageError(f"reference {config.reference!r} does not exist: give a finetune run's folder or results.json")
    if config.weights is not None and not Path(config.weights).is_file():
        raise UsageError(f"weights file {config.weights!r} does not exist")

    schedule = presets.schedule_for(config.benchmark).as_dict()
    for key in ("epochs", "batch_size", "lr", "optimizer", "lr_schedule", "lr_patience", "lr_factor", "lr_min"):
        value = getattr(config, key)
        if value is not None:
            schedule[key] = value
    if schedule["epochs"] < 1:
        raise UsageError(f"epochs={schedule['epochs']} must be >= 1")
    if schedule["batch_size"] < 1:
        raise UsageError(f"batch_size={schedule['batch_size']} must be >= 1")
    _check("lr", schedule["lr"], 0.0, None, low_open=True)
    _choice("optimizer", schedule["optimizer"], OPTIMIZERS)
    _choice("lr_schedule", schedule["lr_schedule"], LR_SCHEDULES)
    if schedule["lr_patience"] < 1:
        raise UsageError(f"lr_patience={schedule['lr_patience']} must be >= 1")
    _check("lr_factor", schedule["lr_factor"], 1.0, None)
    _check("lr_min", schedule["lr_min"], 0.0, None)

    hparams = presets.hparams_for(config.benchmark, config.method)
    declared = {hp.name: hp for hp in method_hparams(config.method)}
    allowed = [k for k, hp in declared.items() if hp.kind is not bool]
    for key, (decls, users) in method_flag_specs().items():
        value = getattr(config, key)
        if decls[0].kind is bool:
            if key in declared:
                hparams[key] = value
            elif value != decls[0].default:
                flag = f"--{'no-' if decls[0].default else ''}{key.replace('_', '-')}"
                raise UsageError(f"{flag} is an ablation switch of {', '.join(users)}: method {config.method!r} does not take it")
            continue
        if value is None:
            continue
        if key not in declared:
            accepted = ", ".join(f"--{k.replace('_', '-')}" for k in allowed) or "none"
            raise UsageError(f"--{key.replace('_', '-')} does not apply to method {config.method!r} (it takes: {accepted})")
        hparams[key] = value
    for key, value in hparams.items():
        if key in declared:
            try:
                declared[key].check(value)
            except ValueError as exc:
                raise UsageError(str(exc)) from None

    run_name = config.run_name or f"{config.benchmark}_{config.method}_seed{config.seed}"
    if not run_name or os.sep in run_name or run_name in (".", ".."):
        raise UsageError(f"run_name={run_name!r} must be a plain folder name")
    try:
        check_output_dir(Path(config.runs_dir) / run_name, "run folder")
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    label = config.label or default_label(config.method, hparams)
    return Resolved(config, network, schedule, hparams, Path(config.runs_dir) / run_name, label, device, valid_fraction, cub_split)


def default_label(method: str, hparams: dict[str, Any]) -> str:
    """``agscl``, ``agscl w/o (I.1)``, ``agscl w/o (I.2)`` or ``agscl w/o re-init``; else the method."""
    if method != "agscl":
        return method
    zero, rand = hparams.get("zero_init", True), hparams.get("rand_init", True)
    if zero and rand:
        return "agscl"
    if not zero and not rand:
        return "agscl w/o re-init"
    return "agscl w/o (I.1)" if not zero else "agscl w/o (I.2)"


def identity(resolved: Resolved) -> dict[str, Any]:
    """What defines a run (compared on resume): config minus I/O knobs, plus the resolved values."""
    config = {k: v for k, v in dataclasses.asdict(resolved.config).items() if k not in RESUMABLE_FIELDS}
    return {"config": config, "network": resolved.network, "schedule": resolved.schedule, "hparams": resolved.hparams,
            "valid_fraction": resolved.valid_fraction, "cub_split": resolved.cub_split}


# --------------------------------------------------------------------------------------
# small helpers


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`common.runio.write_bytes_atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def _json_clean(value: Any) -> Any:
    """NaN/inf -> None, numpy -> python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(_json_clean(payload), indent=1, allow_nan=False) + "\n").encode())


def atomic_torch_save(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(payload, path)


def versions() -> dict[str, Any]:
    """The software versions and commit of this run (:func:`common.runio.versions`)."""
    return runio_versions()


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed torch and numpy; on GPU also make cuDNN deterministic, as the released code did
    (``cudnn.deterministic = True``, ``cudnn.benchmark = False``)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _batch_generator(seed: int, task: int, epoch: int) -> torch.Generator:
    """Shuffling stream per (seed, task, epoch): a resumed run sees the same batches."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, task, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1))
    return g


@torch.no_grad()
def evaluate(trunk: nn.Module, heads: nn.ModuleList, method: ContinualMethod, task_data: Any, task: int,
             split: str, batch_size: int, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``task``'s head on ``split`` (eval mode)."""
    trunk.eval()
    heads.eval()
    total_loss, hits, count = 0.0, 0, 0
    with method.use_task(task):  # HAT: the task's gates
        for x, y in task_data.batches(split, batch_size, device=device):
            logits = heads[task](trunk(x))
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            hits += int((logits.argmax(dim=1) == y).sum())
            count += y.shape[0]
    if count == 0:
        return float("nan"), float("nan")
    return total_loss / count, hits / count


def _group_tensors(layers: list[Any]) -> list[torch.Tensor]:
    """Per plain-chain layer: its groups as rows (weight row + bias)."""
    rows = []
    for layer in layers:
        w = layer.module.weight.detach().reshape(layer.module.weight.shape[0], -1)
        b = layer.module.bias
        rows.append(torch.cat([w, b.detach().unsqueeze(1)], dim=1) if b is not None else w)
    return rows


def capacity_measures(layers: list[Any] | None, before: list[torch.Tensor] | None) -> dict[str, float]:
    """Method-independent node measures: fraction of groups exactly zero and of groups that
    did not move during the task (``before``: groups at the start of the task)."""
    if not layers:
        return {}
    now = _group_tensors(layers)
    total = sum(r.shape[0] for r in now)
    zero = sum(int((r == 0).all(dim=1).sum()) for r in now)
    out = {"zero_group_fraction": zero / total}
    if before is not None:
        same = sum(int((r == b).all(dim=1).sum()) for r, b in zip(now, before))
        out["unchanged_group_fraction"] = same / total
    return out


def _make_optimizer(params: list[nn.Parameter], schedule: dict[str, Any], lr: float) -> torch.optim.Optimizer:
    """A fresh optimizer at ``lr``: at the start of every task and at every plateau drop."""
    if schedule["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def build_method(resolved: Resolved, trunk: nn.Module, heads: nn.ModuleList) -> ContinualMethod:
    """The configured method on ``trunk`` / ``heads``; the task count and the seed go to the
    methods that take them (HAT and PackNet need the count, AGS-CL draws its re-init from the seed)."""
    from agscl.registry import make_method

    try:
        return make_method(resolved.config.method, trunk, heads, num_tasks=len(heads), seed=resolved.config.seed,
                           **resolved.hparams)
    except ValueError as exc:
        raise UsageError(f"method {resolved.config.method!r} on network {resolved.network!r}: {exc}") from None


# --------------------------------------------------------------------------------------
# metrics


def summarize(acc: np.ndarray, done: int, reference_diag: np.ndarray | None) -> dict[str, Any]:
    """Metrics of the finished ``done x done`` block of the accuracy matrix."""
    if done == 0:
        return {"average_accuracy": [], "forgetting": None, "bwt": None, "plasticity": None, "stability": None}
    a = acc[:done, :done]
    stability = stability_per_task(a)  # undefined (None) for a task that never scored above 0
    out: dict[str, Any] = {
        "average_accuracy": M.average_score(a).tolist(),
        "forgetting": M.forgetting(a),
        "bwt": M.backward_transfer(a),
        "stability": mean_defined(stability),
        "stability_per_task": stability.tolist(),
        "plasticity": None,
        "plasticity_per_task": None,
    }
    if reference_diag is not None and reference_diag.shape[0] >= done:
        plasticity = plasticity_per_task(a, reference_diag[:done])
        out["plasticity"] = mean_defined(plasticity)
        out["plasticity_per_task"] = plasticity.tolist()
    return out


def load_reference(resolved: Resolved, setting: dict[str, Any], task_names: list[str]) -> tuple[np.ndarray | None, str | None]:
    """Diagonal ``A*_i`` of a finished fine-tuning run in the same setting (benchmark, task
    count, network and weights, schedule, data protocol), with the same seed and task order,
    for plasticity. ``--reference`` that is not such a run is an error naming what differs;
    without it, ``runs_dir`` is searched and only such a run is used (else no plasticity)."""
    config = resolved.config
    if config.method == "finetune" and config.reference is None:
        return None, "self"
    explicit = config.reference is not None
    if explicit:
        path = Path(config.reference)
        candidates = [path / "results.json" if path.is_dir() else path]
    else:
        candidates = sorted(Path(config.runs_dir).glob("*/results.json"))
    for path in candidates:
        if path.resolve() == (resolved.run_dir / "results.json").resolve():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            if explicit:
                raise UsageError(f"reference {str(path)!r} is not a readable results.json") from None
            continue
        problems = []
        if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
            problems.append("not a supervised results file")
        else:
            if data.get("config", {}).get("method") != "finetune":
                problems.append(f"method {data.get('config', {}).get('method')!r} is not finetune")
            problems += [f"{k} differs" for k in differences(setting_of(data), setting)]
            if data.get("config", {}).get("seed") != config.seed:
                problems.append(f"seed {data.get('config', {}).get('seed')} is not {config.seed}")
            elif task_order_of(data) != task_names:
                problems.append("task order differs")
        diag = [] if problems else [row[i] if row is not None and i < len(row) else None for i, row in enumerate(data.get("accuracy", []))]
        if not problems and (len(diag) < len(task_names) or any(d is None for d in diag[: len(task_names)])):
            problems.append("the run is not finished")
        if not problems:
            return np.array(diag[: len(task_names)], dtype=np.float64), str(path)
        if explicit:
            raise UsageError(f"reference {str(path)!r} cannot serve as the fine-tuning reference: {'; '.join(problems)}")
    return None, None


# --------------------------------------------------------------------------------------
# the training run


def _progress(iterable: Any, enabled: bool, **kw: Any) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, dynamic_ncols=True, file=sys.stderr, **kw)


class _NullWriter:
    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


CHECKPOINT_KEYS = ("identity", "next_task", "trunk", "heads", "method", "accuracy", "per_task", "timeline", "seconds", "torch_rng")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train`; ``UsageError`` naming the file when it is corrupt
    (empty, truncated, random bytes) or another program's."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch and pickle raise many kinds on a damaged file
        raise UsageError(f"{path} is corrupt or not a checkpoint ({first_line(exc)}): remove it, or pass --overwrite "
                         "to start the run again") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in CHECKPOINT_KEYS):
        raise UsageError(f"{path} is corrupt or not a checkpoint of supervised/train.py: remove it, or pass --overwrite "
                         "to start the run again")
    return checkpoint


def train(config: Config) -> dict[str, Any]:
    """Run (or resume) the continual sequence; returns the final results dict."""
    resolved = resolve(config)
    run_dir = resolved.run_dir
    checkpoint_path, results_path = run_dir / "checkpoint.pt", run_dir / "results.json"
    checkpoint: dict[str, Any] | None = None
    if config.resume and checkpoint_path.is_file():
        checkpoint = load_checkpoint(checkpoint_path)
        stored, current = checkpoint["identity"], identity(resolved)
        if stored != current:
            diff = _first_difference(stored, current)
            raise UsageError(f"cannot resume {str(run_dir)!r}: {diff} differs from the interrupted run")
    elif not config.overwrite and (checkpoint_path.exists() or results_path.exists()):
        raise UsageError(f"run {str(run_dir)!r} already exists: pass --resume to continue it or --overwrite to replace it")

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed, resolved.device)

    # Network (and its weights file) before any data: a bad file fails fast.
    from supervised.data import INPUT_SHAPES, DataError, DatasetMissingError, load_benchmark

    input_shape = INPUT_SHAPES[config.benchmark]
    trunk = build_trunk(resolved.network, input_shape)
    if config.weights is not None:
        try:
            load_pretrained(trunk, resolved.network, config.weights)
        except WeightsMismatchError as exc:
            raise UsageError(str(exc)) from None
    if set(config.method.split("+")) & set(CHAIN_METHODS):
        from agscl.groups import discover_layers

        try:
            discover_layers(trunk)
        except ValueError as exc:
            raise UsageError(f"method {config.method!r} cannot use network {resolved.network!r}: {exc}") from None

    try:
        bench = load_benchmark(config.benchmark, config.data_dir, seed=config.seed, valid_fraction=resolved.valid_fraction,
                               num_tasks=config.num_tasks, cub_split=resolved.cub_split or "released")
    except (DatasetMissingError, DataError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    if config.weights is None and resolved.network in ("alexnet", "resnet18") and config.benchmark == "cub200":
        print(f"warning: {resolved.network} without --weights trains from scratch (the paper used ImageNet weights)", file=sys.stderr)

    device = resolved.device
    trunk.to(device)
    heads = build_heads(feature_dim(trunk, input_shape), bench.num_classes).to(device)
    method = build_method(resolved, trunk, heads)
    num_tasks = len(bench.tasks)
    task_names = [t.name for t in bench.tasks]

    acc = np.full((num_tasks, num_tasks), np.nan)
    per_task: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    start_task, elapsed_before = 0, 0.0
    if checkpoint is not None:
        trunk.load_state_dict(checkpoint["trunk"])
        heads.load_state_dict(checkpoint["heads"])
        method.load_state_dict(checkpoint["method"])
        start_task = int(checkpoint["next_task"])
        acc[:start_task, :] = np.array(checkpoint["accuracy"], dtype=np.float64)[:start_task, :num_tasks]
        per_task, timeline = list(checkpoint["per_task"]), list(checkpoint["timeline"])
        elapsed_before = float(checkpoint["seconds"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"])

    layers = None
    if resolved.network in PLAIN_NETWORKS:
        from agscl.groups import discover_layers

        layers = discover_layers(trunk)
    extra_params = list(method.parameters())  # HAT's task embeddings

    header = {
        "format": RESULTS_FORMAT,
        "run_name": run_dir.name,
        "label": resolved.label,
        "config": dataclasses.asdict(config),
        "network": {"name": resolved.network, "trunk_parameters": sum(p.numel() for p in trunk.parameters()),
                    "nodes": None if layers is None else sum(l.num_nodes for l in layers)},
        "schedule": resolved.schedule,
        "valid_fraction": resolved.valid_fraction,
        "cub_split": resolved.cub_split,
        "hparams": resolved.hparams,
        "preset_sources": {"schedule": presets.source_of(config.benchmark, "schedule"),
                           "method": presets.source_of(config.benchmark, config.method),
                           "network": presets.source_of(config.benchmark, "network") if config.network is None else "chosen"},
        "versions": versions(),
        "device": str(device),
        "benchmark": {"name": bench.name, "input_shape": list(bench.input_shape),
                      "tasks": [{"name": t.name, "num_classes": t.num_classes, "train": t.size("train"),
                                 "valid": t.size("valid"), "test": t.size("test")} for t in bench.tasks]},
        "reference": None,
    }
    reference_diag, header["reference"] = load_reference(resolved, setting_of(header), task_names)

    def results(done: int, seconds: float) -> dict[str, Any]:
        ref = np.diag(acc) if config.method == "finetune" else reference_diag
        out = dict(header)
        out.update(finished=done == num_tasks, tasks_done=done, seconds=seconds,
                   accuracy=[[acc[i, j] if (i < done and j <= i) else None for j in range(num_tasks)] for i in range(num_tasks)])
        out.update(summarize(acc, done, ref))
        last = per_task[-1]["stats"] if per_task else {}
        out["stored_floats"] = last.get("stored_floats")
        out["per_task"] = per_task
        out["timeline"] = timeline
        return out

    if start_task >= num_tasks:
        final = results(num_tasks, elapsed_before)
        atomic_write_json(results_path, final)
        return final

    if checkpoint is None and config.overwrite:
        # A replaced run starts clean: no stale events or checkpoint of the old one.
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
        checkpoint_path.unlink(missing_ok=True)
    writer: Any = _NullWriter()
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tb"))
    schedule = resolved.schedule
    epochs, batch_size = int(schedule["epochs"]), int(schedule["batch_size"])
    run_start = time.perf_counter()

    def fresh_optimizer(lr: float) -> torch.optim.Optimizer:
        """A fresh optimizer over this task's ``params``, attached to the method (the protocol's
        ``attach_optimizer``: ReDo zeroes the moments of the units it re-initializes)."""
        optimizer = _make_optimizer(params, schedule, lr)
        method.attach_optimizer(optimizer)
        return optimizer

    try:
        task_bar = _progress(range(start_task, num_tasks), config.progress, desc=f"{resolved.label} tasks",
                             initial=start_task, total=num_tasks)
        for t in task_bar:
            task_data = bench.tasks[t]
            task_start = time.perf_counter()
            n_batches = math.ceil(task_data.size("train") / batch_size)
            method.set_epoch_length(n_batches)
            method.begin_task(t)
            before = _group_tensors(layers) if layers else None
            before = [b.clone() for b in before] if before else None
            params = list(trunk.parameters()) + list(heads.parameters()) + extra_params
            lr, best_loss, patience = float(schedule["lr"]), math.inf, int(schedule["lr_patience"])
            optimizer = fresh_optimizer(lr)
            best_state: dict[str, Any] | None = None
            prune_at = retrain_start(method, epochs)  # PackNet: prune, then retrain the kept weights
            epoch_bar = _progress(range(epochs), config.progress, desc=f"task {t} ({task_data.name})", leave=False)
            for epoch in epoch_bar:
                if epoch + 1 == prune_at:  # a fresh optimizer; the best epoch is sought among the retraining ones
                    method.prune(t)
                    optimizer = fresh_optimizer(lr)
                    best_loss, best_state, patience = math.inf, None, int(schedule["lr_patience"])
                trunk.train()
                heads.train()
                loss_sum, penalty_sum, hits, count = 0.0, 0.0, 0, 0
                generator = _batch_generator(config.seed, t, epoch)
                for x, y in task_data.batches("train", batch_size, shuffle=True, generator=generator, device=device):
                    logits = heads[t](trunk(x))
                    ce = F.cross_entropy(logits, y)
                    penalty = method.penalty()
                    loss = ce + penalty
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    method.after_step(lr)
                    loss_sum += float(ce.detach()) * y.shape[0]
                    penalty_sum += float(penalty.detach()) * y.shape[0]
                    hits += int((logits.detach().argmax(dim=1) == y).sum())
                    count += y.shape[0]
                method.end_epoch(lr)
                valid_loss, valid_acc = evaluate(trunk, heads, method, task_data, t, "valid", max(batch_size, 256), device)
                record = {"task": t, "epoch": epoch, "lr": lr, "train_loss": loss_sum / max(count, 1),
                          "train_acc": hits / max(count, 1), "penalty": penalty_sum / max(count, 1),
                          "valid_loss": valid_loss, "valid_acc": valid_acc}
                timeline.append(record)
                step = t * epochs + epoch
                for key in ("train_loss", "train_acc", "penalty", "valid_loss", "valid_acc", "lr"):
                    if math.isfinite(record[key]):
                        writer.add_scalar(f"epoch/{key}", record[key], step)
                if config.progress and hasattr(epoch_bar, "set_postfix"):
                    epoch_bar.set_postfix(loss=f"{record['train_loss']:.3f}", valid=f"{valid_acc:.3f}", lr=f"{lr:.1e}")
                # learning-rate schedule and best-epoch tracking on the validation loss
                if math.isfinite(valid_loss) and valid_loss < best_loss:
                    best_loss, patience = valid_loss, int(schedule["lr_patience"])
                    if config.restore_best:  # the whole model: trunk, heads and the method's own parameters (HAT's embeddings)
                        best_state = {"trunk": {k: v.clone() for k, v in trunk.state_dict().items()},
                                      "heads": {k: v.clone() for k, v in heads.state_dict().items()},
                                      "extra": [p.detach().clone() for p in extra_params]}
                elif schedule["lr_schedule"] == "plateau" and math.isfinite(valid_loss):
                    patience -= 1
                    if patience <= 0:
                        # As the released code: a fresh optimizer at the lower lr (Adam's moments restart).
                        lr = max(lr / float(schedule["lr_factor"]), float(schedule["lr_min"]))
                        patience = int(schedule["lr_patience"])
                        optimizer = fresh_optimizer(lr)
                if schedule["lr_schedule"] == "step" and (epoch + 1) in schedule["milestones"]:
                    lr = max(lr / float(schedule["lr_factor"]), float(schedule["lr_min"]))  # in place, as the released SGD code
                for group in optimizer.param_groups:
                    group["lr"] = lr
            if best_state is not None:
                trunk.load_state_dict(best_state["trunk"])
                heads.load_state_dict(best_state["heads"])
                with torch.no_grad():
                    for p, saved in zip(extra_params, best_state["extra"]):
                        p.copy_(saved)
            measures = capacity_measures(layers, before)
            trunk.eval()
            method.end_task(t, task_data.inputs("train", batch_size=max(batch_size, 256), device=device))
            for j in range(t + 1):
                acc[t, j] = evaluate(trunk, heads, method, bench.tasks[j], j, "test", max(batch_size, 256), device)[1]
            stats = {k: float(v) for k, v in method.statistics().items()}
            stats.update(measures)
            per_task.append({"task": t, "name": task_data.name, "seconds": time.perf_counter() - task_start,
                             "final_lr": lr, "stats": stats})
            seconds = elapsed_before + time.perf_counter() - run_start
            current = results(t + 1, seconds)
            for j in range(t + 1):
                writer.add_scalar(f"accuracy/task_{j}", acc[t, j], t)
            writer.add_scalar("metrics/average_accuracy", current["average_accuracy"][-1], t)
            for key in ("forgetting", "bwt", "stability", "plasticity"):
                if current[key] is not None:
                    writer.add_scalar(f"metrics/{key}", current[key], t)
            for key, value in stats.items():
                writer.add_scalar(f"method/{key}", value, t)
            atomic_torch_save(checkpoint_path, {
                "identity": identity(resolved), "next_task": t + 1,
                "trunk": trunk.state_dict(), "heads": heads.state_dict(), "method": method.state_dict(),
                "accuracy": np.nan_to_num(acc, nan=-1.0).tolist(), "per_task": per_task, "timeline": timeline,
                "seconds": seconds, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            })
            atomic_write_json(results_path, current)
            if config.progress and hasattr(task_bar, "set_postfix"):
                task_bar.set_postfix(avg_acc=f"{current['average_accuracy'][-1]:.3f}")
    finally:
        writer.close()
    return current


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path or 'config'} ({a!r} then, {b!r} now)"


def format_matrix(result: dict[str, Any]) -> str:
    """The accuracy matrix and headline metrics as text."""
    lines = []
    for i, row in enumerate(result["accuracy"]):
        if i >= result["tasks_done"]:
            break
        lines.append(" ".join(f"{100 * v:6.1f}" if v is not None else "     -" for v in row[: i + 1]))
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines.append(
        f"average accuracy {fmt(result['average_accuracy'][-1] if result['average_accuracy'] else None)}  "
        f"forgetting {fmt(result['forgetting'])}  BWT {fmt(result['bwt'])}  "
        f"P {fmt(result['plasticity'])}  S {fmt(result['stability'])}  stored floats {result['stored_floats']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(Config, argv, prog="python -m supervised.train", description=__doc__.split("\n\n")[0])
        result = train(config)
    except (UsageError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_matrix(result))
    print(f"results: {Path(config.runs_dir) / result['run_name'] / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
