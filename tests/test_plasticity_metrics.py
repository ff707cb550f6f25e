"""Plasticity metrics (agents/plasticity_metrics.py) against independent computations, and a short
MinAtar run that logs them to TensorBoard at every evaluation and to results.json at each game's end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from agents.layers import CReLU
from agents.plasticity_metrics import (GradNormMeter, activity, dormant_fraction, grad_norms, plasticity_metrics,
                                       srank, trunk_layers, weight_magnitude)


def matrix_with_spectrum(singular: list[float], rows: int = 40, seed: int = 0) -> np.ndarray:
    """A rows x len(singular) matrix U diag(s) V^T with random orthonormal U, V."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((rows, len(singular))))
    v, _ = np.linalg.qr(rng.standard_normal((len(singular), len(singular))))
    return u @ np.diag(singular) @ v.T


def numpy_srank(m: np.ndarray, delta: float) -> int:
    s = np.linalg.svd(m, compute_uv=False)
    for k in range(1, len(s) + 1):
        if s[:k].sum() >= (1 - delta) * s.sum():
            return k
    return len(s)


@pytest.mark.parametrize("delta, expected", [(0.01, 4), (0.1, 3), (0.3, 2), (0.6, 1)])
def test_srank_of_a_known_spectrum_agrees_with_numpys_svd(delta, expected):
    # sum 100: top 1, 2, 3, 4 hold 50, 80, 95, 99.5 of it
    m = matrix_with_spectrum([0.2, 30.0, 4.5, 50.0, 0.3, 15.0])
    assert numpy_srank(m, delta) == expected
    assert srank(torch.tensor(m, dtype=torch.float32), delta) == expected


def test_srank_of_random_matrices_agrees_with_numpy_and_degenerate_cases():
    rng = np.random.default_rng(1)
    for trial in range(5):
        m = rng.standard_normal((64, 16)) * rng.uniform(0.01, 3.0, size=16)  # columns of different scales
        assert srank(torch.tensor(m), 0.01) == numpy_srank(m, 0.01)
    assert srank(torch.zeros(8, 4)) == 0
    assert srank(torch.outer(torch.arange(1.0, 9.0), torch.ones(4))) == 1  # rank one


def test_dormant_fraction_with_crelu_counts_each_of_a_units_two_outputs():
    linear = nn.Linear(1, 3)
    trunk = nn.Sequential(linear, CReLU())
    with torch.no_grad():
        linear.weight[:] = torch.tensor([[1.0], [0.0], [1.0]])
        linear.bias[:] = torch.tensor([0.0, 0.0, -10.0])
    # inputs in (0, 1]: unit 0 = x > 0 (its -x output never fires), unit 1 = 0 (both dormant),
    # unit 2 = x - 10 < 0 (its x output never fires): 4 of 6 outputs dormant
    batches = [torch.rand(4, 1) + 0.01, torch.rand(3, 1) + 0.01]
    assert dormant_fraction(trunk, batches) == 4 / 6


def test_activity_returns_the_trunks_features_row_by_row():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU())
    x = torch.randn(10, 2, 6, 6)
    _, features = activity(trunk, [x[:4], x[4:]])
    torch.testing.assert_close(features, trunk(x).detach())


def test_weight_magnitude_is_the_mean_abs_of_each_layers_weight_and_bias():
    conv, linear = nn.Conv2d(1, 2, 1), nn.Linear(2, 3)
    trunk = nn.Sequential(conv, nn.LayerNorm([2, 1, 1]), nn.ReLU(), nn.Flatten(), linear, nn.ReLU())
    with torch.no_grad():
        conv.weight[:] = torch.tensor([1.0, -3.0]).view(2, 1, 1, 1)
        conv.bias[:] = torch.tensor([0.0, 2.0])
        linear.weight[:] = torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 0.0]])
        linear.bias[:] = torch.tensor([-6.0, 0.0, 0.0])
    assert [n for n, _ in trunk_layers(trunk)] == ["conv1", "fc1"]
    # conv: |1| + |-3| + |0| + |2| over 4; linear: (1 + 1 + 2) + 6 over 9 (LayerNorm is not a layer here)
    assert weight_magnitude(trunk) == pytest.approx({"conv1": 6 / 4, "fc1": 10 / 9})


def test_grad_norms_per_layer_and_their_mean_over_minibatches():
    trunk = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1), nn.ReLU())
    first, second = trunk[0], trunk[2]
    meter = GradNormMeter(trunk)
    assert meter.result() == {}
    first.weight.grad = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    first.bias.grad = torch.tensor([0.0, 4.0])
    second.weight.grad = torch.tensor([[1.0, 1.0]])
    second.bias.grad = None  # no gradient counts as zero
    assert grad_norms(trunk) == pytest.approx({"fc1": 5.0, "fc2": math.sqrt(2)})
    meter.add()
    first.weight.grad = torch.zeros(2, 2)
    first.bias.grad = torch.tensor([1.0, 0.0])
    second.weight.grad = torch.tensor([[0.0, 0.0]])
    second.bias.grad = torch.tensor([2.0])
    meter.add()
    assert meter.result() == pytest.approx({"fc1": (5.0 + 1.0) / 2, "fc2": (math.sqrt(2) + 2.0) / 2})
    meter.reset()
    assert meter.result() == {}


def test_plasticity_metrics_flat_keys():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU())
    metrics = plasticity_metrics(trunk, [torch.randn(20, 2, 6, 6)], {"conv1": 0.5, "fc1": 0.25})
    assert set(metrics) == {"dormant_fraction", "srank", "weight_magnitude/conv1", "weight_magnitude/fc1",
                            "grad_norm/conv1", "grad_norm/fc1"}
    assert 1 <= metrics["srank"] <= 5 and 0 <= metrics["dormant_fraction"] <= 1
    assert "grad_norm/fc1" not in plasticity_metrics(trunk, [torch.randn(20, 2, 6, 6)])


# ---------------------------------------------------------------------------------------------
# the agent: TensorBoard at every evaluation, results.json at each game's end
# ---------------------------------------------------------------------------------------------
TINY = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--steps-per-game", "256", "--num-envs", "4",
        "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2", "--eval-episodes", "2",
        "--random-episodes", "2", "--eval-envs", "2", "--eval-max-frames", "100", "--importance-obs", "64",
        "--importance-batch", "32", "--seed", "5", "--torch-threads", "1", "--eval-every", "128",
        "--checkpoint-every", "0"]


@pytest.mark.parametrize("extra, layers", [
    (["--method", "finetune"], ["conv1", "fc1"]),
    (["--method", "packnet", "--activation", "crelu", "--layer-norm", "--channels", "8", "8", "--hidden", "32"],
     ["conv1", "conv2", "fc1"]),
])
def test_a_short_minatar_run_logs_plasticity_tags_at_every_evaluation(tmp_path, extra, layers):
    pytest.importorskip("minatar", reason='the MinAtar suite needs pip install -e ".[minatar]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agents import ppo_continual
    from reporting import aggregate
    from reporting.results import load_results

    assert ppo_continual.main([*TINY, *extra, "--runs-dir", str(tmp_path), "--run-name", "r"]) == 0
    run = tmp_path / "r"
    results = load_results(str(run))
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    tags = [t for t in acc.Tags()["scalars"] if t.startswith("plasticity/")]
    expected = ["dormant_fraction", "srank", *(f"weight_magnitude/{n}" for n in layers), *(f"grad_norm/{n}" for n in layers)]
    assert sorted(tags) == sorted(f"plasticity/{k}" for k in expected)
    evaluations = [e["global_step"] for e in results["timeline"]]
    assert evaluations == [128, 256, 384, 512]  # mid-game and end of game, both games
    for tag in tags:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == evaluations, tag
        assert all(math.isfinite(e.value) for e in events)
    assert all(e.value > 0 for t in tags if "/grad_norm/" in t or "weight_magnitude" in t for e in acc.Scalars(t))
    for g, entry in enumerate(results["regularizer"]):  # each game's end, as at its boundary evaluation
        assert entry["game"] == g and set(expected) <= set(entry)
        at_end = {k: [e.value for e in acc.Scalars(f"plasticity/{k}") if e.step == entry["global_step"]][0] for k in expected}
        assert at_end == pytest.approx({k: entry[k] for k in expected}, rel=1e-6)
        assert 1 <= entry["srank"] <= (64 if "crelu" in extra else 128)
    record = aggregate.read_run(str(run))
    assert aggregate.layer_keys([record.regularizer]) == [*(f"weight_magnitude/{n}" for n in layers),
                                                          *(f"grad_norm/{n}" for n in layers)]
