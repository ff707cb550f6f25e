"""Continual-learning metrics against matrices worked out by hand."""

import numpy as np
import pytest

from reporting import metrics

# A[i, j]: score of task j after learning task i (upper triangle not yet learned).
A = np.array(
    [
        [0.90, np.nan, np.nan],
        [0.80, 0.70, np.nan],
        [0.60, 0.75, 0.50],
    ]
)
REFERENCE = np.array([0.90, 0.80, 0.40])  # fine-tuning's A*_i


def test_average_score_uses_learned_tasks_only():
    np.testing.assert_allclose(metrics.average_score(A), [0.90, 0.75, (0.60 + 0.75 + 0.50) / 3])


def test_plasticity_is_diagonal_over_reference():
    np.testing.assert_allclose(metrics.plasticity_per_task(A, REFERENCE), [1.0, 0.875, 1.25])
    assert metrics.plasticity(A, REFERENCE) == pytest.approx((1.0 + 0.875 + 1.25) / 3)


def test_stability_is_last_row_over_best_score_since_learned():
    # task 0: 0.60 / max(0.90, 0.80, 0.60); task 1: 0.75 / max(0.70, 0.75); task 2: 0.50 / 0.50
    np.testing.assert_allclose(metrics.stability_per_task(A), [0.60 / 0.90, 1.0, 1.0])
    assert metrics.stability(A) == pytest.approx((0.60 / 0.90 + 2.0) / 3)


def test_forgetting_is_max_based_and_bwt_is_diagonal_based():
    # forgetting: task 0: max(0.90, 0.80) - 0.60 = 0.30; task 1: 0.70 - 0.75 = -0.05
    assert metrics.forgetting(A) == pytest.approx((0.30 - 0.05) / 2)
    # bwt: task 0: 0.60 - 0.90; task 1: 0.75 - 0.70
    assert metrics.backward_transfer(A) == pytest.approx((-0.30 + 0.05) / 2)


def test_single_task_and_bad_shapes():
    assert metrics.forgetting([[0.5]]) == 0.0 and metrics.backward_transfer([[0.5]]) == 0.0
    with pytest.raises(ValueError, match="square"):
        metrics.average_score(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one score per task"):
        metrics.plasticity_per_task(A, [1.0, 2.0])
