"""HAT: gates, the capacity penalty, gradient blocking of earlier tasks' units, persistence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from supervised.hat import HAT
from supervised.networks import ResNet18Trunk


def conv_trunk() -> nn.Sequential:
    """Conv(1->4) ReLU Conv(4->6) ReLU Flatten Linear(6*2*2 -> 5) ReLU on 1x6x6 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(),
        nn.Conv2d(4, 6, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4, 5), nn.ReLU(),
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make(num_tasks: int = 2, **kw) -> tuple[nn.Sequential, nn.ModuleList, HAT]:
    trunk = conv_trunk()
    heads = nn.ModuleList([nn.Linear(5, 3) for _ in range(num_tasks)])
    return trunk, heads, HAT(trunk, heads, num_tasks=num_tasks, **kw)


def set_gates(hat: HAT, task: int, on: list[torch.Tensor]) -> None:
    """Embeddings at +-6 give gates of exactly 1 / 0 in float32 at s = smax = 400."""
    with torch.no_grad():
        for table, mask in zip(hat.embeddings, on):
            table.weight[task] = torch.where(mask, 6.0, -6.0)


def test_gates_multiply_each_nodes_relu_output():
    trunk, heads, hat = make()
    on = [torch.tensor([1, 0, 1, 0], dtype=torch.bool), torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool),
          torch.tensor([0, 1, 1, 0, 1], dtype=torch.bool)]
    set_gates(hat, 0, on)
    seen = []
    handle = trunk[3].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    trunk.eval()
    x = torch.randn(8, 1, 6, 6)
    with hat.use_task(0):
        out = trunk(x)
    handle.remove()
    # Independent forward pass without HAT, gating by hand.
    hat.remove_hooks()
    h1 = F.relu(trunk[0](x)) * on[0].float().view(1, -1, 1, 1)
    h2 = F.relu(trunk[2](h1)) * on[1].float().view(1, -1, 1, 1)
    expected = F.relu(trunk[5](h2.flatten(1))) * on[2].float()
    torch.testing.assert_close(out, expected)
    assert torch.equal(seen[0][:, ~on[1]], torch.zeros_like(seen[0][:, ~on[1]]))


def test_annealing_of_s_within_an_epoch_and_smax_in_eval():
    _, _, hat = make(smax=100.0)
    hat.set_epoch_length(5)
    hat.begin_task(0)
    hat.trunk.train()
    values = []
    for _ in range(5):
        values.append(hat.s)
        hat.after_step(1e-3)
    assert values[0] == pytest.approx(1 / 100)
    assert values[-1] == pytest.approx(100.0)
    assert all(b > a for a, b in zip(values, values[1:]))
    hat.end_epoch(1e-3)
    assert hat.s == pytest.approx(1 / 100)
    hat.trunk.eval()
    assert hat.s == 100.0


def test_penalty_matches_formula_and_embedding_gradient_is_compensated():
    trunk, heads, hat = make(c=0.5, smax=50.0)
    on = [torch.rand(4) > 0.5, torch.rand(6) > 0.5, torch.rand(5) > 0.5]
    set_gates(hat, 0, on)
    hat.end_task(0, [])
    hat.set_epoch_length(4)
    hat.begin_task(1)
    trunk.train()
    hat.after_step(1e-3)  # second batch of the epoch: s = 1/50 + (50 - 1/50) / 3
    s = 1 / 50 + (50 - 1 / 50) / 3
    e = [t.weight[1].detach().clone() for t in hat.embeddings]
    pre = torch.cat([torch.sigmoid(50.0 * t.weight[0].detach()) for t in hat.embeddings])
    a = torch.cat([torch.sigmoid(s * v) for v in e])
    free = 1 - pre
    expected = 0.5 * (a * free).sum() / free.sum()
    penalty = hat.penalty()
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    # d/de of c * sum(sigmoid(s e) * free) / sum(free), times HAT's compensation factor.
    sig = torch.sigmoid(s * torch.cat(e))
    raw = 0.5 * free * s * sig * (1 - sig) / free.sum()
    comp = (50.0 / s) * (torch.cosh(torch.clamp(s * torch.cat(e), -50, 50)) + 1) / (torch.cosh(torch.cat(e)) + 1)
    got = torch.cat([t.weight.grad[1] for t in hat.embeddings])
    torch.testing.assert_close(got, raw * comp)
    assert all(torch.equal(t.weight.grad[0], torch.zeros_like(t.weight.grad[0])) for t in hat.embeddings)


def test_masks_of_earlier_tasks_block_gradient_to_their_units():
    trunk, heads, hat = make()
    on = [torch.tensor([1, 1, 0, 0], dtype=torch.bool), torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool),
          torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool)]
    set_gates(hat, 0, on)
    x0 = torch.randn(16, 1, 6, 6)
    trunk.eval()
    with hat.use_task(0):
        before = heads[0](trunk(x0)).detach().clone()
    params_before = {n: p.detach().clone() for n, p in trunk.named_parameters()}
    hat.end_task(0, [])

    # Expected gradient multipliers, built by hand: weight (i <- j) frozen iff unit i and
    # input unit j were both used by task 0 (first layer: iff unit i was used).
    l1 = on[0].view(-1, 1, 1, 1).expand(4, 1, 3, 3)
    l2 = (on[1].view(-1, 1) & on[0].view(1, -1)).view(6, 4, 1, 1).expand(6, 4, 3, 3)
    cols = on[1].repeat_interleave(4)  # Flatten: channel c owns columns 4c..4c+3
    l3 = on[2].view(-1, 1) & cols.view(1, -1)
    frozen = {"0.weight": l1, "0.bias": on[0], "2.weight": l2, "2.bias": on[1], "5.weight": l3, "5.bias": on[2]}

    hat.set_epoch_length(4)
    hat.begin_task(1)
    optimizer = torch.optim.Adam(list(trunk.parameters()) + list(heads.parameters()) + list(hat.parameters()), lr=0.05)
    trunk.train()
    for step in range(8):
        x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
        loss = F.cross_entropy(heads[1](trunk(x)), y) + hat.penalty()
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, p in trunk.named_parameters():
                assert torch.equal(p.grad[frozen[name]], torch.zeros_like(p.grad[frozen[name]])), name
                assert p.grad[~frozen[name]].abs().sum() > 0, name
            # Weights from units task 0 did not use into units it used stay trainable.
            used_row_free_col = {"2.weight": on[1].view(-1, 1, 1, 1) & ~on[0].view(1, -1, 1, 1),
                                 "5.weight": on[2].view(-1, 1) & ~cols.view(1, -1)}
            for name, region in used_row_free_col.items():
                grad = dict(trunk.named_parameters())[name].grad
                assert grad[region.expand_as(grad)].abs().sum() > 0, name
        optimizer.step()
        hat.after_step(0.05)
    for name, p in trunk.named_parameters():
        assert torch.equal(p.detach()[frozen[name]], params_before[name][frozen[name]]), name
        assert not torch.equal(p.detach()[~frozen[name]], params_before[name][~frozen[name]]), name
    trunk.eval()
    with hat.use_task(0):
        after = heads[0](trunk(x0))
    assert torch.equal(after, before)  # task 0 is bit-for-bit unchanged


def test_cumulative_mask_is_elementwise_max_and_state_round_trips():
    trunk, heads, hat = make(num_tasks=3)
    a = [torch.rand(4) > 0.5, torch.rand(6) > 0.5, torch.rand(5) > 0.5]
    b = [torch.rand(4) > 0.5, torch.rand(6) > 0.5, torch.rand(5) > 0.5]
    set_gates(hat, 0, a)
    set_gates(hat, 1, b)
    hat.end_task(0, [])
    hat.end_task(1, [])
    for got, ma, mb in zip(hat.mask_pre, a, b):
        assert torch.equal(got, (ma | mb).float())
    nodes = 4 + 6 + 5
    assert hat.stored_floats() == nodes + 2 * nodes
    stats = hat.statistics()
    assert stats["used_capacity"] == pytest.approx(float(sum(int((ma | mb).sum()) for ma, mb in zip(a, b))) / nodes)

    trunk2 = conv_trunk()
    trunk2.load_state_dict(trunk.state_dict())
    heads2 = nn.ModuleList([nn.Linear(5, 3) for _ in range(3)])
    heads2.load_state_dict(heads.state_dict())
    other = HAT(trunk2, heads2, num_tasks=3)
    other.load_state_dict(hat.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(other.mask_pre, hat.mask_pre))
    assert other.tasks_learned == 2
    x = torch.randn(4, 1, 6, 6)
    trunk.eval()
    trunk2.eval()
    with hat.use_task(1), other.use_task(1):
        torch.testing.assert_close(trunk2(x), trunk(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="tasks"):
        make(num_tasks=2)[2].load_state_dict(hat.state_dict())


def test_bad_configuration_is_one_clear_error():
    with pytest.raises(ValueError, match="smax"):
        make(smax=0.5)
    with pytest.raises(ValueError, match="c="):
        make(c=-1.0)
    with pytest.raises(ValueError, match="num_tasks"):
        make(num_tasks=0)
    with pytest.raises(ValueError, match="plain"):
        HAT(ResNet18Trunk(), nn.ModuleList([nn.Linear(512, 2)]), num_tasks=1)
    _, _, hat = make()
    with pytest.raises(ValueError, match="out of range"):
        hat.begin_task(2)


def test_hat_in_the_trainer_never_forgets(tmp_path):
    """Two split_digits tasks: task 0's test accuracy is identical after learning task 1."""
    from supervised.train import Config, train

    torch.set_num_threads(1)
    result = train(Config(method="hat", num_tasks=2, epochs=3, runs_dir=str(tmp_path), progress=False,
                          tensorboard=False, threads=1))
    acc = result["accuracy"]
    assert acc[1][0] == acc[0][0]
    assert acc[0][0] > 0.9 and acc[1][1] > 0.9
    assert result["forgetting"] == 0.0
    assert not math.isnan(result["stored_floats"])


def test_restore_best_restores_the_task_embeddings_too(tmp_path, monkeypatch):
    """--restore-best with HAT: the trunk, heads *and* embeddings come back from the best
    validation epoch (the first here: validation loss rises), so the gates match the weights."""
    import supervised.train as trainer

    torch.set_num_threads(1)
    real_evaluate = trainer.evaluate
    seen = {"valid": 0}
    best: dict[str, list[torch.Tensor]] = {}

    def evaluate(trunk, heads, method, task_data, task, split, batch_size, device):
        loss, acc = real_evaluate(trunk, heads, method, task_data, task, split, batch_size, device)
        if split != "valid":
            return loss, acc
        seen["valid"] += 1
        if seen["valid"] == 1:  # the best epoch: remember the whole model as it is now
            best["embeddings"] = [t.weight.detach().clone() for t in method.embeddings]
            best["trunk"] = [p.detach().clone() for p in trunk.parameters()]
        return float(seen["valid"]), acc

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    trainer.train(trainer.Config(method="hat", num_tasks=1, epochs=3, restore_best=True, runs_dir=str(tmp_path),
                                 progress=False, tensorboard=False, threads=1))
    state = torch.load(tmp_path / "split_digits_hat_seed0" / "checkpoint.pt", weights_only=False)
    for saved, kept in zip(state["method"]["embeddings"], best["embeddings"]):
        assert torch.equal(saved, kept)
    assert all(torch.equal(a, b) for a, b in zip(state["trunk"].values(), best["trunk"]))
    assert not torch.equal(state["method"]["embeddings"][0], torch.zeros_like(best["embeddings"][0]))
