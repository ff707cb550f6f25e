"""TensorBoard made for continual runs: two custom-scalars pages and the HParams dashboard.

The "continual" page puts, on one screen, every game's normalized return in one chart, the
accumulated normalized return, every game's raw return, and P and S per game; the "plasticity"
page the trunk's plasticity metrics (every layer's in one chart). The HParams dashboard gets
the run's method and hyperparameters with its final accumulated normalized return, mean P and
mean S, so methods compare in TensorBoard as in ``plot_continual.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Collection

#: Custom-scalars layout (tags are regular expressions, as the plugin reads them).
LAYOUT: dict[str, dict[str, list[Any]]] = {
    "continual": {
        "normalized return, every game": ["Multiline", [r"eval/[^/]+/normalized_return$"]],
        "accumulated normalized return": ["Multiline", [r"eval/accumulated_normalized_return$"]],
        "return, every game": ["Multiline", [r"eval/[^/]+/return$", r"eval/[^/]+/random_return$"]],
        "P per game": ["Multiline", [r"metrics/[^/]+/P$"]],
        "S per game": ["Multiline", [r"metrics/[^/]+/S$"]],
        "mean P and S": ["Multiline", [r"metrics/(P|S)_mean$"]],
    },
    "plasticity": {  # agents/plasticity_metrics.py, at every evaluation
        "dormant fraction": ["Multiline", [r"plasticity/dormant_fraction$"]],
        "effective rank of the features (srank)": ["Multiline", [r"plasticity/srank$"]],
        "mean |weight| per layer": ["Multiline", [r"plasticity/weight_magnitude/"]],
        "gradient norm per layer": ["Multiline", [r"plasticity/grad_norm/"]],
    },
}
#: HParams metric tags (written once the run finishes).
METRIC_TAGS = ("hparam/accumulated_normalized_return", "hparam/P_mean", "hparam/S_mean")


def hparams_of(args: Any, drop: Collection[str] = ()) -> dict[str, Any]:
    """The run's configuration (a dataclass) as HParams values: tuples become strings, None and
    the fields named in ``drop`` are left out. The trainer passes the flags of the methods the
    run does not use (``agents.methods_cli.run_hparams``), so a fine-tuning run shows no
    ``agscl_lambda``."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(args).items():
        if value is None or key in drop:
            continue
        out[key] = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    return out


def final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Accumulated normalized return at the last evaluation (needs a reference), mean P (needs a
    reference) and mean S; NaN where undefined, so every run has the same metric columns."""
    timeline = results.get("timeline") or []
    acc = timeline[-1].get("accumulated_normalized") if timeline else None
    metrics = results.get("metrics") or {}
    values = {"hparam/accumulated_normalized_return": acc, "hparam/P_mean": metrics.get("P_mean"),
              "hparam/S_mean": metrics.get("S_mean")}
    return {k: float("nan") if v is None else float(v) for k, v in values.items()}


def write_hparams(writer: Any, hparams: dict[str, Any], results: dict[str, Any]) -> None:
    """The HParams session of this run (``hparams``: :func:`hparams_of`), in the run's own event
    file at its last step. Every metric is declared, but only the defined ones are logged: an
    undefined one (no reference yet) is written later by ``python -m reporting.normalize`` with
    its number, never first as NaN."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    metrics = final_metrics(results)
    step = int(results["progress"]["global_step"])
    for summary in hparams_summary(hparams, metrics):
        writer.file_writer.add_summary(summary, step)
    for tag, value in metrics.items():
        if math.isfinite(value):
            writer.add_scalar(tag, value, step)
