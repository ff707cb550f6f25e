"""The lean rollout (agents/lean.py, issue 19): sampling, log-probabilities and entropies from
the logits are Categorical's, the PPO losses and gradients of a fixed batch are today's (the
Categorical path through the plain trunk) up to float rounding, fused Adam takes the same steps,
and per-update episode logging writes the same lines and TensorBoard scalars. The packed rollout
policy (MinAtar on the CPU) gives act_and_value's log-probabilities and values up to float
rounding, draws from the same distribution, and the PPO loop builds it from the current weights
at every update."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions.categorical import Categorical

from agents import ppo_continual
from agents.lean import EpisodeLog, PackedPolicy, log_prob_entropy, sample_action, sample_inverse_cdf
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


def test_inverse_cdf_sampling_follows_the_softmax_distribution_chi_square():
    """200k draws against the softmax in float64; a -inf logit is never drawn; the log-probability
    is the drawn action's; and the chi-square test rejects a wrong distribution (it can fail)."""
    logits = torch.tensor([[0.3, -1.2, 2.0, -float("inf"), 0.0]])
    generator = torch.Generator().manual_seed(3)
    draws, logprobs = zip(*(sample_inverse_cdf(logits.expand(10_000, 5), generator) for _ in range(20)))
    draws, logprobs = torch.cat(draws), torch.cat(logprobs)
    counts = np.bincount(draws.numpy(), minlength=5)
    assert counts[3] == 0
    z = np.exp(logits.double().numpy()[0])
    p = z / z.sum()
    keep = [0, 1, 2, 4]
    assert stats.chisquare(counts[keep], p[keep] * draws.numel()).pvalue > 1e-3
    assert stats.chisquare(counts[keep], np.full(4, draws.numel() / 4)).pvalue < 1e-6
    np.testing.assert_allclose(logprobs.double().numpy(), np.log(p[draws.numpy()]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("used_channels", [None, 4])
@pytest.mark.parametrize("channels", [(16,), (8, 12)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_packed_policy_gives_act_and_values_log_probabilities_and_values(channels, channels_last, used_channels):
    """Every game's head, one and two convolutions, both input layouts, an obs_scale that is not 1, and
    observations whose channels from ``used_channels`` on are zero (a MinAtar game's, skipped by the first
    convolution): log-probabilities of all actions and values equal the module path's up to float rounding."""
    torch.manual_seed(0)
    agent = Agent(channels, 128, "minatar")
    agent.add_head(3)
    agent.add_head(6)
    agent.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    obs = (torch.rand(8, 10, 10, 10) < 0.3).to(torch.uint8)
    if used_channels is not None:
        obs[:, used_channels:] = 0
    for scale in (1, 0.5):
        agent.obs_scale = scale
        for game, actions in ((0, 3), (1, 6)):
            packed = PackedPolicy(agent, game, used_channels)
            with torch.inference_mode():
                hidden = agent.features(obs)
                expected_logp = torch.log_softmax(agent.heads[game][0](hidden), dim=-1)
                expected_value = agent.heads[game][1](hidden).view(-1)
                action, logprob, value = packed(obs)
            assert action.shape == (8,) and int(action.min()) >= 0 and int(action.max()) < actions
            torch.testing.assert_close(logprob, expected_logp.gather(1, action.view(-1, 1)).view(-1), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(value, expected_value, rtol=1e-5, atol=1e-5)
    assert not PackedPolicy.supports(Agent((32, 64, 64), 512, "atari"))  # 8x8 stride-4 convolutions: the module path


def test_the_ppo_loop_builds_the_packed_policy_from_the_current_weights_at_every_update(tmp_path, monkeypatch):
    """Every rollout call of a 3-update MinAtar run is checked against act_and_value on the weights of
    that moment: a policy built once per game would fail from update 2 on, as would a loop that skips it."""
    calls, builds = [], []

    class Checked(PackedPolicy):
        def __init__(self, agent, game, used_channels=None):
            super().__init__(agent, game, used_channels)
            self.agent, self.game = agent, game
            builds.append(game)

        def __call__(self, x):
            action, logprob, value = super().__call__(x)
            hidden = self.agent.features(x)
            expected = self.agent.heads[self.game][1](hidden).view(-1)
            calls.append(float((value - expected).abs().max()))
            return action, logprob, value

    monkeypatch.setattr(ppo_continual, "PackedPolicy", Checked)
    argv = ["--suite", "minatar", "--games", "Breakout", "--method", "finetune", "--num-envs", "4", "--num-steps", "16",
            "--steps-per-game", "192", "--eval-every", "0", "--eval-episodes", "1", "--random-episodes", "1",
            "--eval-envs", "1", "--eval-max-frames", "50", "--importance-obs", "32", "--checkpoint-every", "0",
            "--torch-threads", "1", "--bf16", "off",  # `auto` is bf16 on an AMX CPU, where the packed rollout is off
            "--runs-dir", str(tmp_path), "--run-name", "packed"]
    assert ppo_continual.main(argv) == 0
    assert len(builds) == 3 and len(calls) == 3 * 16
    assert max(calls) < 1e-5
