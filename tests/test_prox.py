"""The proximal operators against an independent numerical minimization of their objective."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from agscl import drift_shrink, group_soft_threshold


def _numeric_prox(v: np.ndarray, anchor: np.ndarray, tau: float) -> np.ndarray:
    """argmin_x tau*||x - anchor|| + 0.5*||x - v||^2 by derivative-free search (Powell)."""
    objective = lambda x: tau * np.linalg.norm(x - anchor) + 0.5 * np.sum((x - v) ** 2)
    best = None
    for start in (v, anchor, 0.5 * (v + anchor)):
        res = minimize(objective, start, method="Powell", options={"xtol": 1e-12, "ftol": 1e-15, "maxiter": 200000})
        if best is None or res.fun < best.fun:
            best = res
    return best.x


def _check_against_numeric(result: np.ndarray, v: np.ndarray, anchor: np.ndarray, tau: float) -> None:
    objective = lambda x: tau * np.linalg.norm(x - anchor) + 0.5 * np.sum((x - v) ** 2)
    numeric = _numeric_prox(v, anchor, tau)
    f_ours, f_num = objective(result), objective(numeric)
    # Ours is at least as good as the numerical minimizer ...
    assert f_ours <= f_num + 1e-9
    # ... and, the objective being 1-strongly convex, the numerical point is within
    # sqrt(2 * gap) of the true minimizer, so ours must be that close to it too.
    assert np.linalg.norm(result - numeric) <= np.sqrt(2 * max(f_num - f_ours, 0.0)) + 1e-4


rows = st.integers(min_value=1, max_value=4)
dims = st.integers(min_value=1, max_value=5)


@settings(max_examples=25, deadline=None)
@given(n=rows, d=dims, seed=st.integers(0, 10_000), scale=st.sampled_from([0.0, 0.3, 1.0, 3.0]))
def test_soft_threshold_matches_numeric_minimization(n, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, d, generator=g, dtype=torch.float64)
    tau = scale * torch.rand(n, generator=g, dtype=torch.float64) * 2
    out = group_soft_threshold(theta, tau)
    for i in range(n):
        _check_against_numeric(out[i].numpy(), theta[i].numpy(), np.zeros(d), float(tau[i]))


@settings(max_examples=25, deadline=None)
@given(n=rows, d=dims, seed=st.integers(0, 10_000), scale=st.sampled_from([0.0, 0.3, 1.0, 3.0]))
def test_drift_shrink_matches_numeric_minimization(n, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, d, generator=g, dtype=torch.float64)
    anchor = torch.randn(n, d, generator=g, dtype=torch.float64)
    tau = scale * torch.rand(n, generator=g, dtype=torch.float64) * 2
    out = drift_shrink(theta, anchor, tau)
    for i in range(n):
        _check_against_numeric(out[i].numpy(), theta[i].numpy(), anchor[i].numpy(), float(tau[i]))


def test_threshold_boundary_is_exact_zero_and_exact_anchor():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(6, 7, generator=g)
    anchor = torch.randn(6, 7, generator=g)
    norm = torch.linalg.vector_norm(theta, dim=1)
    drift = torch.linalg.vector_norm(theta - anchor, dim=1)
    # Rows 0-1 exactly at the threshold, 2-3 just below (sparsify/freeze), 4-5 just above.
    factors = torch.tensor([1.0, 1.0, 1.0 + 1e-6, 1.0 + 1e-3, 1.0 - 1e-6, 1.0 - 1e-3])
    soft = group_soft_threshold(theta, norm * factors)
    shrunk = drift_shrink(theta, anchor, drift * factors)
    assert torch.equal(soft[:4], torch.zeros(4, 7))
    assert torch.equal(shrunk[:4], anchor[:4])
    assert (torch.linalg.vector_norm(soft[4:], dim=1) > 0).all()
    assert not torch.equal(shrunk[4:], anchor[4:])
    # Just above the threshold the group keeps its direction with norm ||v|| - tau.
    torch.testing.assert_close(torch.linalg.vector_norm(soft[4:], dim=1), norm[4:] * (1 - factors[4:]), rtol=1e-3, atol=1e-7)


def test_zero_groups_give_no_nan():
    theta = torch.zeros(3, 4)
    theta[2] = 1.0
    for tau in (0.0, 0.5, torch.tensor([0.0, 1.0, 0.0])):
        out = group_soft_threshold(theta, tau)
        assert not torch.isnan(out).any()
        assert torch.equal(out[:2], torch.zeros(2, 4))
    anchor = theta.clone()
    for tau in (0.0, 0.5):
        out = drift_shrink(theta, anchor, tau)
        assert not torch.isnan(out).any()
        assert torch.equal(out, anchor)


def test_zero_tau_is_identity_and_scalar_equals_per_row():
    theta = torch.randn(5, 3)
    anchor = torch.randn(5, 3)
    assert torch.equal(group_soft_threshold(theta, 0.0), theta)
    assert torch.equal(drift_shrink(theta, anchor, 0.0), theta)
    assert torch.equal(group_soft_threshold(theta, 0.7), group_soft_threshold(theta, torch.full((5,), 0.7)))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="one value per row"):
        group_soft_threshold(torch.randn(3, 2), torch.ones(4))
    with pytest.raises(ValueError, match="2-D"):
        group_soft_threshold(torch.randn(3), 0.1)
    with pytest.raises(ValueError, match="equal shape"):
        drift_shrink(torch.randn(3, 2), torch.randn(3, 3), 0.1)
