"""Tests of the weight-wise baselines: EWC, online EWC, MAS, SI, RWALK.

Importances are checked against independent per-sample autograd loops or closed forms,
penalties against hand computations from the stored state, and the behaviour on a tiny
generated two-task problem against fine-tuning in the same run.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import agscl._weightwise as weightwise
from agscl.base import FineTune
from agscl.ewc import EWC
from agscl.mas import MAS
from agscl.registry import make_method
from agscl.si import RWALK, SI

BASELINES = ("ewc", "online_ewc", "mas", "si", "rwalk")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0, heads: int = 2) -> tuple[nn.Module, nn.ModuleList]:
    """MLP trunk with dropout (to check that importances are taken in eval mode) + linear heads."""
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 5), nn.ReLU())
    return trunk, nn.ModuleList([nn.Linear(5, 3) for _ in range(heads)])


def importance(method, key: int = 0) -> list[torch.Tensor]:
    state = method.state_dict()
    record = next(r for r in state["terms"] if r["key"] == key)
    return [record["importance"][n] for n in method.names]


def anchor(method, key: int = 0) -> list[torch.Tensor]:
    state = method.state_dict()
    record = next(r for r in state["terms"] if r["key"] == key)
    return [record["anchor"][n] for n in method.names]


def trunk_params(trunk: nn.Module) -> list[torch.Tensor]:
    return [p for p in trunk.parameters() if p.requires_grad]


def loop_fisher(trunk, head, batches, samples: int) -> list[torch.Tensor]:
    """Independent reference: one autograd call per (input, sampled label); same label draws
    as the implementation (one multinomial call per batch on the eval-mode softmax)."""
    params = trunk_params(trunk)
    sums = [torch.zeros_like(p) for p in params]
    count = 0
    trunk.eval()
    head.eval()
    for x in batches:
        with torch.no_grad():
            probs = F.softmax(head(trunk(x)), dim=1)
        labels = torch.multinomial(probs, samples, replacement=True)
        for i in range(x.shape[0]):
            for k in range(samples):
                logp = F.log_softmax(head(trunk(x[i : i + 1])), dim=1)[0, labels[i, k]]
                grads = torch.autograd.grad(logp, params)
                for s, g in zip(sums, grads):
                    s += g**2
                count += 1
    return [s / count for s in sums]


def loop_mas(trunk, head, batches) -> list[torch.Tensor]:
    params = trunk_params(trunk)
    sums = [torch.zeros_like(p) for p in params]
    count = 0
    trunk.eval()
    head.eval()
    for x in batches:
        for i in range(x.shape[0]):
            out = head(trunk(x[i : i + 1]))
            grads = torch.autograd.grad((out**2).sum(), params)
            for s, g in zip(sums, grads):
                s += g.abs()
            count += 1
    return [s / count for s in sums]


def assert_lists_close(a, b, rtol=1e-5, atol=1e-7):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


# -- importances against per-sample loops ------------------------------------------------------


def test_fisher_matches_per_sample_loop(monkeypatch):
    trunk, heads = tiny_model()
    # chunks of 4 per-sample gradients: exercises the chunked vmap path, including a ragged last chunk
    numel = sum(p.numel() for p in trunk_params(trunk))
    monkeypatch.setattr(weightwise, "PER_SAMPLE_FLOATS", 4 * numel)
    gen = torch.Generator().manual_seed(5)
    b1, b2 = torch.randn(7, 4, generator=gen), torch.randn(5, 4, generator=gen)
    trunk.train()
    heads.train()
    method = EWC(trunk, heads, lam=1.0, fisher_samples=3)
    torch.manual_seed(123)
    method.end_task(1, [b1, (b2, torch.zeros(5))])  # tensors and (x, y) tuples, head of task 1
    # train/eval flags restored
    assert trunk.training and heads[1].training and trunk[2].training
    got = importance(method, key=1)

    torch.manual_seed(123)
    expected = loop_fisher(trunk, heads[1], [b1, b2], samples=3)
    assert all(e.abs().sum() > 0 for e in expected)
    assert_lists_close(got, expected)


def test_mas_matches_per_sample_loop_and_sums_over_tasks():
    trunk, heads = tiny_model(seed=1)
    gen = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(9, 4, generator=gen), torch.randn(6, 4, generator=gen)
    trunk.train()
    method = MAS(trunk, heads, lam=1.0)
    method.end_task(0, [x0[:4], x0[4:]])
    assert trunk.training
    first = loop_mas(trunk, heads[0], [x0])
    assert_lists_close(importance(method), first)
    with torch.no_grad():  # the trunk moves before the second task ends
        for p in trunk.parameters():
            p.add_(0.1 * torch.randn_like(p))
    method.end_task(1, [x1])
    second = loop_mas(trunk, heads[1], [x1])
    assert_lists_close(importance(method), [a + b for a, b in zip(first, second)])
    assert_lists_close(anchor(method), [p.detach() for p in trunk_params(trunk)], rtol=0, atol=0)


def test_importance_needs_inputs():
    trunk, heads = tiny_model()
    for method in (EWC(trunk, heads, lam=1.0), MAS(trunk, heads, lam=1.0)):
        with pytest.raises(ValueError, match="no input samples"):
            method.end_task(0, [])


# -- penalties against hand computations ---------------------------------------------------------


def test_ewc_penalties_match_hand_computation():
    trunk, heads = tiny_model(seed=2)
    per = EWC(trunk, heads, lam=3.0)
    online = make_method("online_ewc", trunk, heads, lam=3.0, gamma=0.7)
    gen = torch.Generator().manual_seed(7)
    anchors = []

    def move():
        with torch.no_grad():
            for p in trunk.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=gen))

    assert per.penalty().item() == 0.0 and online.penalty().item() == 0.0
    for task in range(2):
        move()
        x = torch.randn(16, 4, generator=gen)
        torch.manual_seed(10 + task)
        per.end_task(task, [x])
        torch.manual_seed(10 + task)
        online.end_task(task, [x])
        anchors.append([p.detach().clone() for p in trunk_params(trunk)])
    move()

    f0, f1 = importance(per, 0), importance(per, 1)
    assert_lists_close(importance(online), [0.7 * a + b for a, b in zip(f0, f1)])
    assert_lists_close(anchor(online), anchors[1], rtol=0, atol=0)
    params = trunk_params(trunk)
    with torch.no_grad():
        hand_per = 1.5 * sum(((f * (p - a) ** 2).sum() for fs, anc in zip((f0, f1), anchors) for f, p, a in zip(fs, params, anc)))
        hand_online = 1.5 * sum(((0.7 * a0 + b1) * (p - a) ** 2).sum() for a0, b1, p, a in zip(f0, f1, params, anchors[1]))
    torch.testing.assert_close(per.penalty(), hand_per)
    torch.testing.assert_close(online.penalty(), hand_online)
    # gradient of the penalty: lam * sum_t F_t (theta - theta*_t)
    grads = torch.autograd.grad(per.penalty(), params)
    hand_grads = [3.0 * (fa * (p - a0) + fb * (p - a1)) for fa, fb, p, a0, a1 in zip(f0, f1, params, *anchors)]
    assert_lists_close(list(grads), [g.detach() for g in hand_grads])

    n = sum(p.numel() for p in params)
    assert per.stored_floats() == 2 * n and per.statistics()["anchor_floats"] == 2 * n
    assert online.stored_floats() == n and online.statistics()["anchor_floats"] == n
    per.end_task(1, [torch.randn(4, 4)])  # re-learning a task replaces its pair
    assert per.stored_floats() == 2 * n


@pytest.mark.parametrize("name", ("ewc", "online_ewc", "mas"))
def test_fused_penalty_gradient_equals_autograd_of_the_penalty(name):
    """``add_penalty_grad`` after ``backward`` of the task loss gives the same ``.grad`` (and
    penalty value) as ``backward`` of task loss + ``penalty()``; it adds to gradients already
    there and creates those that are missing."""
    trunk, heads = tiny_model(seed=3)
    method = make_method(name, trunk, heads, lam=2.5)
    gen = torch.Generator().manual_seed(5)
    for task in range(2):
        with torch.no_grad():
            for p in trunk.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
        torch.manual_seed(task)
        method.end_task(task, [torch.randn(16, 4, generator=gen)])
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    x = torch.randn(8, 4, generator=gen)
    params = trunk_params(trunk)

    def task_loss() -> torch.Tensor:
        return heads[1](trunk.eval()(x)).square().mean()

    reference = torch.autograd.grad(task_loss() + method.penalty(), params)
    expected_value = method.penalty().detach()
    for p in params:
        p.grad = None
    task_loss().backward()
    params[0].grad = None  # a parameter without a gradient yet gets the penalty's alone
    value = method.add_penalty_grad()
    assert method.fused_penalty
    torch.testing.assert_close(value, expected_value)
    assert value.item() > 0 and not value.requires_grad
    assert_lists_close([p.grad for p in params[1:]], [g for g in reference[1:]])
    penalty_only = torch.autograd.grad(method.penalty(), params[0])[0]
    torch.testing.assert_close(params[0].grad, penalty_only)


def test_methods_without_a_fused_penalty_say_so():
    trunk, heads = tiny_model()
    for method in (SI(trunk, heads, lam=1.0), RWALK(trunk, heads, lam=1.0), FineTune(trunk, heads)):
        assert not method.fused_penalty
        with pytest.raises(NotImplementedError, match="penalty"):
            method.add_penalty_grad()


# -- path integrals ------------------------------------------------------------------------------


class Vector(nn.Module):
    """A trunk that is one parameter vector: lets tests drive exact quadratics."""

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(init.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.theta


def run_quadratic(method, theta: nn.Parameter, h: torch.Tensor, c: torch.Tensor, lr: float, steps: int) -> None:
    opt = torch.optim.SGD([theta], lr=lr)
    for _ in range(steps):
        loss = 0.5 * (h * (theta - c) ** 2).sum() + method.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(lr)


def si_closed_form(h, r0, lr, steps, xi):
    """SGD on 0.5*h*r^2: r_k = q^k r0 with q = 1 - lr*h. The path integral sum_k lr*g_k^2 equals
    the loss decrease divided by (1 - lr*h/2); Delta = r_K - r0."""
    q = 1 - lr * h
    rk = q**steps * r0
    w = 0.5 * h * (r0**2 - rk**2) / (1 - lr * h / 2)
    return w / ((rk - r0) ** 2 + xi), rk


def test_si_path_integral_matches_quadratic_closed_form():
    h = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    c1 = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    c2 = np.array([-1.0, 1.0, 2.0, -0.5, 0.0])
    theta0 = np.array([0.3, 0.1, -0.4, 0.2, 0.7])
    lr, steps, xi = 0.05, 40, 0.3
    trunk = Vector(torch.tensor(theta0, dtype=torch.float64))
    method = SI(trunk, [nn.Identity()], lam=0.0, xi=xi)  # lam=0: gradients are the quadratic's alone
    ht = torch.tensor(h)

    method.begin_task(0)
    run_quadratic(method, trunk.theta, ht, torch.tensor(c1), lr, steps)
    method.end_task(0, [])
    omega1, rk = si_closed_form(h, theta0 - c1, lr, steps, xi)
    np.testing.assert_allclose(importance(method)[0].double().numpy(), omega1, rtol=1e-5)
    np.testing.assert_allclose(anchor(method)[0].numpy(), c1 + rk, rtol=1e-6)

    method.begin_task(1)  # a second task: contributions add up
    run_quadratic(method, trunk.theta, ht, torch.tensor(c2), lr, steps)
    method.end_task(1, [])
    omega2, _ = si_closed_form(h, c1 + rk - c2, lr, steps, xi)
    np.testing.assert_allclose(importance(method)[0].double().numpy(), omega1 + omega2, rtol=1e-5)


def test_si_penalty_and_lam_convention():
    trunk = Vector(torch.zeros(3))
    method = SI(trunk, [nn.Identity()], lam=4.0, xi=0.5)
    method.begin_task(0)
    assert method.penalty().item() == 0.0
    run_quadratic(method, trunk.theta, torch.ones(3), torch.tensor([1.0, 2.0, 3.0]), 0.1, 5)
    method.end_task(0, [])
    omega, a = importance(method)[0], anchor(method)[0]
    with torch.no_grad():
        trunk.theta.add_(torch.tensor([0.5, -1.0, 2.0]))
    torch.testing.assert_close(method.penalty(), 2.0 * (omega * (trunk.theta.detach() - a) ** 2).sum())


def test_rwalk_scores_match_hand_computation():
    """Drive RWALK with chosen gradients and steps; reference in float64 numpy: the newest
    squared gradient weighs alpha, only the normalized score is averaged over tasks and the
    Fisher term is the running Fisher at the end of each task, normalized."""
    rng = np.random.default_rng(0)
    alpha, eps, lam, n = 0.8, 1e-3, 0.0, 6
    trunk = Vector(torch.zeros(n, dtype=torch.float64))
    method = RWALK(trunk, [nn.Identity()], lam=lam, alpha=alpha, eps=eps)
    theta = np.zeros(n)
    fisher = np.zeros(n)
    avg_score = None
    saw_negative = False
    for task in range(3):
        method.begin_task(task)
        score = np.zeros(n)
        for _ in range(7):
            g = rng.normal(size=n) * (task + 1) ** 2  # scales differ per task: averaging the sum would differ
            delta = rng.normal(scale=0.3, size=n)  # not aligned with -g: some negative contributions
            trunk.theta.grad = torch.tensor(g)
            with torch.no_grad():
                trunk.theta.add_(torch.tensor(delta))
            method.after_step(0.1)
            fisher = alpha * g**2 + (1 - alpha) * fisher
            score += -g * delta / (0.5 * fisher * delta**2 + eps)
            theta = theta + delta
        saw_negative |= bool((score < 0).any())
        method.end_task(task, [])
        pos = np.maximum(score, 0)
        avg_score = pos / pos.max() if avg_score is None else (avg_score + pos / pos.max()) / 2
        np.testing.assert_allclose(importance(method)[0].numpy(), fisher / fisher.max() + avg_score, rtol=1e-6)
        np.testing.assert_allclose(anchor(method)[0].numpy(), theta, rtol=1e-12)
    assert saw_negative  # the clamp was exercised


def test_rwalk_fisher_gives_the_newest_squared_gradient_weight_alpha():
    """g^2 = 1, 0, 0 with alpha 0.9: Chaudhry et al.'s running Fisher is 0.9, 0.09, 0.009."""
    trunk = Vector(torch.zeros(1, dtype=torch.float64))
    method = RWALK(trunk, [nn.Identity()], lam=1.0)
    method.begin_task(0)
    seen = []
    for g in (1.0, 0.0, 0.0):
        trunk.theta.grad = torch.tensor([g], dtype=torch.float64)
        method.after_step(0.1)
        seen.append(method.state_dict()["_fisher"]["theta"].item())
    np.testing.assert_allclose(seen, [0.9, 0.09, 0.009], rtol=1e-12)


def test_path_integrals_use_the_task_loss_gradient_and_si_clips_at_zero():
    """Second task with the penalty on (lam > 0): the path integral takes the gradient of the
    task loss alone at the pre-step parameters, and SI's task importance is clipped at 0.
    Reference: SGD on task + penalty in float64 numpy, recomputed from the stored state."""
    h = np.array([1.0, 2.0, 0.5, 3.0])
    lr, lam, xi, eps, alpha, steps = 0.05, 3.0, 0.2, 1e-3, 0.9, 12
    for name in ("si", "rwalk"):
        trunk = Vector(torch.tensor([0.2, -0.3, 0.5, 0.1], dtype=torch.float64))
        method = SI(trunk, [nn.Identity()], lam=lam, xi=xi) if name == "si" else RWALK(trunk, [nn.Identity()], lam=lam, alpha=alpha, eps=eps)
        ht = torch.tensor(h)
        method.begin_task(0)
        run_quadratic(method, trunk.theta, ht, torch.tensor([1.0, -1.0, 2.0, 0.0], dtype=torch.float64), lr, 10)
        method.end_task(0, [])
        omega0, anchor0 = importance(method)[0].numpy().copy(), anchor(method)[0].numpy().copy()
        fisher = method.state_dict()["_fisher"]["theta"].numpy().copy() if name == "rwalk" else None
        # coordinate 3 starts task 2 at its task optimum, 1 away from the anchor: the penalty
        # pulls it back, raising the task loss, so its task-loss path integral is negative
        with torch.no_grad():
            trunk.theta[3] += 1.0
        theta = trunk.theta.detach().numpy().copy()
        c2 = np.array([-1.0, 2.0, 0.0, theta[3]])
        method.begin_task(1)
        start, w, score = theta.copy(), np.zeros(4), np.zeros(4)
        opt = torch.optim.SGD([trunk.theta], lr=lr, momentum=0.9)
        velocity = np.zeros(4)
        for _ in range(steps):
            loss = 0.5 * (ht * (trunk.theta - torch.tensor(c2)) ** 2).sum() + method.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.after_step(lr)
            g_task = h * (theta - c2)
            velocity = 0.9 * velocity + g_task + lam * omega0 * (theta - anchor0)
            delta = -lr * velocity
            w += -g_task * delta
            if name == "rwalk":
                fisher = alpha * g_task**2 + (1 - alpha) * fisher
                score += -g_task * delta / (0.5 * fisher * delta**2 + eps)
            theta = theta + delta
        np.testing.assert_allclose(trunk.theta.detach().numpy(), theta, rtol=1e-10)
        saved = method.state_dict()
        method.end_task(1, [])
        if name == "si":
            assert (w < 0).any() and (w > 0).any()  # the clip is exercised
            expected = omega0 + np.maximum(w, 0) / ((theta - start) ** 2 + xi)
            np.testing.assert_allclose(importance(method)[0].numpy(), expected, rtol=1e-9)
        else:
            np.testing.assert_allclose(saved["_score"]["theta"].numpy(), score, rtol=1e-9)
            np.testing.assert_allclose(saved["_fisher"]["theta"].numpy(), fisher, rtol=1e-9)


# -- behaviour on a generated two-task problem ---------------------------------------------------

BEHAVIOUR_LAM = {"ewc": 1e4, "online_ewc": 1e4, "mas": 100.0, "si": 100.0, "rwalk": 100.0}


def two_task_run(name: str) -> tuple[float, float]:
    """Two linearly separable Gaussian tasks along orthogonal directions; returns (mean absolute
    drift of task-1 logits on task-1 probes while task 2 is learned, task-2 test accuracy)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)

    def data(axis: int, n: int):
        y = torch.randint(0, 2, (n,), generator=gen)
        x = torch.randn(n, 8, generator=gen)
        x[:, axis] += 1.5 * (2 * y - 1).float()
        return x, y

    tasks = [data(0, 512), data(1, 512)]
    probe, _ = data(0, 256)
    test_x, test_y = data(1, 512)
    trunk = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(32, 2) for _ in range(2)])
    method = make_method(name, trunk, heads) if name == "finetune" else make_method(name, trunk, heads, lam=BEHAVIOUR_LAM[name])
    for task, (x, y) in enumerate(tasks):
        opt = torch.optim.Adam(list(trunk.parameters()) + list(heads[task].parameters()), lr=0.01)
        method.begin_task(task)
        for _ in range(150):
            idx = torch.randint(0, x.shape[0], (64,), generator=gen)
            loss = F.cross_entropy(heads[task](trunk(x[idx])), y[idx]) + method.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.after_step(0.01)
        if task == 0:
            with torch.no_grad():
                before = heads[0](trunk(probe))
        method.end_task(task, [x[:256], x[256:]])
    with torch.no_grad():
        drift = (heads[0](trunk(probe)) - before).abs().mean().item()
        accuracy = (heads[1](trunk(test_x)).argmax(1) == test_y).float().mean().item()
    return drift, accuracy


@pytest.fixture(scope="module")
def finetune_run() -> tuple[float, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return two_task_run("finetune")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", BASELINES)
def test_large_lambda_protects_task_one(name, finetune_run):
    ft_drift, ft_accuracy = finetune_run
    drift, accuracy = two_task_run(name)
    assert ft_accuracy > 0.8 and ft_drift > 0.5  # the problem does make fine-tuning forget
    assert drift < 0.15 * ft_drift, (drift, ft_drift)
    assert accuracy > 0.8  # chance is 0.5


# -- state_dict round trip -----------------------------------------------------------------------


def assert_same_state(a, b) -> None:
    """Recursive equality of two state dicts (tensors compared exactly)."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def train_steps(method, trunk, heads, opt, task, batches):
    penalties = []
    for x, y in batches:
        pen = method.penalty()
        loss = F.cross_entropy(heads[task](trunk(x)), y) + pen
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(0.01)
        penalties.append(pen.detach().clone())
    return penalties


@pytest.mark.parametrize("name", BASELINES)
def test_state_dict_round_trip_mid_sequence(name):
    hparams = {"lam": 5.0}
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)) for _ in range(30)]
    trunk, heads = tiny_model(seed=4, heads=3)
    method = make_method(name, trunk, heads, **hparams)
    opt = torch.optim.Adam(list(trunk.parameters()) + list(heads.parameters()), lr=0.01)
    method.begin_task(0)
    train_steps(method, trunk, heads, opt, 0, batches[:10])
    torch.manual_seed(0)
    method.end_task(0, [b[0] for b in batches[:4]])
    method.begin_task(1)
    train_steps(method, trunk, heads, opt, 1, batches[10:15])  # mid-task: path integrals running

    saved = method.state_dict()
    stats = method.statistics()
    pristine = copy.deepcopy(saved)
    buffer = io.BytesIO()
    torch.save(saved, buffer)  # serializable
    trunk2, heads2 = copy.deepcopy(trunk), copy.deepcopy(heads)
    opt2 = torch.optim.Adam(list(trunk2.parameters()) + list(heads2.parameters()), lr=0.01)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))

    def finish(m, t, h, o):
        torch.manual_seed(42)  # dropout masks and Fisher labels
        penalties = train_steps(m, t, h, o, 1, batches[15:25])
        m.end_task(1, [b[0] for b in batches[20:24]])
        m.begin_task(2)
        penalties += train_steps(m, t, h, o, 2, batches[25:30])
        return penalties, [p.detach().clone() for p in trunk_params(t)], importance(m)

    # original continues first: a state_dict sharing storage with it would be corrupted here
    reference = finish(method, trunk, heads, opt)
    restored = make_method(name, trunk2, heads2, **hparams)
    restored.load_state_dict(saved)
    assert restored.statistics() == stats
    result = finish(restored, trunk2, heads2, opt2)
    assert len(reference[0]) == len(result[0]) == 15
    for a, b in zip(reference[0], result[0]):
        assert torch.equal(a, b)
    assert reference[0][-1] > 0
    for a, b in zip(reference[1] + reference[2], result[1] + result[2]):
        assert torch.equal(a, b)
    # loading cloned the tensors: the saved state was not touched by the restored run
    assert_same_state(saved, pristine)
    buffer.seek(0)
    loaded = torch.load(buffer)
    again = make_method(name, *tiny_model(seed=9), **hparams)
    again.load_state_dict(loaded)
    assert again.tasks_learned == 1 and again.task == 1


def test_state_of_another_method_is_rejected():
    trunk, heads = tiny_model()
    state = make_method("ewc", trunk, heads, lam=1.0).state_dict()
    with pytest.raises(ValueError, match="online_ewc"):
        make_method("online_ewc", trunk, heads, lam=1.0).load_state_dict(state)
    mas = MAS(trunk, heads, lam=1.0)
    mas.end_task(0, [torch.randn(3, 4)])
    wider = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Dropout(0.5), nn.Linear(7, 5), nn.ReLU())
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(6, 4\), the trunk has \(7, 4\)"):
        MAS(wider, heads, lam=1.0).load_state_dict(mas.state_dict())
    shallow = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    with pytest.raises(ValueError, match=r"unknown parameters \['3.bias', '3.weight'\]"):
        MAS(shallow, heads, lam=1.0).load_state_dict(mas.state_dict())


# -- hyperparameter validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hparams, message",
    [
        ("ewc", {"lam": -1}, "lam=-1 is out of range: allowed lam in [0, inf)"),
        ("ewc", {"lam": float("nan")}, "lam=nan is out of range: allowed lam in [0, inf)"),
        ("ewc", {"lam": float("inf")}, "lam=inf is out of range: allowed lam in [0, inf)"),
        ("ewc", {"lam": "big"}, "lam='big' is not a number"),
        ("ewc", {"lam": 1.0, "fisher_samples": 0}, "fisher_samples=0 is out of range: allowed fisher_samples an integer >= 1"),
        ("ewc", {"lam": 1.0, "fisher_samples": 2.5}, "fisher_samples=2.5 is out of range"),
        ("ewc", {"lam": 1.0, "online": "yes"}, "online='yes' is out of range"),
        ("online_ewc", {"lam": 1.0, "gamma": 1.5}, "gamma=1.5 is out of range: allowed gamma in [0, 1]"),
        ("online_ewc", {"lam": 1.0, "gamma": -0.1}, "gamma=-0.1 is out of range: allowed gamma in [0, 1]"),
        ("mas", {"lam": -0.5}, "lam=-0.5 is out of range: allowed lam in [0, inf)"),
        ("si", {"lam": 1.0, "xi": 0}, "xi=0 is out of range: allowed xi in (0, inf)"),
        ("si", {"lam": 1.0, "xi": -2.0}, "xi=-2.0 is out of range: allowed xi in (0, inf)"),
        ("rwalk", {"lam": 1.0, "alpha": 0.0}, "alpha=0.0 is out of range: allowed alpha in (0, 1]"),
        ("rwalk", {"lam": 1.0, "alpha": 1.5}, "alpha=1.5 is out of range: allowed alpha in (0, 1]"),
        ("rwalk", {"lam": 1.0, "eps": 0.0}, "eps=0.0 is out of range: allowed eps in (0, inf)"),
    ],
)
def test_bad_hyperparameters_raise(name, hparams, message):
    trunk, heads = tiny_model()
    with pytest.raises(ValueError) as info:
        make_method(name, trunk, heads, **hparams)
    assert message in str(info.value)


# -- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, cls", [("ewc", EWC), ("online_ewc", EWC), ("mas", MAS), ("si", SI), ("rwalk", RWALK)]
)
def test_registry_builds_every_baseline(name, cls):
    trunk, heads = tiny_model()
    method = make_method(name, trunk, heads, lam=2.0)
    assert type(method) is cls and method.name == name and method.lam == 2.0
    if cls is EWC:
        assert method.online == (name == "online_ewc")
    pen = method.penalty()
    assert pen.dim() == 0 and pen.item() == 0.0 and pen.device == next(trunk.parameters()).device
    assert method.stored_floats() == 0 and method.statistics() == {"stored_floats": 0.0, "anchor_floats": 0.0}
    assert method.state_dict()["name"] == name
    # one full task through the protocol gives a differentiable, non-negative penalty
    opt = torch.optim.SGD(list(trunk.parameters()) + list(heads.parameters()), lr=0.05)
    method.begin_task(0)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(5)]
    train_steps(method, trunk, heads, opt, 0, batches)
    method.end_task(0, batches)
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(0.1)
    pen = method.penalty()
    assert pen.requires_grad and pen.item() > 0
    n = sum(p.numel() for p in trunk_params(trunk))
    assert method.stored_floats() == n and method.statistics()["anchor_floats"] == n
    assert isinstance(make_method("finetune", trunk, heads), FineTune)
