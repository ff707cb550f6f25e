"""The plasticity methods (agscl/redo.py, agscl/shrink_perturb.py, agscl/l2init.py) and their
composition with a stability method (agscl/compose.py).

Each mechanic is checked against an independent computation: ReDo's scores by a hand forward
pass, its recycle by the network with the recycled units' outgoing weights zeroed, its optimizer
reset by the moments saved before; shrink-and-perturb by its formula with a constant
initializer; L2 Init's gradient by the closed form and by autograd. The composition rule is
checked weight by weight: what AGS-CL or PackNet protects is bit-equal after every plasticity
operation, and so are an earlier task's outputs.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agscl.registry import make_method, method_class, method_hparams, method_names
from resume_helpers import restore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mlp(seed: int = 0, tasks: int = 2) -> tuple[nn.Sequential, nn.ModuleList]:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU())
    heads = nn.ModuleList(nn.ModuleList([nn.Linear(8, 3), nn.Linear(8, 1)]) for _ in range(tasks))
    return trunk, heads


def conv(seed: int = 0) -> tuple[nn.Sequential, nn.ModuleList]:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU())
    return trunk, nn.ModuleList([nn.Linear(8, 3)])


def outputs(trunk: nn.Module, heads: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        h = trunk(x)
        return [head(h) for spec in heads for head in (spec if isinstance(spec, nn.ModuleList) else [spec])]


def kill(layer: nn.Linear, units: list[int]) -> None:
    """Units whose ReLU never fires on inputs of moderate size (a large negative bias)."""
    with torch.no_grad():
        layer.bias[units] = -100.0


def adam_with_moments(trunk: nn.Module, heads: nn.ModuleList, x: torch.Tensor) -> torch.optim.Adam:
    """An Adam over everything, after a few steps so that its moments are nonzero."""
    opt = torch.optim.Adam(list(trunk.parameters()) + list(heads.parameters()), lr=1e-3)
    for _ in range(3):
        loss = sum(o.square().mean() for o in _forward(trunk, heads, x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def _forward(trunk, heads, x):
    h = trunk(x)
    return [head(h) for spec in heads for head in spec]


def half(module: nn.Module) -> None:
    """A constant initializer: every weight 0.5, every bias 0.25 (so a re-draw is recognizable)."""
    nn.init.constant_(module.weight, 0.5)
    nn.init.constant_(module.bias, 0.25)


# -- ReDo ------------------------------------------------------------------------------------------
def test_redo_scores_units_as_mean_abs_activation_over_the_layer_mean():
    trunk, heads = conv()
    method = make_method("redo", trunk, heads, redo_interval=1, redo_tau=0.3, seed=0)
    method.begin_task(0)
    x = torch.randn(5, 2, 6, 6)
    trunk(x)
    # by hand: conv units are channels, averaged over batch and positions
    conv_out = F.relu(F.conv2d(x, trunk[0].weight, trunk[0].bias))
    fc_out = F.relu(conv_out.flatten(1) @ trunk[3].weight.T + trunk[3].bias)
    for means, act in zip(method._means, (conv_out.mean(dim=(0, 2, 3)), fc_out.mean(dim=0))):
        assert torch.allclose(means, act.detach(), atol=1e-6)
    expected = [(a / a.mean() <= 0.3) for a in (conv_out.mean(dim=(0, 2, 3)), fc_out.mean(dim=0))]
    assert [d.tolist() for d in method.dormant()] == [e.tolist() for e in expected]


def test_a_silent_layer_scores_every_unit_dormant_without_nan():
    from agscl.redo import scores

    assert scores(torch.zeros(4)).tolist() == [0.0] * 4
    assert scores(torch.tensor([0.0, 1.0, 3.0])).tolist() == pytest.approx([0.0, 0.75, 2.25])


def test_redo_recycle_keeps_outputs_redraws_incoming_and_zeroes_outgoing_and_moments():
    trunk, heads = mlp()
    x = torch.randn(32, 6)
    kill(trunk[0], [2, 5])
    kill(trunk[2], [1])
    opt = adam_with_moments(trunk, heads, x)
    before = copy.deepcopy((trunk, heads))
    moments = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in opt.state}
    # by hand: the units silent on the whole batch (tau 0: score exactly 0)
    with torch.no_grad():
        h1 = F.relu(x @ trunk[0].weight.T + trunk[0].bias)
        h2 = F.relu(h1 @ trunk[2].weight.T + trunk[2].bias)
    dead1, dead2 = (h1.sum(0) == 0).nonzero().flatten().tolist(), (h2.sum(0) == 0).nonzero().flatten().tolist()
    assert {2, 5} <= set(dead1) and 1 in dead2
    out_before = outputs(trunk, heads, x)

    method = make_method("redo", trunk, heads, redo_interval=2, redo_tau=0.0, seed=0, init_fn=half)
    method.attach_optimizer(opt)
    method.begin_task(0)
    trunk(x)
    method.after_step(1e-3)  # step 1: no check
    assert method.checks == 0
    trunk(x)
    method.after_step(1e-3)  # step 2: the check
    assert method.checks == 1 and method.recycled == len(dead1) + len(dead2)

    # the outputs on the scored batch are bit-equal: the silent units gave 0, their outgoing weights are 0 now
    for a, b in zip(out_before, outputs(trunk, heads, x)):
        assert torch.equal(a, b)
    # independently: the old network with those outgoing columns zeroed computes the same on any input
    old_trunk, old_heads = before
    with torch.no_grad():
        old_trunk[2].weight[:, dead1] = 0
        for spec in old_heads:
            for head in spec:
                head.weight[:, dead2] = 0
    wild = 100 * torch.randn(64, 6)  # large inputs fire the re-drawn units
    for a, b in zip(outputs(old_trunk, old_heads, wild), outputs(trunk, heads, wild)):
        assert torch.equal(a, b)
    # incoming rows re-drawn from init_fn (but for the columns of recycled units), other rows untouched;
    # every outgoing weight of a recycled unit exactly zero
    for layer, old, dead, zero_cols in ((trunk[0], before[0][0], dead1, []), (trunk[2], before[0][2], dead2, dead1)):
        keep = [i for i in range(layer.weight.shape[0]) if i not in dead]
        fresh = torch.full_like(layer.weight[dead], 0.5)
        fresh[:, zero_cols] = 0
        assert torch.equal(layer.weight[dead], fresh) and torch.all(layer.bias[dead] == 0.25)
        assert torch.equal(layer.weight[keep], old.weight[keep]) and torch.equal(layer.bias[keep], old.bias[keep])
    assert torch.all(trunk[2].weight[:, dead1] == 0)
    assert all(torch.all(head.weight[:, dead2] == 0) for spec in heads for head in spec)
    # the moments of exactly the changed weights are zero, every other moment is as it was
    for p, state in opt.state.items():
        changed = torch.zeros_like(p, dtype=torch.bool)
        if p is trunk[0].weight or p is trunk[0].bias:
            changed[dead1] = True
        elif p is trunk[2].weight:
            changed[dead2] = True
            changed[:, dead1] = True
        elif p is trunk[2].bias:
            changed[dead2] = True
        elif p.ndim == 2:  # a head's input layer
            changed[:, dead2] = True
        for key in ("exp_avg", "exp_avg_sq"):
            now, old = state[key], moments[p][key]
            assert torch.all(now[changed] == 0), (key, tuple(p.shape))
            assert torch.equal(now[~changed], old[~changed]), (key, tuple(p.shape))
        assert torch.equal(state["step"], moments[p]["step"])


def test_redo_default_initializer_redraws_within_its_bounds():
    trunk, heads = mlp()
    kill(trunk[0], [3])
    old = trunk[0].weight[3].clone()
    method = make_method("redo", trunk, heads, redo_interval=1, seed=0)
    method.begin_task(0)
    trunk(torch.randn(16, 6))
    method.after_step(0.0)
    assert not torch.equal(trunk[0].weight[3], old)
    assert trunk[0].weight[3].abs().max() <= 1 / 6**0.5  # PyTorch's Linear init: U(-1/sqrt(fan_in), ...)


def test_redo_draws_are_seeded_and_leave_the_global_generator_alone():
    def recycled(seed: int) -> torch.Tensor:
        trunk, heads = mlp()
        kill(trunk[0], [0, 4])
        method = make_method("redo", trunk, heads, redo_interval=1, seed=seed)
        method.begin_task(0)
        trunk(torch.ones(4, 6))
        state = torch.get_rng_state()
        method.after_step(0.0)
        assert torch.equal(torch.get_rng_state(), state)
        return trunk[0].weight[[0, 4]].detach().clone()

    assert torch.equal(recycled(3), recycled(3)) and not torch.equal(recycled(3), recycled(4))


def test_redo_checks_every_interval_and_a_resumed_task_keeps_its_count():
    trunk, heads = mlp()
    method = make_method("redo", trunk, heads, redo_interval=3, seed=0)
    method.begin_task(0)
    for _ in range(7):
        trunk(torch.randn(8, 6))
        method.after_step(0.0)
    assert method.checks == 2 and method.steps == 7
    state = method.state_dict()
    trunk2, heads2 = mlp()
    other = make_method("redo", trunk2, heads2, redo_interval=3, seed=0)
    other.load_state_dict(state)
    other.begin_task(0)  # a resumed run calls begin_task again
    for _ in range(2):
        trunk2(torch.randn(8, 6))
        other.after_step(0.0)
    assert other.checks == 3 and other.steps == 9
    other.end_task(0, [])
    other.begin_task(1)
    assert other.steps == 0


# -- shrink-and-perturb ----------------------------------------------------------------------------
def test_shrink_perturb_applies_its_formula_at_each_later_tasks_start_only():
    trunk, heads = mlp()
    method = make_method("shrink_perturb", trunk, heads, sp_shrink=0.7, sp_perturb=0.3, seed=1, init_fn=half)
    start = copy.deepcopy(trunk)
    method.begin_task(0)
    assert all(torch.equal(a, b) for a, b in zip(trunk.parameters(), start.parameters()))  # nothing learned yet
    method.end_task(0, [])
    heads_before = copy.deepcopy(heads)
    method.begin_task(1)
    for p, old in zip(trunk.parameters(), start.parameters()):
        fresh = 0.5 if p.ndim == 2 else 0.25
        assert torch.allclose(p, 0.7 * old + 0.3 * fresh, rtol=0, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(heads.parameters(), heads_before.parameters()))
    shrunk = copy.deepcopy(trunk)
    method.begin_task(1)  # a resumed run calls begin_task again: not shrunk twice
    assert all(torch.equal(a, b) for a, b in zip(trunk.parameters(), shrunk.parameters()))


def test_shrink_perturb_noise_comes_from_the_seeded_initializer():
    def run(seed: int) -> list[torch.Tensor]:
        trunk, heads = mlp()
        method = make_method("shrink_perturb", trunk, heads, sp_shrink=0.0, sp_perturb=1.0, seed=seed)
        method.tasks_learned = 1
        state = torch.get_rng_state()
        method.begin_task(1)
        assert torch.equal(torch.get_rng_state(), state)
        return [p.detach().clone() for p in trunk.parameters()]

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert a[0].abs().max() <= 1 / 6**0.5 and a[2].abs().max() <= 1 / 10**0.5  # fresh PyTorch Linear draws


# -- L2 Init ---------------------------------------------------------------------------------------
def test_l2init_gradient_is_lambda_times_distance_to_the_initial_weights():
    trunk, heads = mlp()
    method = make_method("l2init", trunk, heads, l2init_lambda=0.3)
    theta0 = [p.detach().clone() for p in trunk.parameters()]
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(torch.randn_like(p))
    expected = [0.3 * (p.detach() - p0) for p, p0 in zip(trunk.parameters(), theta0)]
    value = 0.15 * sum(float((p.detach() - p0).square().sum()) for p, p0 in zip(trunk.parameters(), theta0))
    penalty = method.penalty()
    assert float(penalty.detach()) == pytest.approx(value, rel=1e-6)
    grads = torch.autograd.grad(penalty, list(trunk.parameters()))
    fused = method.add_penalty_grad()  # from no .grad at all
    assert float(fused) == pytest.approx(value, rel=1e-6)
    for g, p, e in zip(grads, trunk.parameters(), expected):
        assert torch.allclose(g, e, atol=1e-6) and torch.allclose(p.grad, e, atol=1e-6)


def test_l2init_theta0_survives_a_state_round_trip():
    trunk, heads = mlp()
    method = make_method("l2init", trunk, heads, l2init_lambda=1.0)
    theta0 = [p.detach().clone() for p in trunk.parameters()]
    saved = copy.deepcopy(method.state_dict())
    trunk2, heads2 = mlp(seed=9)  # a resumed run's freshly built network is not the run's initial one
    resumed = make_method("l2init", trunk2, heads2, l2init_lambda=1.0)
    resumed.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(resumed.theta0, theta0))
    expected = 0.5 * sum(float((p.detach() - p0).square().sum()) for p, p0 in zip(trunk2.parameters(), theta0))
    assert float(resumed.penalty().detach()) == pytest.approx(expected, rel=1e-6)


# -- composition ------------------------------------------------------------------------------------
def test_compositions_are_named_a_plus_b_with_both_parts_flags():
    assert "agscl+redo" in method_names("rl", composites=True) and "agscl+redo" not in method_names("rl")
    assert "packnet+shrink_perturb" in method_names("supervised", composites=True)
    names = [h.name for h in method_hparams("agscl+redo")]
    assert names == [h.name for h in method_hparams("agscl")] + [h.name for h in method_hparams("redo")]
    assert method_class("packnet+l2init").learners == ("rl", "supervised")


@pytest.mark.parametrize("name, words", [
    ("ewc+redo", ["ewc has no notion of protected capacity", "agscl, packnet"]),
    ("mas+l2init", ["mas has no notion of protected capacity", "agscl, packnet"]),
    ("redo+agscl", ["stability method first", "agscl+redo"]),
    ("agscl+ewc", ["ewc is not a plasticity method", "redo, shrink_perturb, l2init"]),
])
def test_compositions_without_a_protecting_stability_method_are_refused_in_one_line(name, words):
    trunk, heads = mlp()
    with pytest.raises(ValueError) as info:
        make_method(name, trunk, heads, lam=1.0)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def learn(method, trunk, heads, task: int, x: torch.Tensor, steps: int = 12, lr: float = 0.02) -> torch.optim.Optimizer:
    """One task of a learner: Adam attached, train on a regression to a fixed random target."""
    target = torch.randn(x.shape[0], 3, generator=torch.Generator().manual_seed(task))
    method.begin_task(task)
    opt = torch.optim.Adam(list(trunk.parameters()) + list(heads[task].parameters()), lr=lr)
    method.attach_optimizer(opt)
    prune_at = steps - round(method.retrain_fraction * steps) + 1 if callable(getattr(method, "prune", None)) else None
    for step in range(1, steps + 1):
        if step == prune_at:
            method.prune(task)
            opt = torch.optim.Adam(list(trunk.parameters()) + list(heads[task].parameters()), lr=lr)
            method.attach_optimizer(opt)
        loss = F.mse_loss(heads[task][0](trunk(x)), target) + method.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(lr)
    method.end_epoch(lr)
    method.end_task(task, [x])
    return opt


def test_agscl_redo_never_recycles_important_or_lasso_emptied_nodes():
    trunk, heads = mlp()
    x0, x1 = torch.randn(32, 6), torch.randn(32, 6)
    kill(trunk[0], [2, 5])  # silent in task 0: unimportant after it
    method = make_method("agscl+redo", trunk, heads, mu=0.0, lam=1e4, rho=0.0, redo_tau=1e9, redo_interval=1, seed=0)
    method.plasticity.tau = -1.0  # no recycle during task 0
    learn(method, trunk, heads, 0, x0)
    method.plasticity.tau = 1e9  # in task 1 every unit scores as dormant
    ags = method.stability
    free0 = (ags.omega[0] == 0).nonzero().flatten().tolist()
    assert free0 == [2, 5] and bool((ags.omega[0] > 0).any())
    with torch.no_grad():  # one free node as the lasso leaves it: its group exactly zero
        trunk[0].weight[free0[0]] = 0
        trunk[0].bias[free0[0]] = 0
    method.begin_task(1)
    assert bool(ags.held_zero[0][free0[0]])
    snapshot = copy.deepcopy((trunk, heads))
    out0 = outputs(trunk, heads[:1], x0)
    trunk(x1)
    method.after_step(0.0)  # tau huge: every unit is "dormant"
    protected = ags.protected_nodes()
    for index, layer in enumerate((trunk[0], trunk[2])):
        old = snapshot[0][index * 2]
        keep = protected[index]
        assert torch.equal(layer.weight[keep], old.weight[keep]) and torch.equal(layer.bias[keep], old.bias[keep])
    assert not torch.equal(trunk[0].weight[free0[1]], snapshot[0][0].weight[free0[1]])  # free, nonzero: recycled
    assert torch.all(trunk[0].weight[free0[0]] == 0)
    assert all(torch.equal(a, b) for a, b in zip(heads[0].parameters(), snapshot[1][0].parameters()))
    for a, b in zip(out0, outputs(trunk, heads[:1], x0)):
        assert torch.equal(a, b)  # task 0's outputs are bit-equal


@pytest.mark.parametrize("plasticity", ["redo", "shrink_perturb", "l2init"])
def test_packnet_compositions_never_change_owned_weights_frozen_biases_or_task0(plasticity):
    trunk, heads = mlp()
    x0, x1 = torch.randn(32, 6), torch.randn(32, 6)
    # redo every 5 steps: a unit recycled at every step would never train (its outgoing weights are
    # zero), and PackNet lets the weights a task never trained go back to free (zero) at its end
    extra = {"redo": dict(redo_tau=1e9, redo_interval=5), "shrink_perturb": dict(sp_shrink=0.5, sp_perturb=0.5),
             "l2init": dict(l2init_lambda=5.0)}[plasticity]
    method = make_method(f"packnet+{plasticity}", trunk, heads, num_tasks=2, seed=0, **extra)
    learn(method, trunk, heads, 0, x0)
    owner = {name: o.clone() for name, o in zip(method.stability.names, method.stability.owner)}
    snapshot = {n: p.detach().clone() for n, p in trunk.named_parameters()}
    with method.use_task(0):
        out0 = outputs(trunk, heads[:1], x0)
    learn(method, trunk, heads, 1, x1, steps=10)
    moved_free = False
    for name, p in trunk.named_parameters():
        if name in owner:
            owned = owner[name] != 0
            assert torch.equal(p[owned], snapshot[name][owned]), name
            moved_free |= not torch.equal(p[~owned], snapshot[name][~owned])
        else:
            assert torch.equal(p, snapshot[name]), name  # biases: frozen after the first task
    assert moved_free
    with method.use_task(0):
        for a, b in zip(out0, outputs(trunk, heads[:1], x0)):
            assert torch.equal(a, b)


def test_agscl_shrink_perturb_shrinks_only_free_nonzero_nodes():
    trunk, heads = mlp()
    method = make_method("agscl+shrink_perturb", trunk, heads, mu=0.0, lam=1e4, sp_shrink=0.5, sp_perturb=0.5,
                         init_fn=half, seed=0)
    learn(method, trunk, heads, 0, torch.randn(32, 6))
    before = copy.deepcopy(trunk)
    method.begin_task(1)
    for index, nodes in zip((0, 2), method.stability.protected_nodes()):
        layer, old = trunk[index], before[index]
        assert torch.equal(layer.weight[nodes], old.weight[nodes]) and torch.equal(layer.bias[nodes], old.bias[nodes])
        assert torch.allclose(layer.weight[~nodes], 0.5 * old.weight[~nodes] + 0.25, rtol=0, atol=1e-7)


def drift_of_task0(name: str, **hparams) -> tuple[float, dict[str, float]]:
    """Two tasks of the AGS-CL test setup (tests/test_agscl.py); how far task 0's outputs move
    while task 1 is learned, on the same data and seed whatever the method."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(64, 2), nn.Linear(64, 2)])
    method = make_method(name, trunk, heads, seed=0, **hparams)
    gen = torch.Generator().manual_seed(0)
    tasks = []
    for rotation in (0.0, 1.3):
        x = torch.randn(400, 2, generator=gen)
        direction = torch.tensor([torch.cos(torch.tensor(rotation)), torch.sin(torch.tensor(rotation))])
        tasks.append((x, ((x @ direction) * (x[:, 0] + 0.3) > 0).long()))
    lr, after0 = 0.01, None
    for t, (x, y) in enumerate(tasks):
        method.begin_task(t)
        opt = torch.optim.Adam(list(trunk.parameters()) + list(heads[t].parameters()), lr=lr)
        method.attach_optimizer(opt)
        for _epoch in range(25):
            for idx in torch.randperm(400, generator=gen).split(100):
                loss = F.cross_entropy(heads[t](trunk(x[idx])), y[idx]) + method.penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
                method.after_step(lr)
            method.end_epoch(lr)
        method.end_task(t, [x])
        if t == 0:
            after0 = outputs(trunk, heads[:1], tasks[0][0])[0]
    drift = (outputs(trunk, heads[:1], tasks[0][0])[0] - after0).abs().max().item()
    return drift, method.statistics()


def test_task0_drifts_no_more_under_agscl_redo_than_under_agscl():
    ags = dict(mu=0.5, lam=1e4, rho=0.5, prox_every="step")
    drift_ags, _ = drift_of_task0("agscl", **ags)
    drift_both, stats = drift_of_task0("agscl+redo", **ags, redo_tau=0.5, redo_interval=5)
    drift_redo, _ = drift_of_task0("redo", redo_tau=0.5, redo_interval=5)
    assert stats["redo/recycled_units"] > 0
    assert drift_both <= drift_ags + 1e-6, (drift_both, drift_ags)
    assert drift_redo > 0.1  # ReDo alone lets task 0 move: the comparison can fail


def test_composite_state_nests_both_parts_and_resumes_identically():
    def build():
        trunk, heads = mlp()
        return trunk, heads, make_method("agscl+redo", trunk, heads, mu=0.1, lam=10.0, redo_tau=0.5, redo_interval=2,
                                         prox_every="step", seed=3)

    x = torch.randn(3, 16, 6, generator=torch.Generator().manual_seed(1))

    def run(trunk, heads, method, opt, task, steps):
        for i in range(steps):
            loss = heads[task][0](trunk(x[task])).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.after_step(0.01)

    trunk, heads, method = build()
    method.begin_task(0)
    opt = torch.optim.Adam(list(trunk.parameters()) + list(heads.parameters()), lr=0.01)
    method.attach_optimizer(opt)
    run(trunk, heads, method, opt, 0, 5)
    method.end_task(0, [x[0]])
    method.begin_task(1)
    run(trunk, heads, method, opt, 1, 3)
    state = method.state_dict()
    assert state["name"] == "agscl+redo" and state["stability"]["name"] == "agscl" and state["plasticity"]["name"] == "redo"
    saved = copy.deepcopy({"trunk": trunk.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(),
                           "method": state})

    def finish(trunk, heads, method, opt):
        run(trunk, heads, method, opt, 1, 6)
        return [p.detach().clone() for p in list(trunk.parameters()) + list(heads.parameters())]

    reference = finish(trunk, heads, method, opt)
    trunk2, heads2, method2, opt2 = restore(build, saved)
    method2.attach_optimizer(opt2)
    method2.begin_task(1)  # as a resumed learner does
    assert all(torch.equal(a, b) for a, b in zip(reference, finish(trunk2, heads2, method2, opt2)))
    assert method2.statistics()["redo/checks"] == method.statistics()["redo/checks"] > 0
    assert {"agscl/sparsity", "redo/recycled_units", "stored_floats"} <= set(method.statistics())


# -- the learners ----------------------------------------------------------------------------------
def test_agent_cli_takes_compositions_and_the_union_of_their_flags():
    from agents.config import parse_args
    from agents.methods_cli import method_kwargs
    from agents.ppo_continual import Args

    args = parse_args(Args, ["--method", "agscl+redo", "--redo-tau", "0.1", "--mu", "2", "--redo-interval", "7"])
    kwargs = method_kwargs(args, seed=1)
    assert kwargs["redo_tau"] == 0.1 and kwargs["redo_interval"] == 7 and kwargs["mu"] == 2.0
    assert {"lam", "rho", "seed"} <= set(kwargs) and "sp_shrink" not in kwargs


def test_supervised_trainer_resolves_a_composition_with_both_presets():
    from supervised import presets
    from supervised.train import Config, resolve

    resolved = resolve(Config(benchmark="split_digits", method="agscl+redo", redo_tau=0.1))
    expected = {**presets.hparams_for("split_digits", "agscl"), "redo_tau": 0.1, "redo_interval": 240}
    assert {k: resolved.hparams[k] for k in expected} == expected  # AGS-CL's benchmark preset, ReDo's flag and default
    assert resolved.hparams["zero_init"] is True


@pytest.mark.parametrize("method", ["redo", "agscl+redo"])
def test_agent_runs_minatar_with_a_plasticity_method(tmp_path, method):
    pytest.importorskip("minatar", reason='the MinAtar suite needs pip install -e ".[minatar]"')
    from agents import ppo_continual

    argv = ["--suite", "minatar", "--games", "Breakout", "Freeway", "--steps-per-game", "256", "--num-envs", "4",
            "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2", "--eval-episodes", "2",
            "--random-episodes", "2", "--eval-envs", "2", "--eval-max-frames", "100", "--importance-obs", "64",
            "--importance-batch", "32", "--seed", "3", "--torch-threads", "1", "--method", method,
            "--redo-interval", "2", "--redo-tau", "0.5", "--runs-dir", str(tmp_path), "--run-name", "run"]
    assert ppo_continual.main(argv) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["config"]["method"] == method and res["progress"]["status"] == "finished"
    key = "recycled_units" if method == "redo" else "redo/recycled_units"
    assert [r["game"] for r in res["regularizer"]] == [0, 1] and key in res["regularizer"][-1]


def test_supervised_trainer_runs_a_composition_with_pruning_and_recycles(tmp_path):
    from supervised.train import Config, train

    result = train(Config(runs_dir=str(tmp_path), progress=False, tensorboard=False, threads=1, method="packnet+redo",
                          num_tasks=2, epochs=2, seed=1, redo_interval=5))
    stats = result["per_task"][-1]["stats"]
    assert result["finished"] and result["config"]["method"] == "packnet+redo"
    assert stats["redo/checks"] > 0 and stats["redo/recycled_units"] > 0 and stats["packnet/owned_fraction_task1"] > 0
