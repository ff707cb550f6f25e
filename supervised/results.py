"""What makes two ``results.json`` comparable, and the ratio metrics that can be undefined.

Shared by the trainer (choosing the fine-tuning reference for plasticity) and the report
(grouping seeds), so both apply the same rule. Pure python + numpy: no torch import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RESULTS_FORMAT = "agscl-supervised-results/1"

# Everything besides the method that changes a run's numbers, as (name, getter on results.json).
SETTING_KEYS = ("benchmark", "tasks", "network", "weights", "schedule", "valid_fraction", "cub_split")


def setting_of(data: dict[str, Any]) -> dict[str, Any]:
    """The experimental setting of a results file: benchmark, number of tasks, network (and
    pretrained weights), training schedule and data protocol. Seed and task order are not in
    it (see :func:`task_order_of`): seeds of one setting are what a report averages."""
    config = data.get("config", {})
    network = data.get("network", {})
    return {
        "benchmark": data.get("benchmark", {}).get("name"),
        "tasks": len(data.get("benchmark", {}).get("tasks", [])),
        "network": network.get("name") if isinstance(network, dict) else network,
        "weights": config.get("weights"),
        "schedule": data.get("schedule"),
        "valid_fraction": data.get("valid_fraction", config.get("valid_fraction")),
        "cub_split": data.get("cub_split", config.get("cub_split")),
    }


def task_order_of(data: dict[str, Any]) -> list[str]:
    return [t["name"] for t in data.get("benchmark", {}).get("tasks", [])]


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two settings, in :data:`SETTING_KEYS` order."""
    return [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with NaN where the denominator is not positive (no warning)."""
    out = np.full(numerator.shape, np.nan)
    ok = denominator > 0
    out[ok] = numerator[ok] / denominator[ok]
    return out


def stability_per_task(a: np.ndarray) -> np.ndarray:
    """``A[T, j] / max_{j<=i<=T} A[i, j]``; NaN for a task whose best score is 0 (it had
    nothing to keep: its stability is undefined, not 0/0 with a warning)."""
    a = np.asarray(a, dtype=np.float64)
    best = np.array([a[j:, j].max() for j in range(a.shape[0])])
    return _ratios(a[-1, :], best)


def plasticity_per_task(a: np.ndarray, reference_diag: np.ndarray) -> np.ndarray:
    """``A[i, i] / A*_i``; NaN where fine-tuning itself scored 0 on the task."""
    a = np.asarray(a, dtype=np.float64)
    return _ratios(np.diag(a), np.asarray(reference_diag, dtype=np.float64)[: a.shape[0]])


def mean_defined(values: np.ndarray) -> float | None:
    """Mean over the defined (finite) entries; None when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
