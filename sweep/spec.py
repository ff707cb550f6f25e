"""What a sweep is: a trainer, methods x seeds x a hyperparameter grid, and pass-through flags.

A sweep expands into :class:`Trial` objects, each one ordinary run of a trainer with its own
run directory ``<sweep dir>/<trial name>/``. Nothing here imports torch, so the expansion and
its checks are instant and the engine's workers stay light.

TOML form (every key optional except ``trainer``)::

    trainer = "supervised"             # or "rl"
    methods = ["finetune", "agscl"]
    seeds = [0, 1, 2]
    flags = {benchmark = "split_digits", epochs = 1}   # or a list of raw tokens
    [grid]                              # every method; a list expands, a list of lists is one multi-token value
    lr = [0.001, 0.0003]
    [grid.agscl]                        # only for agscl
    mu = [1, 10]
    lam = [100, 400]
    [variants.agscl_no_reinit]          # a named flag set, listed in `methods` like a method
    method = "agscl"
    flags = {zero_init = false, rand_init = false}

Flag form: ``--trainer supervised --methods finetune agscl --seeds 0 1 --grid lr=0.001,0.0003
--grid agscl.mu=1,10 -- --benchmark split_digits --epochs 1``; a variant is
``--variant "agscl_no_reinit=agscl --no-zero-init --no-rand-init"``.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence


class SweepError(ValueError):
    """Bad sweep input: reported as one line, exit code 2."""


def _supervised_methods() -> tuple[str, ...]:
    from supervised.train import method_names

    return method_names()


def _rl_methods() -> tuple[str, ...]:
    import typing

    from agents.ppo_continual import Args

    return tuple(typing.get_args(typing.get_type_hints(Args)["method"]))


def _rl_flags() -> dict[str, tuple[str, ...] | None]:
    import dataclasses

    from agents.methods_cli import flag_specs
    from agents.ppo_continual import Args

    methods = flag_specs()
    return {f.name: tuple(methods[f.name][1]) if f.name in methods else None for f in dataclasses.fields(Args)}


def _supervised_flags() -> dict[str, tuple[str, ...] | None]:
    import dataclasses

    from supervised.train import Config, method_flag_specs

    methods = method_flag_specs()
    return {f.name: tuple(methods[f.name][1]) if f.name in methods else None for f in dataclasses.fields(Config)}


def _check_rl_argv(argv: list[str]) -> None:
    """The agent's own parse and checks of a trial's flags (no environment, no network)."""
    import contextlib
    import io

    from agents.config import parse_args, validate
    from agents.ppo_continual import Args
    from agents.runtime import UserError

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its warnings belong to the trial's log
            validate(parse_args(Args, argv))
    except UserError as exc:
        raise SweepError(str(exc)) from None


def _check_supervised_argv(argv: list[str]) -> None:
    """The supervised trainer's own parse and checks of a trial's flags (no data loaded)."""
    from common.cli import CliError, parse
    from supervised.train import Config, UsageError, resolve

    try:
        resolve(parse(Config, argv))
    except (CliError, UsageError) as exc:
        raise SweepError(str(exc)) from None


@dataclass(frozen=True)
class Trainer:
    """How the sweep drives one trainer CLI; everything else is passed through unchanged."""

    name: str
    module: str
    checkpoint: str
    """checkpoint path inside a run directory; present means the run can be resumed"""
    reference_flag: str
    """flag naming a finished fine-tuning run (plasticity, normalized returns)"""
    label_flag: str | None
    methods: Callable[[], tuple[str, ...]]
    flags: Callable[[], dict[str, tuple[str, ...] | None]]
    """the trainer's flags (field names), each with the methods that take it (None: every method)"""
    check_argv: Callable[[list[str]], None]
    """the trainer's own checks of a command line, without running it; SweepError with its message"""

    def finished(self, results: dict[str, Any]) -> bool:
        if self.name == "rl":
            return results.get("progress", {}).get("status") == "finished"
        return results.get("finished") is True

    def resume_argv(self, fresh: list[str], run_dir: Path) -> list[str]:
        # The agent restores its stored config from the run directory; the supervised trainer
        # re-checks the full config against its checkpoint.
        return ["--resume", str(run_dir)] if self.name == "rl" else [*fresh, "--resume"]


TRAINERS: dict[str, Trainer] = {
    "rl": Trainer("rl", "agents.ppo_continual", "ckpt/latest.pt", "--reference-run", None, _rl_methods, _rl_flags,
                  _check_rl_argv),
    "supervised": Trainer("supervised", "supervised.train", "checkpoint.pt", "--reference", "--label", _supervised_methods,
                          _supervised_flags, _check_supervised_argv),
}


def to_flags(key: str, value: Any) -> list[str]:
    """One trainer flag in tyro's spelling: ``--key v``, ``--key a b``, ``--key`` / ``--no-key``."""
    flag = "--" + key.lstrip("-").replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag[2:]]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(_short(v) for v in value)
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+\-]", "-", text)


@dataclass(frozen=True)
class Trial:
    """One run of the trainer: picklable, so an engine can ship it to any worker."""

    name: str
    trainer: str
    method: str
    seed: int
    params: tuple[tuple[str, Any], ...]
    flags: tuple[str, ...]
    """trainer flags of this trial, without the run location and reference"""
    run_dir: str
    reference: str | None = None
    """name of the fine-tuning trial this one is measured against"""
    variant: str | None = None
    """name of the variant (a named flag set of :attr:`method`) this trial runs, if any"""

    @property
    def label(self) -> str:
        """The group of this trial over seeds: method (or variant) plus grid values."""
        return " ".join([self.variant or self.method, *(f"{k}={_short(v)}" for k, v in self.params)])

    def argv(self, sweep_dir: Path) -> list[str]:
        """Flags of a fresh run (the module is :attr:`Trainer.module`)."""
        trainer = TRAINERS[self.trainer]
        run_dir = Path(self.run_dir)
        argv = [*self.flags, "--run-name", run_dir.name, "--runs-dir", str(run_dir.parent)]
        if self.reference is not None:
            argv += [trainer.reference_flag, str(sweep_dir / self.reference)]
        return argv


@dataclass
class Spec:
    """A whole sweep: the grid, the flags every trial shares and where the runs go."""

    trainer: str
    methods: list[str]
    seeds: list[int]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    method_grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    reference: bool = True
    """measure other methods against the fine-tuning trial of the same seed (when the sweep has one)"""
    variants: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    """named flag sets, name -> (method, extra trainer flags); a name is listed in ``methods``
    (and may key ``method_grid``) like a method: an ablation, or one method's fixed settings"""

    def resolve(self, name: str) -> tuple[str, list[str]]:
        """The trainer method and extra flags of a name in ``methods`` (a method or a variant)."""
        method, flags = self.variants.get(name, (name, []))
        return method, list(flags)

    def check(self) -> None:
        """Everything that can be checked without running a trial; ``SweepError`` on bad input."""
        if self.trainer not in TRAINERS:
            raise SweepError(f"unknown trainer {self.trainer!r}: choose rl or supervised")
        if not self.methods:
            raise SweepError("no methods: give --methods or `methods = [...]`")
        if not self.seeds:
            raise SweepError("no seeds: give --seeds or `seeds = [...]`")
        if len(set(self.seeds)) != len(self.seeds) or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise SweepError(f"seeds {self.seeds} must be distinct integers >= 0")
        valid = TRAINERS[self.trainer].methods()
        for name, (method, _) in self.variants.items():
            if method not in valid:
                raise SweepError(f"variant {name!r}: unknown {self.trainer} method {method!r}: valid choices are {', '.join(valid)}")
            if name in valid and name != method:
                raise SweepError(f"variant {name!r} runs {method!r}: a variant may not take another method's name")
            if not name or _safe(name) != name:
                raise SweepError(f"variant name {name!r}: use only letters, digits and . _ + -")
        unknown = [m for m in [*self.methods, *self.method_grid] if m not in valid and m not in self.variants]
        if unknown:
            choices = [*valid, *(v for v in self.variants if v not in valid)]
            raise SweepError(f"unknown {self.trainer} method {unknown[0]!r}: valid choices are {', '.join(choices)}")
        if len(set(self.methods)) != len(self.methods):
            raise SweepError(f"methods {self.methods} list a name twice")
        for scope in [self.grid, *self.method_grid.values()]:
            for key, values in scope.items():
                if not values:
                    raise SweepError(f"grid key {key!r} has no values")
        reserved = {"--seed", "--method", "--run-name", "--runs-dir", "--resume", "--overwrite"}
        clash = [f for f in [*self.flags, *(t for _, fl in self.variants.values() for t in fl)] if f.split("=")[0] in reserved]
        keys = [k for scope in [self.grid, *self.method_grid.values()] for k in scope]
        clash += ["--" + k.replace("_", "-") for k in keys if "--" + k.replace("_", "-") in reserved]
        if clash:
            raise SweepError(f"{clash[0]} is set by the sweep itself (use methods, seeds and the sweep directory)")
        self._check_grid_keys()

    def _check_grid_keys(self) -> None:
        """Every grid key is a flag of the trainer, and a method's flag is taken by a method it applies to."""
        import difflib

        flags = TRAINERS[self.trainer].flags()
        scopes: list[tuple[str | None, dict[str, list[Any]]]] = [(None, self.grid), *self.method_grid.items()]
        for scope, grid in scopes:
            names = [self.resolve(scope)[0]] if scope else [self.resolve(m)[0] for m in self.methods]
            for key in grid:
                name = key.lstrip("-").replace("-", "_")
                shown = f"--grid {scope + '.' if scope else ''}{key}"
                if name not in flags:
                    close = difflib.get_close_matches(name, list(flags), n=1)
                    hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
                    raise SweepError(f"{shown}: the {self.trainer} trainer has no flag --{name.replace('_', '-')}{hint}")
                users = flags[name]
                if users is not None and not set(users) & set(names):
                    which = f"method {names[0]} does not take" if scope else f"none of the methods ({', '.join(self.methods)}) takes"
                    raise SweepError(f"{shown}: {which} --{name.replace('_', '-')} (a flag of {', '.join(users)})")

    def check_scopes(self, search_method: str | None = None) -> None:
        """A method's grid (``--grid METHOD.KEY=...``) belongs to a method the sweep runs: listed in
        ``methods``, or the searched method of a search; otherwise it would be dropped unseen."""
        runs = [search_method] if search_method else self.methods
        for scope, grid in self.method_grid.items():
            if scope not in runs:
                key = next(iter(grid), "KEY")
                where = f"the searched method ({search_method})" if search_method else f"in --methods ({' '.join(self.methods)})"
                raise SweepError(f"--grid {scope}.{key}: {scope} is not {where}: "
                                 f"{'search it' if search_method else 'add it to --methods'} or drop its grid")

    def check_trials(self, trials: Sequence[Trial]) -> None:
        """Each distinct command line of ``trials`` (seeds aside) through the trainer's own checks,
        before any trial starts: a bad grid value is one line here, not a failure of every trial."""
        trainer = TRAINERS[self.trainer]
        seen: set[tuple[str, ...]] = set()
        for trial in trials:
            flags = list(trial.flags)
            i = flags.index("--seed")
            key = tuple(flags[:i] + flags[i + 2:])
            if key in seen:
                continue
            seen.add(key)
            argv = [*flags, "--run-name", Path(trial.run_dir).name, "--runs-dir", str(Path(trial.run_dir).parent)]
            try:
                trainer.check_argv(argv)  # the reference is left out: it does not exist before the sweep runs
            except SweepError as exc:
                raise SweepError(f"trial {trial.name} would be refused by {trainer.module}: {exc}") from None

    def trials(self, sweep_dir: Path) -> list[Trial]:
        """The full grid, fine-tuning first; other methods point at the fine-tuning trial of
        the same seed and shared settings, when the sweep has one."""
        sweep_dir = Path(sweep_dir).resolve()
        names = sorted(self.methods, key=lambda m: m != "finetune")
        out: list[Trial] = []
        finetune: dict[tuple[Any, ...], str] = {}
        for label in names:
            method, extra = self.resolve(label)
            scoped = self.method_grid.get(label, {})
            keys = [*self.grid, *scoped]
            values = [*self.grid.values(), *scoped.values()]
            for combo in itertools.product(*values):
                params = tuple(zip(keys, combo))
                shared = params[: len(self.grid)]
                for seed in self.seeds:
                    name = _safe("_".join([label, *(f"{k.replace('_', '-')}{_short(v)}" for k, v in params), f"seed{seed}"]))
                    flags = [*self.flags, *extra, "--method", method, "--seed", str(seed)]
                    for key, value in params:
                        flags += to_flags(key, value)
                    trial = Trial(name, self.trainer, method, seed, params, tuple(flags), str(sweep_dir / name),
                                  variant=label if label in self.variants else None)
                    label_flag = TRAINERS[self.trainer].label_flag
                    if (params or trial.variant) and label_flag and label_flag not in self.flags:
                        trial = replace(trial, flags=(*trial.flags, label_flag, trial.label))
                    key = (seed, shared)
                    if label == "finetune":
                        finetune.setdefault(key, name)
                    elif key in finetune and self.reference:
                        trial = replace(trial, reference=finetune[key])
                    out.append(trial)
        names = [t.name for t in out]
        if len(set(names)) != len(names):
            raise SweepError("two trials would share a run directory: grid values differ only in characters outside [A-Za-z0-9._+-]")
        return out


def parse_value(text: str) -> Any:
    """A grid value typed on the command line: TOML scalar syntax, else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_grid_flag(text: str) -> tuple[str | None, str, list[Any]]:
    """``[method.]key=v1,v2`` -> (method or None, key, values)."""
    if "=" not in text:
        raise SweepError(f"--grid {text!r}: expected KEY=V1,V2,... or METHOD.KEY=V1,V2,...")
    key, _, values = text.partition("=")
    method, _, key = key.rpartition(".")
    if not key or not values:
        raise SweepError(f"--grid {text!r}: expected KEY=V1,V2,...")
    return (method or None), key, [parse_value(v) for v in values.split(",")]


def _flag_tokens(flags: Any, where: str) -> list[str]:
    if isinstance(flags, list) and all(isinstance(f, str) for f in flags):
        return list(flags)
    if isinstance(flags, dict):
        return [tok for key, value in flags.items() for tok in to_flags(key, value)]
    raise SweepError(f"{where}: `flags` must be a table or a list of strings")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def load_toml(path: str | Path) -> dict[str, Any]:
    """The sweep fields of a TOML file (``trainer, methods, seeds, grid, method_grid, flags, variants, search``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SweepError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{str(path)!r} is not valid TOML: {exc}") from None
    known = {"trainer", "methods", "seeds", "grid", "flags", "variants", "search"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SweepError(f"{str(path)!r}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    out: dict[str, Any] = {k: data[k] for k in ("trainer", "search") if k in data}
    if "methods" in data:
        out["methods"] = [str(m) for m in _as_list(data["methods"])]
    if "seeds" in data:
        out["seeds"] = _as_list(data["seeds"])
    if "flags" in data:
        out["flags"] = _flag_tokens(data["flags"], str(path))
    grid: dict[str, list[Any]] = {}
    method_grid: dict[str, dict[str, list[Any]]] = {}
    for key, value in data.get("grid", {}).items():
        if isinstance(value, dict):
            method_grid[key] = {k: _as_list(v) for k, v in value.items()}
        else:
            grid[key] = _as_list(value)
    out["grid"], out["method_grid"] = grid, method_grid
    variants: dict[str, tuple[str, list[str]]] = {}
    for name, table in data.get("variants", {}).items():
        where = f"{str(path)!r} [variants.{name}]"
        if not isinstance(table, dict) or not isinstance(table.get("method"), str) or set(table) - {"method", "flags"}:
            raise SweepError(f"{where}: expected `method = \"...\"` and optionally `flags`")
        variants[name] = (table["method"], _flag_tokens(table.get("flags", []), where))
    out["variants"] = variants
    return out


def parse_variant_flag(text: str) -> tuple[str, tuple[str, list[str]]]:
    """``NAME=METHOD --flag value ...`` -> (name, (method, flags))."""
    import shlex

    name, _, rest = text.partition("=")
    try:
        tokens = shlex.split(rest)
    except ValueError as exc:
        raise SweepError(f"--variant {text!r}: {exc}") from None
    if not name or not tokens:
        raise SweepError(f"--variant {text!r}: expected NAME=METHOD --flag value ...")
    return name, (tokens[0], tokens[1:])


def build_spec(file: dict[str, Any], trainer: str | None, methods: Sequence[str] | None, seeds: Sequence[int] | None,
               grid_flags: Sequence[str], flags: Sequence[str], variant_flags: Sequence[str] = ()) -> Spec:
    """Merge a TOML file's fields with command-line ones (the command line wins, grids add up)."""
    grid = dict(file.get("grid", {}))
    method_grid = {m: dict(g) for m, g in file.get("method_grid", {}).items()}
    for text in grid_flags:
        method, key, values = parse_grid_flag(text)
        (method_grid.setdefault(method, {}) if method else grid)[key] = values
    spec = Spec(
        trainer=trainer or file.get("trainer", ""),
        methods=list(methods or file.get("methods", [])),
        seeds=list(seeds if seeds is not None else file.get("seeds", [0])),
        grid=grid,
        method_grid=method_grid,
        flags=[*file.get("flags", []), *flags],
        variants={**file.get("variants", {}), **dict(parse_variant_flag(t) for t in variant_flags)},
    )
    if not spec.trainer:
        raise SweepError("no trainer: give --trainer rl|supervised or `trainer = ...` in the TOML file")
    spec.check()
    return spec
