"""Normalized returns, P and HParams metrics written into finished runs' TensorBoard, after the fact.

    python -m reporting.normalize RUN... --reference FT_RUN

A run started with ``--reference-run`` logs its normalized returns live. Every other run (the
demo's, whose fine-tuning run trains beside it; a sweep's fine-tuning runs; any run made without
a reference) has only raw returns in TensorBoard, so the "continual" custom-scalars page would
show empty charts. This command reads the runs' ``results.json`` files and writes into each
run's directory one event file of its own (:data:`EVENT_FILE`) with what the run could not log:

- ``eval/<Game>/normalized_return`` and ``eval/accumulated_normalized_return`` at the global
  step of every evaluation of the timeline;
- ``metrics/<Game>/P`` and ``metrics/P_mean`` at every end-of-game evaluation (S needs no
  reference: the run logged it live);
- the HParams metrics ``hparam/accumulated_normalized_return`` and ``hparam/P_mean``.

The numbers come from :mod:`reporting.results` (``reference_scores``, ``normalized``,
``continual_metrics``), the same functions as the live agent, the plot and the aggregate. A
fine-tuning run is normalized by its own best. The file has a fixed name and is replaced
atomically, so running the command again gives the same TensorBoard, not doubled points; its
name sorts after the agent's own event files, so a resumed run's purge never drops its points.
A run that logged its normalized returns live is left as it is. Bad input (a missing or foreign
results file, a reference that is not a fine-tuning run over the run's games) is one line on
stderr and exit code 2.

``add_figure`` puts a PNG (the demo's and the sweep's Figure 7) into the Images tab the same way.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import tyro

from reporting.results import best_scores, continual_metrics, load_results, normalization_note, normalized, reference_scores
from reporting.tb_events import add_png, add_scalars, write_event_file
from common.cli import parse
from common.runio import check_output_file

#: The event file this module owns in a run directory. "tfevents" makes TensorBoard read it;
#: 9999999999 sorts it after the agent's files (events.out.tfevents.<unix time>.<host>...).
EVENT_FILE = "events.out.tfevents.9999999999.normalize"
#: The event file of a figure in a directory (the demo's or the sweep's).
FIGURE_FILE = "events.out.tfevents.9999999999.figure"
FIGURE_TAG = "figure7/continual_plot"


@dataclass
class NormalizeArgs:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (or results.json files) to write normalized returns into"""
    reference: Optional[str] = None
    """the fine-tuning run whose best score per game normalizes the returns (needed unless every run is a fine-tuning run,
    which is normalized by its own best)"""


def normalization(results: dict[str, Any], reference: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """What :func:`normalize_run` writes for one run: per evaluation of the timeline, the
    normalized return of every game and their sum; per end-of-game evaluation, P per game and
    its mean; and the HParams metrics. ``reference`` None: the run is normalized by itself
    (only meaningful for a fine-tuning run). ``ValueError`` when the reference does not cover
    the run's games."""
    seen = best_scores(results)  # an unfinished run: only the games it has played
    games = [g for g in results["games"] if g in seen]
    ref = reference_scores(reference if reference is not None else results, games, where, strict=False)
    random = results.get("random") or {}  # statistics, as the live agent passes them (only a legacy reference reads them)
    timeline = []
    for entry in results["timeline"]:
        norm, acc = normalized(entry["scores"], ref, random)
        timeline.append({"global_step": int(entry["global_step"]), "normalized": norm, "accumulated": acc})
    boundaries = []
    for entry in results["timeline"]:
        if not entry.get("boundary"):
            continue
        done = int(entry["game"]) + 1
        upto = dict(results, reference=ref,
                    score_matrix=[row if i < done else [None] * len(results["games"])
                                  for i, row in enumerate(results["score_matrix"])])
        metrics = continual_metrics(upto)
        boundaries.append({"global_step": int(entry["global_step"]), "P": {g: v["P"] for g, v in metrics["per_game"].items()},
                           "P_mean": metrics.get("P_mean")})
    final = continual_metrics(dict(results, reference=ref))
    hparams = {"hparam/accumulated_normalized_return": timeline[-1]["accumulated"] if timeline else None,
               "hparam/P_mean": final.get("P_mean")}
    by = "its own best and random score (a fine-tuning run)" if reference is None else f"the fine-tuning run {where}"
    return {"timeline": timeline, "boundaries": boundaries, "hparams": hparams,
            "hparams_step": int(results["progress"]["global_step"]), "note": normalization_note(by, ref["undefined"])}


def _scalars(norm: dict[str, Any]) -> list[tuple[int, list[tuple[str, float]]]]:
    """What :func:`normalize_run` writes: per global step, the defined (finite) scalars."""
    finite = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    out = []
    for entry in norm["timeline"]:
        values = [(f"eval/{g}/normalized_return", v) for g, v in entry["normalized"].items() if finite(v)]
        out.append((entry["global_step"], values + [("eval/accumulated_normalized_return", entry["accumulated"])]))
    for entry in norm["boundaries"]:
        values = [(f"metrics/{g}/P", v) for g, v in entry["P"].items() if finite(v)]
        out.append((entry["global_step"], values + ([("metrics/P_mean", entry["P_mean"])] if finite(entry["P_mean"]) else [])))
    out.append((norm["hparams_step"], [(tag, v) for tag, v in norm["hparams"].items() if finite(v)]))
    return out


def normalize_run(run: str, reference: str | None) -> str:
    """Write :data:`EVENT_FILE` into ``run`` (see the module docstring); returns one line that
    says what was done. A fine-tuning run is normalized by its own best whatever ``reference``;
    another run needs ``reference``. ``ValueError`` on bad input."""
    results = load_results(run)
    run_dir = _run_dir(run)
    if results.get("reference") is not None:
        return f"{run_dir}: normalized live by its --reference-run {results['reference'].get('run')}: left as it is"
    is_finetune = results["config"].get("method") == "finetune"
    if not is_finetune and reference is None:
        raise ValueError(f"{run_dir} is a {results['config'].get('method')} run: give --reference, a fine-tuning run over its games")
    ref_results, where = (None, run_dir) if is_finetune else (load_results(reference), str(reference))
    if ref_results is not None and ref_results["config"].get("method") != "finetune":
        raise ValueError(f"reference {reference} is a {ref_results['config'].get('method')} run, not a fine-tuning run")
    norm = normalization(results, ref_results, where)
    wall_time = time.time()

    def fill(writer: Any) -> None:
        for step, values in _scalars(norm):
            add_scalars(writer, values, step, wall_time)
        writer.add_text("normalization", norm["note"], norm["hparams_step"], wall_time)

    write_event_file(os.path.join(run_dir, EVENT_FILE), fill)
    acc = norm["hparams"]["hparam/accumulated_normalized_return"]
    by = "its own best" if is_finetune else where
    return (f"{run_dir}: {len(norm['timeline'])} evaluations normalized by {by} "
            f"(accumulated normalized return {acc:.3f} at global_step={norm['hparams_step']})" if acc is not None
            else f"{run_dir}: no evaluation to normalize")


def _run_dir(run: str) -> str:
    return os.path.dirname(os.path.abspath(run)) if run.endswith(".json") else run


def normalize_runs(runs: Sequence[str], reference: str | None) -> list[str]:
    """:func:`normalize_run` on every run (all checked, their event files' places included,
    before any file is written)."""
    for run in [*runs, *([reference] if reference else [])]:
        load_results(run)
    for run in runs:
        check_output_file(os.path.join(_run_dir(run), EVENT_FILE), "run")
    return [normalize_run(run, reference) for run in runs]


def add_figure(log_dir: str, png_path: str, step: int = 0, tag: str = FIGURE_TAG) -> str:
    """Put the PNG file ``png_path`` as it is (no re-encoding: the same figure) into the Images
    tab of ``log_dir``'s TensorBoard, as its own event file :data:`FIGURE_FILE` (replaced
    atomically, so calling it again replaces the image). Returns the event file's path."""
    with open(png_path, "rb") as f:
        data = f.read()
    path = os.path.join(log_dir, FIGURE_FILE)
    write_event_file(path, lambda writer: add_png(writer, tag, data, step))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(NormalizeArgs, argv, description=__doc__.split("\n\n")[0])
        if not args.runs:
            raise ValueError("give at least one run directory")
        lines = normalize_runs(args.runs, args.reference)
    except ValueError as exc:
        print(f"normalize: error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
