"""Calibrate a method's hyperparameters (AGS-CL's mu and lambda) against a stated objective.

First the fine-tuning reference runs (one per seed) go through the ordinary sweep; then Ray
Tune proposes configurations (its grid, or Optuna through Tune over ``--space`` ranges) and
each configuration runs the method on every seed as ordinary trials in the same sweep
directory, scored by the mean objective over seeds. Without Ray, the grid runs through the
sequential engine and is ranked the same way. Re-running skips finished trials.

Objectives (higher is better):

* ``average_accuracy`` (supervised): final average accuracy;
* ``accumulated_normalized_return`` (RL): final scores over the fine-tuning reference's best
  per game, summed over games (paper Figure 7a);
* ``stability_at_plasticity``: S when P >= ``--min-plasticity``, else ``P - 1``, so that every
  configuration that keeps enough plasticity ranks above every one that does not, and among
  those that do not, the closer one ranks higher.
"""

from __future__ import annotations

import json
import math
import os
import sys
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sweep.engine import EngineOptions, Progress, init_ray, run_sweep
from sweep.launch import LaunchOptions, read_results, run_trial, write_text_atomic
from sweep.spec import Spec, SweepError, Trial

OBJECTIVES = ("average_accuracy", "accumulated_normalized_return", "stability_at_plasticity")
ALGORITHMS = ("grid", "optuna")


@dataclass
class SearchOptions:
    method: str = "agscl"
    objective: str = "stability_at_plasticity"
    min_plasticity: float = 0.9
    algorithm: str = "grid"
    num_samples: int = 10
    """optuna: configurations to try"""
    space: dict[str, tuple[float, float, bool]] = field(default_factory=dict)
    """optuna: key -> (low, high, log scale)"""
    seed: int = 0


def trial_metrics(trainer: str, run_dir: str | Path) -> dict[str, float | None]:
    """P, S, forgetting and the score of one finished run, from its results.json."""
    results = read_results(run_dir) or {}
    if trainer == "rl":
        from sweep.aggregate import rl_run_metrics

        return rl_run_metrics(results)
    acc = results.get("average_accuracy") or [None]
    return {"average_accuracy": acc[-1], "plasticity": results.get("plasticity"),
            "stability": results.get("stability"), "forgetting": results.get("forgetting")}


def objective_value(metrics: dict[str, float | None], objective: str, min_plasticity: float) -> float | None:
    if objective == "stability_at_plasticity":
        p, s = metrics.get("plasticity"), metrics.get("stability")
        if p is None or s is None:
            return None
        return s if p >= min_plasticity else p - 1.0
    return metrics.get(objective)


def parse_space(text: str) -> tuple[str, tuple[float, float, bool]]:
    """``key=low:high`` or ``key=low:high:log``."""
    key, _, rng = text.partition("=")
    parts = rng.split(":")
    try:
        low, high = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise SweepError(f"--space {text!r}: expected KEY=LOW:HIGH or KEY=LOW:HIGH:log") from None
    log = len(parts) > 2 and parts[2] == "log"
    if not key or not low < high or (log and low <= 0) or len(parts) > 3 or (len(parts) == 3 and not log):
        raise SweepError(f"--space {text!r}: expected KEY=LOW:HIGH[:log] with LOW < HIGH (and LOW > 0 for log)")
    return key, (low, high, log)


def _check(spec: Spec, options: SearchOptions) -> None:
    if options.objective not in OBJECTIVES:
        raise SweepError(f"unknown objective {options.objective!r}: choose {', '.join(OBJECTIVES)}")
    wrong = {"average_accuracy": "rl", "accumulated_normalized_return": "supervised"}.get(options.objective)
    if wrong == spec.trainer:
        raise SweepError(f"objective {options.objective!r} does not exist for the {spec.trainer} trainer")
    if options.algorithm not in ALGORITHMS:
        raise SweepError(f"unknown search algorithm {options.algorithm!r}: choose grid or optuna")
    if spec.grid:
        raise SweepError("search: put fixed settings in the trainer flags; the grid is searched per method ([grid.METHOD])")
    if options.algorithm == "grid" and not spec.method_grid.get(options.method):
        raise SweepError(f"search grid: give values for {options.method}, e.g. --grid {options.method}.mu=0.1,1,10")
    if options.algorithm == "optuna" and not options.space:
        raise SweepError("search optuna: give ranges, e.g. --space mu=0.01:10:log --space lam=1:10000:log")
    if options.num_samples < 1:
        raise SweepError(f"num_samples={options.num_samples} must be >= 1")


def _config_trials(spec: Spec, method: str, config: dict[str, Any], sweep_dir: Path) -> list[Trial]:
    """The trials of one configuration (every seed), pointing at the fine-tuning references."""
    one = replace(spec, methods=["finetune", method], method_grid={method: {k: [v] for k, v in config.items()}})
    return [t for t in one.trials(sweep_dir) if (t.variant or t.method) == method]


def evaluate_config(config: dict[str, Any], spec: Spec, method: str, launch: LaunchOptions, objective: str,
                    min_plasticity: float) -> dict[str, Any]:
    """Run one configuration on every seed; mean objective and metrics over seeds."""
    sweep_dir = Path(launch.sweep_dir)
    per_seed = []
    for trial in _config_trials(spec, method, config, sweep_dir):
        outcome = run_trial(trial, launch)
        if outcome.state not in ("finished", "skipped"):
            raise RuntimeError(f"trial {trial.name} {outcome.state}: {outcome.error}")
        metrics = trial_metrics(spec.trainer, trial.run_dir)
        metrics["objective"] = objective_value(metrics, objective, min_plasticity)
        per_seed.append(metrics)
    out: dict[str, Any] = {}
    for key in per_seed[0]:
        values = [m[key] for m in per_seed if m[key] is not None and math.isfinite(m[key])]
        out[key] = statistics.fmean(values) if values else -math.inf if key == "objective" else None
    return out


def _tune_search(spec: Spec, options: SearchOptions, launch: LaunchOptions, engine: EngineOptions,
                 sweep_dir: Path) -> list[dict[str, Any]]:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own lines instead of Tune's status tables
    import ray
    from ray import tune

    if not ray.is_initialized():
        init_ray(engine)
    if options.algorithm == "grid":
        grid = spec.method_grid[options.method]
        param_space = {k: tune.grid_search(v) for k, v in grid.items()}
        search_alg, samples, total = None, 1, math.prod(len(v) for v in grid.values())
    else:
        from ray.tune.search.optuna import OptunaSearch

        param_space = {k: (tune.loguniform if log else tune.uniform)(low, high) for k, (low, high, log) in options.space.items()}
        search_alg = OptunaSearch(metric="objective", mode="max", seed=options.seed)
        samples = total = options.num_samples
    progress = Progress([], engine.progress, total=total)

    class Lines(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress(_name(trial.config), "running", f"{len(spec.seeds)} seeds")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress(_name(trial.config), "finished", f"objective {trial.last_result.get('objective', math.nan):.4f}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress(_name(trial.config), "failed", "see the trial's log in logs/")

    trainable = tune.with_resources(
        tune.with_parameters(_tune_trainable, spec=spec, method=options.method, launch=launch,
                             objective=options.objective, min_plasticity=options.min_plasticity),
        {"cpu": engine.cpus_per_trial, "gpu": engine.gpus_per_trial})
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric="objective", mode="max", search_alg=search_alg, num_samples=samples),
        run_config=tune.RunConfig(name="search", storage_path=str(sweep_dir / "tune"), verbose=0, callbacks=[Lines()]),
    )
    try:
        grid_results = tuner.fit()
    finally:
        progress.close()
    return [{"config": r.config, **(r.metrics or {})} for r in grid_results if r.config is not None]


def _tune_trainable(config: dict[str, Any], spec: Spec, method: str, launch: LaunchOptions, objective: str,
                    min_plasticity: float) -> None:
    from ray import tune

    tune.report(evaluate_config(config, spec, method, launch, objective, min_plasticity))


def _name(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def run_search(spec: Spec, sweep_dir: str | Path, options: SearchOptions, engine: EngineOptions,
               cwd: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """References, then the search; returns the ranked rows and their table (also in search.json)."""
    _check(spec, options)
    if options.algorithm == "grid":  # every configuration through the trainer's own checks before any run
        grid = spec.method_grid[options.method]
        spec.check_trials(replace(spec, methods=["finetune", options.method], method_grid={options.method: grid}).trials(Path(sweep_dir)))
    kind = engine.resolved_engine()
    if kind != "ray" and options.algorithm != "grid":
        raise SweepError('search optuna runs through Ray Tune: pip install -e ".[sweep]" (or use --search grid)')
    sweep_dir = Path(sweep_dir).resolve()
    references = run_sweep(replace(spec, methods=["finetune"], method_grid={}), sweep_dir, engine, cwd)
    if not references.ok:
        raise RuntimeError("a fine-tuning reference run failed: see its log in logs/")
    launch = LaunchOptions(str(sweep_dir), engine.retries, max(1, round(engine.cpus_per_trial)), cwd or os.getcwd())
    if kind == "ray":
        rows = _tune_search(spec, options, launch, engine, sweep_dir)
    else:
        grid = spec.method_grid[options.method]
        run_sweep(replace(spec, methods=[options.method], method_grid={options.method: grid}), sweep_dir, engine, cwd)
        import itertools

        configs = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        rows = []
        for c in configs:  # a configuration whose trial failed is reported and the search goes on
            try:
                rows.append({"config": c, **evaluate_config(c, spec, options.method, launch, options.objective,
                                                            options.min_plasticity)})
            except RuntimeError as exc:
                print(f"search: {_name(c)}: {exc}", file=sys.stderr)
                rows.append({"config": c, "objective": None, "error": str(exc)})
    rows.sort(key=lambda r: -r.get("objective", -math.inf) if r.get("objective") is not None else math.inf)
    text = format_search(rows, options)
    payload = {"objective": options.objective, "min_plasticity": options.min_plasticity, "algorithm": options.algorithm,
               "method": options.method, "seeds": spec.seeds, "rows": rows, "best": rows[0]["config"] if rows else None}
    write_text_atomic(sweep_dir / "search.json", json.dumps(payload, indent=1, default=str) + "\n")
    return rows, text


def format_search(rows: list[dict[str, Any]], options: SearchOptions) -> str:
    def num(v: Any) -> str:
        return "n/a" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.4f}"

    score = "average_accuracy" if "average_accuracy" in (rows[0] if rows else {}) else "accumulated_normalized_return"
    lines = [f"{'configuration':32s} {'objective':>10s} {score[:12]:>12s} {'P':>8s} {'S':>8s}"]
    for r in rows:
        lines.append(f"{_name(r['config']):32s} {num(r.get('objective')):>10s} {num(r.get(score)):>12s} "
                     f"{num(r.get('plasticity')):>8s} {num(r.get('stability')):>8s}")
    if options.objective == "stability_at_plasticity":
        lines.append(f"objective: S when P >= {options.min_plasticity:g}, else P - 1")
    return "\n".join(lines)
