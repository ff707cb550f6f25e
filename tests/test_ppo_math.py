"""The fused PPO loss (agents/ppo_math.py ``ppo_loss``, ``--fused-loss``): the same loss, logging
stats and gradients as cleanrl's expression through autograd (``ppo_loss_autograd``, the loop's
``--no-fused-loss`` path), ties and clip edges included; its gradient against finite differences;
and the PPO loop's two paths log the same losses. The minibatch taking (agents/lean.py
``Minibatches``) gives what plain indexing gives, and skipping the batch's empty input channels
changes neither loss nor gradients."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import ppo_continual
from agents.lean import Minibatches, log_prob_entropy
from agents.network import Agent
from agents.ppo_math import ppo_loss, ppo_loss_autograd


def reference(logits, value, action, old_logprob, adv, returns, old_values, **coefs):
    """cleanrl's loss through autograd, as the loop runs it under --no-fused-loss (the same arguments as ppo_loss)."""
    return ppo_loss_autograd(logits, value, action, old_logprob, adv, returns, old_values, **coefs)


def batch(seed: int, n: int = 256, actions: int = 5, dtype=torch.float32):
    """Logits and values near a rollout's, with old log-probabilities and values that put ratios and value
    steps on both sides of the clip range, exact ties (ratio 1), zero advantages and exact clip edges."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, actions, generator=g, dtype=dtype) * 2
    value = torch.randn(n, 1, generator=g, dtype=dtype)
    action = torch.randint(0, actions, (n,), generator=g)
    logp = torch.log_softmax(logits, -1).gather(1, action[:, None]).squeeze(1)
    old_logprob = logp + 0.2 * torch.randn(n, generator=g, dtype=dtype)
    old_logprob[:16] = logp[:16]  # ratio exactly 1: the surrogate's two terms tie
    adv = torch.randn(n, generator=g, dtype=dtype)
    adv[16:24] = 0.0
    returns = torch.randn(n, generator=g, dtype=dtype)
    old_values = value.view(-1) + 0.2 * torch.randn(n, generator=g, dtype=dtype)
    old_values[24:32] = value.view(-1)[24:32] - 0.1  # the value step is exactly at the clip edge
    return logits, value, action, old_logprob, adv, returns, old_values


@pytest.mark.parametrize("clip_vloss", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_loss_equals_the_autograd_expression_with_its_gradients(seed, clip_vloss):
    logits, value, action, old_logprob, adv, returns, old_values = batch(seed)
    coefs = dict(clip_coef=0.1, clip_vloss=clip_vloss, ent_coef=0.01, vf_coef=0.5)
    results = []
    for fn in (reference, lambda *a, **k: ppo_loss(*a, **k)):
        lg, v = logits.clone().requires_grad_(), value.clone().requires_grad_()
        loss, stats = fn(lg, v, action, old_logprob, adv, returns, old_values, **coefs)
        (loss * 3.0).backward()  # a non-unit incoming gradient, as under a scaled loss
        results.append((loss.detach(), stats, lg.grad, v.grad))
    (loss_a, stats_a, gl_a, gv_a), (loss_b, stats_b, gl_b, gv_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(stats_b, stats_a, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gl_b, gl_a, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gv_b, gv_a, rtol=1e-5, atol=1e-8)
    assert gv_b.shape == value.shape
    # the batch reaches every case: clipped and unclipped ratios, clipped value steps
    ratio = (log_prob_entropy(logits, action)[0] - old_logprob).exp()
    assert ((ratio - 1).abs() > 0.1).any() and ((ratio - 1).abs() < 0.1).any()
    assert 0 < float(stats_a[5]) < 1


def test_fused_loss_gradient_matches_finite_differences():
    """An independent check of the analytic gradient: central differences in float64, at a point away
    from the kinks of max and clamp (finite differences across a kink would measure neither side)."""
    logits, value, action, old_logprob, adv, returns, old_values = batch(5, n=12, actions=4, dtype=torch.float64)
    ratio = (log_prob_entropy(logits, action)[0] - old_logprob).exp()
    keep = ((ratio - 1).abs() - 0.1).abs() > 1e-3
    delta = (value.view(-1) - old_values).abs()
    keep &= (delta - 0.1).abs() > 1e-3
    keep[:16] = keep[:16] & (adv[:16] != 0)
    sel = torch.nonzero(keep).view(-1)
    args = [t[sel] for t in (logits, value, action, old_logprob, adv, returns, old_values)]
    assert len(sel) >= 6

    def f(lg, v):
        return ppo_loss(lg, v, *args[2:], clip_coef=0.1, clip_vloss=True, ent_coef=0.05, vf_coef=0.5)[0]

    assert torch.autograd.gradcheck(f, (args[0].requires_grad_(), args[1].requires_grad_()), eps=1e-7, atol=1e-6)


def test_minibatches_take_what_plain_indexing_takes():
    torch.manual_seed(0)
    agent = Agent((16,), 128, "minatar")
    agent.memory_format = torch.channels_last
    obs = (torch.rand(64, 10, 10, 10) < 0.2).to(torch.uint8)
    cols = [torch.randn(64) for _ in range(4)]
    actions = torch.randint(0, 3, (64,))
    index = torch.randperm(64)[:16]
    taken = Minibatches(agent, obs, actions, *cols).take(index)
    assert taken[0].dtype == torch.float32 and taken[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(taken[0], obs[index].float())
    # features() has nothing left to do: the same tensor comes back
    x = taken[0].float().contiguous(memory_format=agent.memory_format)
    assert x.data_ptr() == taken[0].data_ptr()
    assert torch.equal(taken[1], actions[index])
    for got, col in zip(taken[2:], cols):
        assert torch.equal(got, col[index])
    atari = Agent((32, 64, 64), 512, "atari")
    pixels = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    taken = Minibatches(atari, pixels, actions[:8], *(c[:8] for c in cols)).take(index[index < 8])
    assert taken[0].dtype == torch.uint8 and torch.equal(taken[0], pixels[index[index < 8]])


def scalars(run_dir, tag):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_the_loops_fused_and_plain_losses_log_the_same_numbers(tmp_path):
    """Two updates of the PPO loop with and without --fused-loss, the same seed: the logged losses agree
    to the rounding that 16 Adam steps accumulate. Wrong wiring (say, returns and values swapped)
    would not."""
    base = ["--suite", "minatar", "--games", "Breakout", "--method", "finetune", "--num-envs", "4", "--num-steps", "32",
            "--steps-per-game", "256", "--eval-every", "0", "--eval-episodes", "1", "--random-episodes", "1",
            "--eval-envs", "1", "--eval-max-frames", "50", "--importance-obs", "32", "--checkpoint-every", "0",
            "--torch-threads", "1", "--runs-dir", str(tmp_path)]
    for name, flag in (("fused", "--fused-loss"), ("plain", "--no-fused-loss")):
        assert ppo_continual.main(base + ["--run-name", name, flag]) == 0
    for tag in ("losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac"):
        fused, plain = scalars(tmp_path / "fused", tag), scalars(tmp_path / "plain", tag)
        assert len(fused) == len(plain) == 2
        torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=2e-3, atol=1e-6, msg=tag)
    assert scalars(tmp_path / "fused", "losses/value_loss")[0] > 0


@pytest.mark.parametrize("used", [[0, 1, 2, 3], [1, 5, 9]])
def test_skipping_the_batchs_empty_channels_gives_the_same_loss_and_gradients(used):
    """Minibatches drops input channels that are zero in the whole batch; the first convolution then
    runs on the kept ones. Loss and every gradient equal the full convolution's (the absent channels'
    weights get a zero gradient either way)."""
    torch.manual_seed(4)
    agent = Agent((16,), 128, "minatar")
    agent.add_head(3)
    agent.memory_format = torch.channels_last
    obs = torch.zeros(64, 10, 10, 10, dtype=torch.uint8)
    obs[:, used] = (torch.rand(64, len(used), 10, 10) < 0.2).to(torch.uint8)
    actions = torch.randint(0, 3, (64,))
    cols = [-torch.rand(64), torch.randn(64), torch.randn(64), torch.randn(64)]
    batch = Minibatches(agent, obs, actions, *cols)
    assert batch.channels.tolist() == used and batch.obs.shape[-1] == len(used)
    index = torch.randperm(64)[:32]
    results = []
    for channels in (batch.channels, None):
        taken = batch.take(index) if channels is not None else Minibatches(agent, obs, actions, *cols).take(index)
        if channels is None:
            taken = (obs[index].float().contiguous(memory_format=torch.channels_last),) + taken[1:]
        agent.zero_grad()
        logits, value = agent.logits_and_value(taken[0], 0, channels)
        loss, _ = ppo_loss(logits, value, *taken[1:], clip_coef=0.1, clip_vloss=True, ent_coef=0.01, vf_coef=0.5)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in agent.parameters() if p.grad is not None]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-7)
    assert len(grads_a) == len(grads_b)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)
    conv_grad = grads_a[0]
    absent = [c for c in range(10) if c not in used]
    assert conv_grad[:, absent].abs().max() == 0 and conv_grad[:, used].abs().max() > 0


def test_a_batch_with_every_channel_used_or_none_keeps_them_all():
    agent = Agent((16,), 128, "minatar")
    agent.memory_format = torch.channels_last
    cols = [torch.zeros(4)] * 4
    for obs in (torch.ones(4, 10, 10, 10, dtype=torch.uint8), torch.zeros(4, 10, 10, 10, dtype=torch.uint8)):
        batch = Minibatches(agent, obs, torch.zeros(4, dtype=torch.long), *cols)
        assert batch.channels is None and batch.obs.shape[-1] == 10
