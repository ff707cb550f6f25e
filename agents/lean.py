"""The lean rollout: what the PPO loop does per environment step and per update, with fewer calls.

On a network as small as MinAtar's, Python and dispatch overhead bound a training step on a CPU
(docs/scale_minatar.md). This module holds the pieces that remove that overhead without changing
what is computed:

- :func:`sample_action` and :func:`log_prob_entropy` work on the logits directly instead of
  building a ``torch.distributions.Categorical`` per call. They run the same tensor operations
  as ``Categorical(logits=...)`` (normalize by ``logsumexp``, ``softmax``, ``torch.multinomial``
  with replacement, ``gather``, the clamped ``p log p`` sum), so actions, log-probabilities,
  entropies and their gradients are bit-identical to it and the random stream is consumed the
  same way (``tests/test_lean.py``);
- :class:`EpisodeLog` collects finished episodes during a rollout and writes their log lines
  and TensorBoard scalars once per update, at the global steps they finished at;
- :class:`Minibatches` takes an update's minibatches with one ``index_select`` per tensor, the
  MinAtar observations converted once per update;
- :class:`PackedPolicy` runs the rollout's inference on a MinAtar trunk (3x3 stride-1 convs, one
  Linear) as one gather and one GEMM per layer, on weights packed once per rollout: the same
  log-probabilities and values as :meth:`agents.network.Agent.act_and_value` up to float
  rounding, actions from the same distribution (:func:`sample_inverse_cdf`; ``--packed-rollout``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np
import torch

from reporting.tb_events import add_scalars


def normalized_logits(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities: ``logits - logsumexp(logits)``, as ``Categorical(logits=...)`` stores them."""
    return logits - logits.logsumexp(dim=-1, keepdim=True)


def sample_action(logits: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One action per row of ``logits`` and its log-probability; the same draws as
    ``Categorical(logits=logits).sample()`` from the same generator state."""
    logp = normalized_logits(logits)
    action = torch.multinomial(torch.softmax(logp, dim=-1), 1, True, generator=generator).squeeze(-1)
    return action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)


def sample_inverse_cdf(logits: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One action per row of ``logits`` and its log-probability, drawn from the same distribution as
    :func:`sample_action` but with fewer calls: one uniform number per row, placed on the
    cumulative probabilities (scaled by their total, so rounding never leaves a gap at the top).
    Actions of probability 0 (``-inf`` logits) are never drawn. Not the same random stream as
    ``Categorical``: the rollout of :class:`PackedPolicy` uses it; ``tests/test_lean.py`` checks the
    distribution (chi-square)."""
    logp = torch.log_softmax(logits, dim=-1)
    cumulative = logp.exp().cumsum(dim=-1)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device, dtype=cumulative.dtype)
    action = torch.searchsorted(cumulative, u * cumulative[:, -1:], right=True).clamp_max_(logits.shape[-1] - 1)
    return action.squeeze(-1), logp.gather(-1, action).squeeze(-1)


def log_prob_entropy(logits: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Categorical(logits=logits)``'s ``log_prob(action)`` and ``entropy()`` (and gradients),
    without the distribution object."""
    logp = normalized_logits(logits)
    log_prob = logp.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
    clamped = torch.clamp(logp, min=torch.finfo(logp.dtype).min)  # as Categorical.entropy: -inf logits give 0
    entropy = -(clamped * torch.softmax(logp, dim=-1)).sum(-1)
    return log_prob, entropy


class EpisodeLog:
    """Finished episodes of one rollout, written once per update instead of once per episode.

    ``add`` records an episode with the global step it ended at; ``flush`` writes, for each in
    order, the log line ``global_step=<step> episodic_return=<r> game=<game>`` (one ``print``
    for all of them) and the scalars ``charts/episodic_return``, ``charts/episodic_length`` and
    ``charts/<game>/episodic_return`` at that step: the same lines and events as writing each
    when it ends.
    """

    def __init__(self, game: str, writer: Any, printer: Callable[[str], None]) -> None:
        self.game, self.writer, self.printer = game, writer, printer
        self.pending: list[tuple[int, float, int]] = []

    def add(self, step: int, info: dict[str, np.ndarray]) -> None:
        """The episodes that ended in ``info`` (an environment step's), at global step ``step``."""
        for i in np.flatnonzero(info["game_over"]):
            self.pending.append((step, float(info["episode_return"][i]), int(info["episode_length"][i])))

    def flush(self) -> None:
        """Write the pending episodes: one ``print``, and per episode one event with its three
        scalars (what ``add_scalar`` writes as three events: the same tags, values and step)."""
        if not self.pending:
            return
        self.printer("\n".join(f"global_step={step} episodic_return={r:g} game={self.game}" for step, r, _ in self.pending))
        for step, r, length in self.pending:
            add_scalars(self.writer, [("charts/episodic_return", r), ("charts/episodic_length", length),
                                      (f"charts/{self.game}/episodic_return", r)], step)
        self.pending.clear()


class Minibatches:
    """An update's batch, taken one minibatch at a time with one ``index_select`` per tensor.

    Built once per update. The per-sample numbers (old log-probabilities, advantages, returns and
    values) are the rows of one table, so a minibatch takes them in one call instead of four.
    Observations of 0/1 cells (``obs_scale`` 1, MinAtar) are made float, in the trunk's memory
    format, here once per update instead of once per minibatch: the values
    :meth:`agents.network.Agent.features` would compute, which then has nothing left to do. A
    channels-last batch is held as (N, H, W, C), so that taking rows keeps its layout. Pixel
    observations stay uint8 (their float batch would be large).

    Input channels that are zero in the whole batch are dropped from these float observations and
    listed in ``channels`` (the ones kept), for the trunk's first convolution to skip
    (:meth:`agents.network.Agent.run_trunk`): a MinAtar game fills only its own leading channels of
    the shared 10 (Breakout 4), and their zeros add nothing to the convolution or its gradient. (Not
    where the first convolution has forward hooks, which would see a call with fewer channels.)
    """

    def __init__(self, agent: Any, obs: torch.Tensor, actions: torch.Tensor, logprobs: torch.Tensor,
                 advantages: torch.Tensor, returns: torch.Tensor, values: torch.Tensor, skip_empty_channels: bool = True) -> None:
        if agent.obs_scale == 1:
            obs = obs.float()
        self.channels: torch.Tensor | None = None
        first = agent.trunk[0]
        plain_conv = isinstance(first, torch.nn.Conv2d) and not (first._forward_hooks or first._forward_pre_hooks)
        if skip_empty_channels and plain_conv and obs.is_floating_point() and obs.dim() == 4 and agent.trunk_fn is None:
            used = obs.amax(dim=(0, 2, 3)) != 0
            if bool(used.any()) and not bool(used.all()):
                self.channels = used.nonzero().view(-1)
                obs = obs.index_select(1, self.channels)
        self.channels_last = obs.is_floating_point() and obs.dim() == 4 and agent.memory_format is torch.channels_last
        self.obs = obs.permute(0, 2, 3, 1).contiguous() if self.channels_last else obs
        self.actions = actions
        self.table = torch.stack([logprobs, advantages, returns, values])

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(obs, actions, logprobs, advantages, returns, values)`` of the samples ``index``; ``obs``
        holds the input channels ``self.channels`` (all when None)."""
        obs = self.obs.index_select(0, index)
        if self.channels_last:
            obs = obs.permute(0, 3, 1, 2)  # an (N, C, H, W) view in channels-last memory
        logprobs, advantages, returns, values = self.table.index_select(1, index).unbind(0)
        return obs, self.actions.index_select(0, index), logprobs, advantages, returns, values


class PackedPolicy:
    """Game ``game``'s policy for the rollout, on weights packed when it is built (build one per rollout:
    the weights must not change while it is used, and between updates they do not).

    For a few observations of 10x10 cells the modules' set-up outweighs their arithmetic
    (docs/scale_minatar.md). Here each 3x3 stride-1 convolution is one ``index_select``
    of its receptive fields (indices computed once) and one ``addmm`` against the weight as a
    (C*9, O) matrix, giving channels-last rows; the Linear's columns are permuted to that
    order once, so no layout change happens per step; the actor and critic are one ``addmm``.
    Sampling is :func:`sample_inverse_cdf` on the actor's logits (the same distribution as
    :func:`sample_action`, another random stream).
    """

    def __init__(self, agent: Any, game: int, used_channels: int | None = None) -> None:
        """``used_channels``: the observations' channels from this one on are always zero (a MinAtar
        game's, :attr:`envs.minatar.MinAtarVecEnv.used_channels`), so the first convolution skips them."""
        if not self.supports(agent):
            raise ValueError("PackedPolicy needs a fp32 trunk of 3x3 stride-1 convolutions and one Linear")
        if used_channels is not None and used_channels < 1:
            raise ValueError(f"used_channels={used_channels} is out of range: allowed >= 1 (or None: all)")
        layers = list(agent.trunk)
        convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
        linear = next(m for m in layers if isinstance(m, torch.nn.Linear))
        channels, height, width = agent.obs_shape
        self.obs_scale = agent.obs_scale
        self.convs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
        with torch.no_grad():
            channels_last_input = False  # observations arrive as (C, H, W); every conv's output as (H, W, C)
            for i, conv in enumerate(convs):
                out_h, out_w = height - 2, width - 2
                used = channels if i > 0 or used_channels is None else min(used_channels, channels)
                index = _receptive_fields(used, height, width, channels_last_input).to(conv.weight.device)
                weight = conv.weight[:, :used].reshape(conv.out_channels, -1).t().contiguous()  # rows in (c, dy, dx) order
                self.convs.append((index, weight, conv.bias.detach().clone(), out_h * out_w))
                channels, height, width, channels_last_input = conv.out_channels, out_h, out_w, True
            columns = linear.weight.view(linear.out_features, channels, height, width).permute(0, 2, 3, 1)
            self.linear_weight = columns.reshape(linear.out_features, -1).t().contiguous()
            self.linear_bias = linear.bias.detach().clone()
            actor, critic = agent.heads[game]
            self.actions = actor.out_features
            self.head_weight = torch.cat([actor.weight, critic.weight]).t().contiguous()
            self.head_bias = torch.cat([actor.bias, critic.bias])

    @staticmethod
    def supports(agent: Any) -> bool:
        """A plain fp32 trunk (no ``trunk_fn``, no autocast) of valid 3x3 stride-1 convolutions, ReLUs,
        one Flatten and one Linear + ReLU: MinAtar's."""
        kinds = [type(m) for m in agent.trunk]
        convs = [m for m in agent.trunk if isinstance(m, torch.nn.Conv2d)]
        shape_ok = (len(convs) >= 1 and kinds == [torch.nn.Conv2d, torch.nn.ReLU] * len(convs)
                    + [torch.nn.Flatten, torch.nn.Linear, torch.nn.ReLU])
        convs_ok = all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (0, 0) and c.dilation == (1, 1)
                       and c.groups == 1 and c.bias is not None and c.padding_mode == "zeros" for c in convs)
        return shape_ok and convs_ok and agent.trunk_fn is None and isinstance(agent.trunk_precision(), contextlib.nullcontext)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The sampled action, its log-probability and the value of each observation in ``x`` (uint8)."""
        n = x.shape[0]
        h = x.reshape(n, -1).float()
        if self.obs_scale != 1:
            h = h * self.obs_scale
        for index, weight, bias, positions in self.convs:
            h = torch.addmm(bias, h.index_select(1, index).view(n * positions, -1), weight).relu_().view(n, -1)
        h = torch.addmm(self.linear_bias, h, self.linear_weight).relu_()
        out = torch.addmm(self.head_bias, h, self.head_weight)
        action, logprob = sample_inverse_cdf(out[:, : self.actions])
        return action, logprob, out[:, self.actions]


def _receptive_fields(channels: int, height: int, width: int, channels_last: bool) -> torch.Tensor:
    """Indices into one flattened input, (C, H, W) or (H, W, C) order, of every 3x3 receptive field of a
    valid convolution: row p = (y, x) of the output, columns in the (c, dy, dx) order of
    ``Conv2d.weight.reshape(O, -1)``; flattened to one vector for ``index_select``."""
    out_h, out_w = height - 2, width - 2
    y = torch.arange(out_h).view(-1, 1, 1, 1, 1) + torch.arange(3).view(1, 1, 1, 3, 1)
    x = torch.arange(out_w).view(1, -1, 1, 1, 1) + torch.arange(3).view(1, 1, 1, 1, 3)
    c = torch.arange(channels).view(1, 1, -1, 1, 1)
    flat = (y * width + x) * channels + c if channels_last else (c * height + y) * width + x
    return flat.reshape(-1)
