"""``--activation crelu`` and ``--layer-norm``: the layers' values, the agent's shapes, the fast paths
(same outputs, or off), and how the methods treat them (AGS-CL refused, PackNet's shared parameters)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agents.config import check_trunk_options
from agents.layers import ChannelLayerNorm, CReLU
from agents.lean import Minibatches, PackedPolicy
from agents.network import Agent
from agents.runtime import UserError
from agscl.registry import make_method


def test_crelu_is_the_concat_of_relu_and_relu_of_minus_x():
    x = torch.randn(5, 3, 4, 4)
    out = CReLU()(x)
    assert out.shape == (5, 6, 4, 4)
    assert torch.equal(out[:, :3], x.clamp(min=0)) and torch.equal(out[:, 3:], (-x).clamp(min=0))
    assert torch.equal(out[:, :3] - out[:, 3:], x)  # unit n's two outputs n and n+C give x back
    v = torch.tensor([[-2.0, 0.0, 3.0]])
    assert CReLU()(v).tolist() == [[0.0, 0.0, 3.0, 2.0, 0.0, 0.0]]


def test_channel_layer_norm_normalizes_each_position_over_the_channels():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5) * 3 + 2
    norm = ChannelLayerNorm(6)
    out = norm(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(4, 5, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=1, unbiased=False), torch.ones(4, 5, 5), atol=1e-3, rtol=0)
    with torch.no_grad():  # the affine is per channel
        norm.weight.copy_(torch.arange(1.0, 7.0))
        norm.bias.fill_(0.5)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,)).permute(0, 3, 1, 2) * torch.arange(1.0, 7.0).view(1, 6, 1, 1) + 0.5
    torch.testing.assert_close(norm(x), expected)


def test_default_trunk_is_the_plain_chain_and_bit_identical():
    torch.manual_seed(4)
    plain = Agent((16,), 128, "minatar")
    torch.manual_seed(4)
    explicit = Agent((16,), 128, "minatar", activation="relu", layer_norm=False)
    assert [type(m) for m in plain.trunk] == [nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU]
    assert plain.features_dim == 128
    for (k, a), (k2, b) in zip(plain.state_dict().items(), explicit.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert PackedPolicy.supports(plain)


def test_crelu_agent_doubles_each_layers_outputs_and_the_heads_inputs():
    torch.manual_seed(1)
    agent = Agent((4, 5), 8, "minatar", activation="crelu")
    agent.add_head(3)
    conv1, conv2, linear = (m for m in agent.trunk if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert conv2.in_channels == 8 and linear.in_features == 2 * 5 * 6 * 6 and agent.features_dim == 16
    assert agent.heads[0][0].in_features == 16 and agent.heads[0][1].in_features == 16
    x = (torch.rand(7, 10, 10, 10) < 0.3).float()
    h = F.conv2d(x, conv1.weight, conv1.bias)
    h = torch.cat([h.relu(), (-h).relu()], 1)
    h = F.conv2d(h, conv2.weight, conv2.bias)
    h = torch.cat([h.relu(), (-h).relu()], 1).flatten(1)
    h = F.linear(h, linear.weight, linear.bias)
    expected = torch.cat([h.relu(), (-h).relu()], 1)
    torch.testing.assert_close(agent.features(x.to(torch.uint8)), expected)
    logits, value = agent.logits_and_value(x.to(torch.uint8), 0)
    assert logits.shape == (7, 3) and value.shape == (7, 1)


def test_crelu_with_half_the_hidden_units_matches_the_relu_trunks_parameter_count():
    """MinAtar's conv16 + fc128: conv unchanged (it reads the observations), fc 2*16*64 -> 64 holds
    the same weights as 16*64 -> 128, and the heads read 2*64 = 128 features: only 64 biases fewer."""
    def count(agent: Agent) -> int:
        agent.add_head(3)
        return sum(p.numel() for p in agent.parameters())

    relu, crelu = count(Agent((16,), 128, "minatar")), count(Agent((16,), 64, "minatar", activation="crelu"))
    assert relu - crelu == 64
    assert count(Agent((16,), 128, "minatar", activation="crelu")) > 1.9 * relu  # same units: about twice


def test_layer_norm_normalizes_before_each_activation():
    torch.manual_seed(2)
    agent = Agent((6,), 12, "minatar", layer_norm=True)
    kinds = [type(m).__name__ for m in agent.trunk]
    assert kinds == ["Conv2d", "ChannelLayerNorm", "ReLU", "Flatten", "Linear", "LayerNorm", "ReLU"]
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0])) for m in agent.trunk if isinstance(m, nn.ReLU)]
    agent.features((torch.rand(9, 10, 10, 10) < 0.3).to(torch.uint8))
    for h in handles:
        h.remove()
    conv_in, fc_in = seen
    torch.testing.assert_close(conv_in.mean(dim=1), torch.zeros_like(conv_in[:, 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(conv_in.var(dim=1, unbiased=False), torch.ones_like(conv_in[:, 0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(fc_in.mean(dim=1), torch.zeros(9), atol=1e-5, rtol=0)
    torch.testing.assert_close(fc_in.var(dim=1, unbiased=False), torch.ones(9), atol=1e-3, rtol=0)


@pytest.mark.parametrize("activation, layer_norm", [("crelu", False), ("relu", True), ("crelu", True)])
def test_fast_paths_give_the_plain_trunks_outputs_or_are_off(activation, layer_norm):
    torch.manual_seed(5)
    agent = Agent((16,), 32, "minatar", activation=activation, layer_norm=layer_norm)
    agent.add_head(4)
    assert not PackedPolicy.supports(agent)  # the packed rollout is MinAtar's plain chain only: module path here
    obs = torch.zeros(64, 10, 10, 10, dtype=torch.uint8)
    obs[:, :4] = (torch.rand(64, 4, 10, 10) < 0.3).to(torch.uint8)  # a game that fills 4 of the 10 channels
    plain = agent.trunk(obs.float())
    # channel skipping (Minibatches drops the empty channels) and channels-last training (the contiguous conv)
    agent.memory_format = torch.channels_last
    batch = Minibatches(agent, obs, torch.zeros(64, dtype=torch.long), *(torch.zeros(64),) * 4)
    assert batch.channels is not None and batch.channels.tolist() == [0, 1, 2, 3]
    x = batch.take(torch.arange(64))[0]
    torch.testing.assert_close(agent.features(x, batch.channels), plain, rtol=1e-5, atol=1e-6)
    # the rollout's call: the same log-probabilities and values as the update's call, same draws
    torch.manual_seed(11)
    with torch.inference_mode():
        action, logprob, value = agent.act_and_value(obs[:8], 0)
    torch.manual_seed(11)
    with torch.no_grad():
        action2, logprob2, _, value2 = agent.get_action_and_value(obs[:8], 0)
    assert torch.equal(action, action2)
    torch.testing.assert_close(logprob, logprob2)
    torch.testing.assert_close(value, value2.view(-1))


@pytest.mark.parametrize("method, activation, layer_norm, option", [
    ("agscl", "crelu", False, "--activation crelu"),
    ("agscl", "relu", True, "--layer-norm"),
    ("agscl+redo", "relu", True, "--layer-norm"),  # a composition is refused when a part is
])
def test_agscl_refuses_crelu_and_layer_norm_with_the_reason(method, activation, layer_norm, option):
    with pytest.raises(UserError, match=f"--method {method.replace('+', '[+]')} cannot be combined with {option}: ") as info:
        check_trunk_options(method, activation, layer_norm)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("method", ["finetune", "ewc", "mas", "packnet"])
def test_other_methods_take_both_options(method):
    check_trunk_options(method, "crelu", True)


@pytest.mark.parametrize("option", [["--activation", "crelu"], ["--layer-norm"]])
def test_agent_refuses_agscl_with_either_option_in_one_line_exit_2(option, tmp_path, capsys):
    from agents import ppo_continual

    argv = ["--suite", "minatar", "--method", "agscl", *option, "--runs-dir", str(tmp_path)]
    assert ppo_continual.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--method agscl cannot be combined with {' '.join(option)}: " in err, err
    assert not os.listdir(tmp_path)


def test_packnet_with_layer_norm_freezes_its_affine_after_the_first_task_and_keeps_task0_exact():
    """LayerNorm's weight and bias are 1-D: PackNet trains them in the first task only, as biases.
    Task 0's function then stays bit-exact under ``use_task(0)``: the later tasks' weights are masked
    before the LayerNorm computes its statistics."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(6, 24), nn.LayerNorm(24), nn.ReLU(), nn.Linear(24, 16), nn.LayerNorm(16), CReLU())
    heads = nn.ModuleList(nn.Linear(32, 3) for _ in range(2))
    method = make_method("packnet", trunk, heads, num_tasks=2)
    norms = [p for m in trunk if isinstance(m, nn.LayerNorm) for p in m.parameters()]
    assert {n for n in method.shared_names} >= {"1.weight", "1.bias", "4.weight", "4.bias"}
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 6, generator=gen)

    def learn(task: int, steps: int = 20) -> None:
        method.begin_task(task)
        opt = torch.optim.Adam(list(trunk.parameters()) + list(heads[task].parameters()), lr=0.05)
        y = (x[:, task] > 0).long()
        for step in range(1, steps + 1):
            if step == 15:
                method.prune(task)
                opt = torch.optim.Adam(list(trunk.parameters()) + list(heads[task].parameters()), lr=0.05)
            loss = F.cross_entropy(heads[task](trunk(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.after_step(0.05)
        method.end_task(task, [x])

    before_norms = [p.detach().clone() for p in norms]
    learn(0)
    assert any(not torch.equal(p, b) for p, b in zip(norms, before_norms))  # trained in the first task
    after_task0 = [p.detach().clone() for p in norms]
    with torch.no_grad(), method.use_task(0):
        out0 = heads[0](trunk(x))
    learn(1)
    assert all(torch.equal(p, a) for p, a in zip(norms, after_task0))  # frozen after it
    with torch.no_grad(), method.use_task(0):
        assert torch.equal(heads[0](trunk(x)), out0)
