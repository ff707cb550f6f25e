"""The lean rollout (agents/lean.py, issue 19): sampling, log-probabilities and entropies from
the logits are Categorical's, the PPO losses and gradients of a fixed batch are today's (the
Categorical path through the plain trunk) up to float rounding, fused Adam takes the same steps,
and per-update episode logging writes the same lines and TensorBoard scalars."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions.categorical import Categorical

from agents.lean import EpisodeLog, log_prob_entropy, sample_action
from agents.network import Agent


def test_sampling_draws_what_categorical_draws_from_the_same_generator_state():
    """Bit-identical actions and log-probabilities, and the generator left in the same state."""
    logits = torch.randn(64, 5) * 3
    logits[3, 1] = -float("inf")  # a masked action is never drawn, by either
    torch.manual_seed(7)
    action, logprob = sample_action(logits)
    after = torch.rand(3)
    torch.manual_seed(7)
    dist = Categorical(logits=logits)
    expected = dist.sample()
    assert torch.equal(action, expected)
    assert torch.equal(logprob, dist.log_prob(expected))
    assert torch.equal(torch.rand(3), after)


def test_sampled_actions_follow_the_softmax_distribution_chi_square():
    """200k draws of one row against its softmax computed independently in float64."""
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.0]])
    generator = torch.Generator().manual_seed(1)
    draws = torch.cat([sample_action(logits.expand(10_000, 4), generator)[0] for _ in range(20)])
    counts = np.bincount(draws.numpy(), minlength=4)
    z = np.exp(logits.double().numpy()[0])
    expected = z / z.sum() * draws.numel()
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # and a wrong distribution is rejected by the same test (it has the power to fail)
    assert stats.chisquare(counts, np.full(4, draws.numel() / 4)).pvalue < 1e-6


def test_log_prob_and_entropy_and_their_gradients_equal_categoricals():
    """Values bit-equal; gradients equal up to float rounding."""
    torch.manual_seed(0)
    raw = torch.randn(32, 6) * 4
    raw[0, 2] = -float("inf")
    action = torch.randint(0, 6, (32,))
    action[0] = 1
    a = raw.clone().requires_grad_(True)
    b = raw.clone().requires_grad_(True)
    logprob, entropy = log_prob_entropy(a, action)
    dist = Categorical(logits=b)
    assert torch.equal(logprob, dist.log_prob(action))
    assert torch.equal(entropy, dist.entropy())
    assert bool(torch.isfinite(entropy).all())
    weights = torch.randn(32)
    (logprob * weights + entropy).sum().backward()
    (dist.log_prob(action) * weights + dist.entropy()).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)  # autograd may sum in another order


def ppo_loss(new_logprob, entropy, new_value, old_logprob, adv, returns, old_values, clip=0.1):
    """cleanrl's PPO loss (clipped surrogate, clipped value loss, entropy 0.01), written out here."""
    ratio = (new_logprob - old_logprob).exp()
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
    v = new_value.view(-1)
    v_clipped = old_values + (v - old_values).clamp(-clip, clip)
    v_loss = 0.5 * torch.max((v - returns) ** 2, (v_clipped - returns) ** 2).mean()
    return pg - 0.01 * entropy.mean() + 0.5 * v_loss


@pytest.mark.parametrize("channels_last", [True, False])
def test_losses_and_gradients_of_a_fixed_batch_equal_todays_path(channels_last):
    """Today's path: the trunk as one nn.Sequential call and a Categorical over the actor's logits.
    The agent's path (run_trunk, log_prob_entropy): the same loss and gradients up to rounding."""
    torch.manual_seed(3)
    agent = Agent((16,), 128, "minatar")
    agent.add_head(3)
    agent.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    obs = (torch.rand(256, 10, 10, 10) < 0.15).to(torch.uint8)
    actions = torch.randint(0, 3, (256,))
    old_logprob, adv, returns, old_values = -torch.rand(256), torch.randn(256), torch.randn(256), torch.randn(256)
    batch = (old_logprob, adv, returns, old_values)

    def today() -> torch.Tensor:
        x = obs.float().contiguous(memory_format=agent.memory_format)
        hidden = agent.trunk(x)
        dist = Categorical(logits=agent.heads[0][0](hidden))
        return ppo_loss(dist.log_prob(actions), dist.entropy(), agent.heads[0][1](hidden), *batch)

    def lean() -> torch.Tensor:
        _, logprob, entropy, value = agent.get_action_and_value(obs, 0, actions)
        return ppo_loss(logprob, entropy, value, *batch)

    grads = []
    for fn in (today, lean):
        agent.zero_grad()
        loss = fn()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in agent.parameters()]))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-7)
    for ga, gb in zip(grad_a, grad_b):
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-7)
    assert any(float(g.abs().max()) > 0 for g in grad_a)


def test_rollout_call_gives_the_same_action_logprob_and_value_as_the_update_call():
    torch.manual_seed(0)
    agent = Agent((16,), 128, "minatar")
    agent.add_head(4)
    obs = (torch.rand(8, 10, 10, 10) < 0.2).to(torch.uint8)
    torch.manual_seed(11)
    with torch.inference_mode():
        action, logprob, value = agent.act_and_value(obs, 0)
    torch.manual_seed(11)
    with torch.no_grad():
        action2, logprob2, _, value2 = agent.get_action_and_value(obs, 0)
    assert torch.equal(action, action2) and torch.equal(logprob, logprob2) and torch.equal(value, value2.view(-1))


def test_fused_adam_and_foreach_clip_take_the_loop_versions_steps():
    """Ten steps with clipping: parameters equal up to float rounding, and they moved."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = [p.detach().clone() for p in nets[0].parameters()]
    opts = [torch.optim.Adam(nets[0].parameters(), lr=1e-2, eps=1e-5),
            torch.optim.Adam(nets[1].parameters(), lr=1e-2, eps=1e-5, fused=True)]
    for step in range(10):
        x = torch.randn(64, 12)
        for k, (net, opt) in enumerate(zip(nets, opts)):
            loss = net(x).square().mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(list(net.parameters()), 0.05, foreach=True if k else None)
            opt.step()
    for a, b, s in zip(nets[0].parameters(), nets[1].parameters(), start):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert not torch.equal(a, s)


def test_episode_log_writes_the_per_episode_lines_and_scalars_once_per_update(tmp_path):
    """Against writing each episode as it ends (three add_scalar calls and one log line each)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    infos = [(24, {"game_over": np.array([False, True, False, True]), "episode_return": np.array([np.nan, 2.0, np.nan, 0.5]),
                   "episode_length": np.array([0, 17, 0, 9])}),
             (32, {"game_over": np.array([True, False, False, False]), "episode_return": np.array([7.0, np.nan, np.nan, np.nan]),
                   "episode_length": np.array([40, 0, 0, 0])})]
    old_lines: list[str] = []
    writer = SummaryWriter(str(tmp_path / "old"))
    for step, info in infos:
        for i in np.flatnonzero(info["game_over"]):
            r, length = float(info["episode_return"][i]), int(info["episode_length"][i])
            old_lines.append(f"global_step={step} episodic_return={r:g} game=Breakout")
            writer.add_scalar("charts/episodic_return", r, step)
            writer.add_scalar("charts/episodic_length", length, step)
            writer.add_scalar("charts/Breakout/episodic_return", r, step)
    writer.close()
    new_lines: list[str] = []
    writer = SummaryWriter(str(tmp_path / "new"))
    log = EpisodeLog("Breakout", writer, new_lines.append)
    for step, info in infos:
        log.add(step, info)
    assert not new_lines  # nothing written before the flush
    log.flush()
    log.flush()  # a second flush writes nothing again
    writer.close()
    assert "\n".join(old_lines) == "\n".join(new_lines) and len(new_lines) == 1

    def read(path):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    old, new = read(tmp_path / "old"), read(tmp_path / "new")
    assert old == new
    assert old["charts/episodic_return"] == [(24, 2.0), (24, 0.5), (32, 7.0)]
