"""AGS-CL: importance, re-initialization, exact freezing, persistence and configuration."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from agscl import AGSCL, FineTune, make_method
from agscl.prox import drift_shrink, group_soft_threshold
from resume_helpers import restore


def conv_trunk(width: int = 6, dropout: float = 0.0) -> nn.Sequential:
    """Conv-ReLU-Conv-ReLU-Flatten-Linear-ReLU on 1x6x6 inputs (flatten maps 1 channel to 4 columns)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3), nn.ReLU(),            # -> width x 4 x 4
        nn.Conv2d(width, width, 3), nn.ReLU(),        # -> width x 2 x 2
        nn.Dropout(dropout), nn.Flatten(),
        nn.Linear(width * 4, 10), nn.ReLU(),
    )


def mlp_trunk(d_in: int = 2, hidden: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def silence_nodes(layer: nn.Module, nodes: list[int]) -> None:
    """Zero the incoming group of some nodes so their ReLU activation (hence Omega) is 0."""
    with torch.no_grad():
        layer.weight[nodes] = 0
        layer.bias[nodes] = 0


# -- importance ------------------------------------------------------------------------------
def test_omega_is_eta_times_old_plus_mean_relu_activation_without_dropout_or_grad():
    trunk = conv_trunk(dropout=0.5)
    heads = [nn.Linear(10, 3), nn.Linear(10, 3)]
    method = AGSCL(trunk, heads, mu=0.0, lam=1.0, eta=0.7, rho=0.0, zero_init=False)
    x = torch.randn(20, 1, 6, 6)
    batches = [x[:7], x[7:15], x[15:]]  # uneven batches: the mean is over samples

    def expected_means():
        c1, c2, lin = trunk[0], trunk[2], trunk[6]
        a1 = F.relu(F.conv2d(x, c1.weight, c1.bias))
        a2 = F.relu(F.conv2d(a1, c2.weight, c2.bias))
        a3 = F.relu(F.linear(a2.flatten(1), lin.weight, lin.bias))
        return [a1.mean(dim=(0, 2, 3)), a2.mean(dim=(0, 2, 3)), a3.mean(dim=0)]

    trunk.train()
    method.begin_task(0)
    with torch.no_grad():
        first = expected_means()
    method.end_task(0, batches)
    for got, want in zip(method.omega, first):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert trunk.training, "train/eval mode must be restored"
    assert all(p.grad is None for p in trunk.parameters())

    method.begin_task(1)
    with torch.no_grad():
        second = expected_means()
    method.end_task(1, [(x, torch.zeros(20))])  # (x, y) tuples are accepted too
    for got, a, b in zip(method.omega, first, second):
        torch.testing.assert_close(got, 0.7 * a + b, rtol=1e-5, atol=1e-7)


# -- (I.1) zero-fix ----------------------------------------------------------------------------
def test_zero_fixed_weights_stay_exactly_zero_through_adam_steps():
    trunk = conv_trunk()
    heads = [nn.ModuleList([nn.Linear(10, 3), nn.Linear(10, 1)]), nn.ModuleList([nn.Linear(10, 3), nn.Linear(10, 1)])]
    method = AGSCL(trunk, heads, mu=0.0, lam=0.0, rho=0.0, prox_every="step")
    conv1, conv2, lin = trunk[0], trunk[2], trunk[6]
    with torch.no_grad():  # positive weights and inputs: every node not silenced is active
        for p in trunk.parameters():
            p.abs_()
    method.begin_task(0)
    silence_nodes(conv1, [1, 4])
    silence_nodes(conv2, [0])
    silence_nodes(lin, [2, 3, 7])
    x = torch.rand(32, 1, 6, 6) + 0.5  # positive inputs: the other nodes are active
    method.end_task(0, [x])
    unimportant = [(o == 0).nonzero().flatten().tolist() for o in method.omega]
    assert unimportant == [[1, 4], [0], [2, 3, 7]]

    def check_zero_fixed():
        important2 = method.omega[1] > 0
        for i in unimportant[0]:
            assert torch.equal(conv2.weight[important2][:, i], torch.zeros_like(conv2.weight[important2][:, i]))
        important3 = method.omega[2] > 0
        for c in unimportant[1]:  # channel c feeds Linear columns 4c..4c+3 after Flatten
            assert torch.all(lin.weight[important3][:, 4 * c: 4 * c + 4] == 0)
        for head in heads[0]:
            assert torch.all(head.weight[:, unimportant[2]] == 0)
        return important2

    check_zero_fixed()
    # weights from unimportant nodes into unimportant nodes are not fixed
    assert method.fixed_zero[1][~(method.omega[1] > 0)].sum() == 0

    method.begin_task(1)
    params = list(trunk.parameters()) + list(heads[0].parameters()) + list(heads[1].parameters())
    opt = torch.optim.Adam(params, lr=0.05)
    for step in range(30):
        out = heads[1][0](trunk(torch.randn(16, 1, 6, 6))) + heads[0][0](trunk(torch.randn(16, 1, 6, 6)))
        loss = out.pow(2).mean() - out.mean() * 3
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(0.05)
        check_zero_fixed()
    # The new task's head is not masked: it may read every node.
    assert torch.all(heads[1][0].weight != 0)


# -- (I.2) rand-init ---------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_rand_init_touches_only_unimportant_nodes(rho):
    trunk = conv_trunk()
    heads = [nn.Linear(10, 2)]
    method = AGSCL(trunk, heads, mu=0.0, lam=1.0, rho=rho, zero_init=False, seed=3)
    lin = trunk[6]
    silence_nodes(trunk[0], [0])
    silence_nodes(lin, [1, 5])
    before = copy.deepcopy(trunk.state_dict())
    method.end_task(0, [torch.rand(16, 1, 6, 6) + 0.5])
    for index, layer in enumerate(method.layers):
        name = [n for n, m in trunk.named_modules() if m is layer.module][0]
        important = method.omega[index] > 0
        assert torch.equal(layer.module.weight[important], before[f"{name}.weight"][important])
        assert torch.equal(layer.module.bias[important], before[f"{name}.bias"][important])
        changed = (layer.module.weight[~important] != before[f"{name}.weight"][~important]).flatten(1).any(dim=1)
        assert bool(changed.all()) == (rho == 1.0) and bool(changed.any()) == (rho == 1.0)
    if rho == 1.0:  # fresh rows follow U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = 1 / (lin.weight.shape[1] ** 0.5)
        assert lin.weight[[1, 5]].abs().max() <= bound and lin.weight[[1, 5]].abs().max() > 0.5 * bound


def test_rand_init_draws_each_node_with_probability_rho():
    trunk = nn.Sequential(nn.Linear(4, 2000), nn.ReLU())
    method = AGSCL(trunk, [nn.Linear(2000, 2)], mu=0.0, lam=1.0, rho=0.3, seed=1)
    with torch.no_grad():
        trunk[0].weight.zero_()
        trunk[0].bias.zero_()
    method.end_task(0, [torch.randn(8, 4)])
    redrawn = (trunk[0].weight != 0).any(dim=1).float().mean().item()
    assert abs(redrawn - 0.3) < 5 * (0.3 * 0.7 / 2000) ** 0.5


# -- the proximal step inside the method -----------------------------------------------------
def test_proximal_step_applies_eq7_per_group_with_the_right_threshold():
    trunk = mlp_trunk(3, 8)
    method = AGSCL(trunk, [nn.Linear(8, 2)], mu=0.4, lam=2.0, rho=0.0, zero_init=False)
    silence_nodes(trunk[0], [0, 1, 2])
    method.end_task(0, [torch.randn(64, 3)])
    method.begin_task(1)
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(0.05 * torch.randn_like(p))
    layer = trunk[0]
    theta = torch.cat([layer.weight, layer.bias[:, None]], 1).detach().clone()
    anchor = torch.cat([method.anchor_w[0], method.anchor_b[0][:, None]], 1)
    alpha = 0.1
    method.proximal_step(alpha)
    got = torch.cat([layer.weight, layer.bias[:, None]], 1)
    omega = method.omega[0]
    zero = omega == 0
    want = torch.where(
        zero[:, None],
        group_soft_threshold(theta, alpha * 0.4),
        drift_shrink(theta, anchor, alpha * 2.0 * omega),
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    assert zero.any() and (~zero).any()


def test_proximal_step_is_vectorized_over_nodes():
    """The number of torch operations of one prox step does not grow with the number of nodes
    (as long as a layer fits in one cache block of ``BLOCK_FLOATS``)."""

    class CountOps(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    counts = []
    for width in (4, 64):
        trunk = conv_trunk(width)
        method = AGSCL(trunk, [nn.Linear(10, 2)], mu=0.1, lam=1.0, rho=0.0)
        silence_nodes(trunk[0], [0])
        method.end_task(0, [torch.rand(4, 1, 6, 6)])
        with CountOps() as mode:
            method.proximal_step(0.01)
        counts.append(mode.count)
    assert counts[0] == counts[1]


def test_prox_every_epoch_only_acts_in_end_epoch():
    trunk = mlp_trunk()
    method = AGSCL(trunk, [nn.Linear(32, 2)], mu=100.0, lam=1.0, prox_every="epoch")
    method.begin_task(0)
    before = copy.deepcopy(trunk.state_dict())
    method.after_step(0.1)
    assert all(torch.equal(v, trunk.state_dict()[k]) for k, v in before.items())
    method.end_epoch(0.1)  # mu * lr = 10 exceeds every group norm: all sparsified
    assert all(torch.count_nonzero(p) == 0 for p in trunk.parameters())
    assert method.group_counts()["zero_groups"] == 64


# -- behaviour on a two-task problem -------------------------------------------------------------
def two_task_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for rotation in (0.0, 1.3):
        x = torch.randn(600, 2, generator=g)
        direction = torch.tensor([torch.cos(torch.tensor(rotation)), torch.sin(torch.tensor(rotation))])
        y = ((x @ direction) * (x[:, 0] + 0.3) > 0).long()
        tasks.append((x, y))
    return tasks


def train_sequence(method_name: str, **hparams):
    torch.manual_seed(0)
    trunk = mlp_trunk(2, 64)
    heads = nn.ModuleList([nn.Linear(64, 2), nn.Linear(64, 2)])
    method = make_method(method_name, trunk, heads, **hparams)
    tasks = two_task_data()
    outputs_after_task0 = None
    lr = 0.01
    for t, (x, y) in enumerate(tasks):
        method.begin_task(t)
        opt = torch.optim.Adam(list(trunk.parameters()) + list(heads[t].parameters()), lr=lr)
        for epoch in range(60):
            for idx in torch.randperm(600).split(100):
                loss = F.cross_entropy(heads[t](trunk(x[idx])), y[idx]) + method.penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
                method.after_step(lr)
            method.end_epoch(lr)
        method.end_task(t, [x])
        if t == 0:
            with torch.no_grad():
                outputs_after_task0 = heads[0](trunk(tasks[0][0])).clone()
    with torch.no_grad():
        drift = (heads[0](trunk(tasks[0][0])) - outputs_after_task0).abs().max().item()
        acc1 = (heads[1](trunk(tasks[1][0])).argmax(1) == tasks[1][1]).float().mean().item()
        acc0 = (heads[0](trunk(tasks[0][0])).argmax(1) == tasks[0][1]).float().mean().item()
    return drift, acc0, acc1, method


def test_large_lambda_keeps_first_task_outputs_while_second_is_learned():
    drift_ags, acc0_ags, acc1_ags, method = train_sequence("agscl", mu=0.5, lam=1e4, rho=0.5, prox_every="step", seed=0)
    drift_ft, _, acc1_ft, _ = train_sequence("finetune")
    assert drift_ags < 1e-5, f"AGS-CL changed task-0 outputs by {drift_ags}"
    assert drift_ft > 0.1, f"fine-tuning should change task-0 outputs, changed only {drift_ft}"
    assert acc0_ags > 0.85
    assert acc1_ags > 0.8, f"task 1 not learned by AGS-CL: accuracy {acc1_ags}"
    stats = method.statistics()
    assert 0 < stats["sparsity"] < 1
    assert stats["stored_floats"] == 128
    assert 0 < method.history[-1]["used_capacity"] < 1


# -- persistence -------------------------------------------------------------------------------
def test_state_dict_round_trip_gives_identical_later_updates():
    def build():
        torch.manual_seed(0)
        trunk = conv_trunk()
        heads = nn.ModuleList([nn.Linear(10, 3) for _ in range(3)])
        return trunk, heads, AGSCL(trunk, heads, mu=0.05, lam=5.0, rho=0.5, prox_every="step", seed=7)

    data = torch.rand(3, 64, 1, 6, 6, generator=torch.Generator().manual_seed(1))

    def run(trunk, heads, method, opt, task, steps):
        for i in range(steps):
            loss = heads[task](trunk(data[task][i % 4 * 16:(i % 4 + 1) * 16])).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.after_step(0.01)

    trunk, heads, method = build()
    method.begin_task(0)
    opt = torch.optim.Adam(list(trunk.parameters()) + list(heads.parameters()), lr=0.01)
    run(trunk, heads, method, opt, 0, 8)
    method.end_task(0, [data[0]])
    method.begin_task(1)
    run(trunk, heads, method, opt, 1, 3)
    saved = copy.deepcopy({"trunk": trunk.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(),
                           "method": method.state_dict()})

    def finish(trunk, heads, method, opt):
        run(trunk, heads, method, opt, 1, 5)
        method.end_task(1, [data[1]])  # uses the re-init generator
        method.begin_task(2)
        run(trunk, heads, method, opt, 2, 4)
        return [p.detach().clone() for p in list(trunk.parameters()) + list(heads.parameters())]

    reference = finish(trunk, heads, method, opt)
    trunk2, heads2, method2, opt2 = restore(build, saved)
    resumed = finish(trunk2, heads2, method2, opt2)
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mu": -1.0, "lam": 1.0}, r"mu=-1.0 is out of range: allowed mu in \[0, inf\)"),
        ({"mu": 1.0, "lam": -0.5}, r"lam=-0.5 is out of range"),
        ({"mu": 1.0, "lam": 1.0, "eta": 0.0}, r"eta=0.0 is out of range: allowed eta in \(0, 1\]"),
        ({"mu": 1.0, "lam": 1.0, "eta": 1.5}, r"eta=1.5"),
        ({"mu": 1.0, "lam": 1.0, "rho": 1.2}, r"rho=1.2 is out of range: allowed rho in \[0, 1\]"),
        ({"mu": 1.0, "lam": 1.0, "prox_every": "batch"}, r"prox_every='batch' is not valid: choose one of epoch, step"),
    ],
)
def test_bad_hyperparameters_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AGSCL(mlp_trunk(), [nn.Linear(32, 2)], **kwargs)


@pytest.mark.parametrize(
    "trunk, message",
    [
        (nn.Sequential(nn.ReLU(), nn.Flatten()), "no regularizable layer"),
        (nn.Sequential(nn.Linear(2, 4), nn.Tanh()), "unsupported layer '1' of type Tanh"),
        (nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 4), nn.ReLU()), "not followed by an nn.ReLU"),
        (nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3)), "last layer '2'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU()), "grouped convolution"),
    ],
)
def test_unsupported_trunks_raise_value_error(trunk, message):
    with pytest.raises(ValueError, match=message):
        AGSCL(trunk, [nn.Linear(4, 2)], mu=0.1, lam=1.0)


def test_stored_floats_are_one_per_node_orders_below_parameters():
    trunk = conv_trunk(16)
    method = AGSCL(trunk, [nn.Linear(10, 2)], mu=0.1, lam=1.0)
    assert method.stored_floats() == 16 + 16 + 10
    assert FineTune(trunk, []).stored_floats() == 0


def test_used_capacity_counts_nodes_whose_group_did_not_move_during_the_task():
    trunk = mlp_trunk(3, 8)
    method = AGSCL(trunk, [nn.Linear(8, 2), nn.Linear(8, 2)], mu=0.0, lam=1.0, rho=1.0, zero_init=False, seed=0)
    with torch.no_grad():
        for p in trunk.parameters():
            p.abs_()
    silence_nodes(trunk[0], [0, 1])
    method.end_task(0, [torch.rand(32, 3)])  # layer-0 nodes 0 and 1 unimportant, re-drawn (rho=1)
    method.begin_task(1)
    start = [p.detach().clone() for p in trunk.parameters()]
    with torch.no_grad():
        trunk[0].weight[1, 0] += 0.5   # an unimportant node moves
        trunk[0].weight[4, 2] += 1e-3  # an important node moves
        trunk[2].bias[7] -= 0.25       # another important node moves (bias only)
    unmoved = torch.cat([
        ((start[2 * i] == layer.weight).all(dim=1) & (start[2 * i + 1] == layer.bias))
        for i, layer in enumerate((trunk[0], trunk[2]))
    ]).float().mean().item()
    method.end_task(1, [torch.rand(32, 3)])
    assert method.history[-1]["used_capacity"] == pytest.approx(unmoved)
    assert unmoved == pytest.approx(13 / 16)


# -- review fixes: re-init distribution, (I.1) scope, mask order, BatchNorm, train flags -------
def test_rand_init_redraws_from_the_networks_own_initializer():
    """The agent initializes orthogonally with gain sqrt(2): re-drawn rows must look like its
    rows (norm sqrt(2) for a wide layer), not like PyTorch's default U(+-1/sqrt(fan_in))."""
    from agents.network import layer_init

    trunk = nn.Sequential(layer_init(nn.Linear(256, 64)), nn.ReLU())
    method = AGSCL(trunk, [nn.Linear(64, 2), nn.Linear(64, 2)], mu=0.0, lam=1.0, rho=1.0, seed=0, init_fn=layer_init)
    silence_nodes(trunk[0], list(range(32)))
    before = trunk[0].weight.detach().clone()
    method.end_task(0, [torch.randn(64, 256)])
    fresh = trunk[0].weight.detach()[:32]
    assert not torch.equal(fresh, before[:32])
    norms = torch.linalg.vector_norm(fresh, dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 2**0.5), atol=1e-5)  # orthogonal rows, gain sqrt 2
    assert torch.all(trunk[0].bias[:32] == 0)  # layer_init's zero bias
    # and the draw does not consume torch's global generator
    inputs = [torch.randn(64, 256)]
    silence_nodes(trunk[0], list(range(32)))
    state = torch.get_rng_state()
    method.end_task(1, inputs)
    assert torch.equal(torch.get_rng_state(), state)


def test_zero_init_zeroes_every_outgoing_weight_of_unimportant_nodes():
    """(I.1) as in the paper: the unimportant input's column is 0 in every row of the next layer
    (also unimportant rows that are not re-drawn), fixed for good only into important rows."""
    trunk = mlp_trunk(3, 8)
    method = AGSCL(trunk, [nn.Linear(8, 2)], mu=0.0, lam=1.0, rho=0.0, seed=0)
    silence_nodes(trunk[0], [2, 5])  # unimportant in layer 1
    silence_nodes(trunk[2], [0])  # unimportant in layer 2
    with torch.no_grad():
        trunk[2].weight[0].fill_(0.3)  # the unimportant row reads every input, 2 and 5 included
    method.end_task(0, [torch.rand(32, 3)])
    unimportant_in = method.omega[0] == 0
    assert bool(unimportant_in[[2, 5]].all()) and not bool(unimportant_in.all())
    w = trunk[2].weight
    assert torch.all(w[:, unimportant_in] == 0)  # every row, the unimportant row 0 included
    assert torch.all(w[0, ~unimportant_in] == 0.3)  # its other inputs are untouched (rho=0)
    important_out = method.omega[1] > 0
    fixed = method.fixed_zero[1]
    assert torch.equal(fixed, important_out[:, None] & unimportant_in[None, :])  # fixed only into important rows


def test_step_mode_masks_before_prox_so_frozen_rows_do_not_drift():
    """Adam writes into zero-fixed weights; if those values entered the drift norm of an
    important row, its norm would exceed the threshold and the row would move."""
    trunk = mlp_trunk(3, 8)
    method = AGSCL(trunk, [nn.Linear(8, 2)], mu=0.0, lam=1.0, rho=0.0, prox_every="step", seed=0)
    silence_nodes(trunk[0], [2])
    method.end_task(0, [torch.rand(32, 3) + 0.5])
    method.begin_task(1)
    row = 4
    assert method.omega[1][row] > 0 and bool(method.fixed_zero[1][row, 2])
    anchor = trunk[2].weight[row].detach().clone()
    alpha = 0.1
    tau = float(alpha * method.lam * method.omega[1][row])
    with torch.no_grad():
        trunk[2].weight[row, 2] = 100.0  # what an optimizer step wrote into the fixed weight
        trunk[2].weight[row, 0] += 0.5 * tau  # a small drift: within the freezing threshold
    method.after_step(alpha)
    assert torch.equal(trunk[2].weight[row], anchor)  # frozen exactly, fixed weight back at 0


def test_batchnorm_trunk_is_refused_with_the_reason():
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
    with pytest.raises(ValueError, match=r"BatchNorm layers \(1\).*freeze nodes exactly"):
        AGSCL(trunk, [nn.Linear(8, 2)], mu=0.1, lam=1.0)


def test_importance_restores_each_modules_own_train_flag():
    trunk = conv_trunk(dropout=0.5)
    method = AGSCL(trunk, [nn.Linear(10, 2)], mu=0.0, lam=1.0, rho=0.0)
    trunk.train()
    trunk[4].eval()  # a frozen dropout inside a training trunk
    method.end_task(0, [torch.rand(8, 1, 6, 6)])
    assert trunk.training and trunk[0].training and not trunk[4].training
