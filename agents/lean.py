"""The lean rollout: what the PPO loop does per environment step and per update, with fewer calls.

MinAtar's network is so small that Python and dispatch overhead, not arithmetic, bound a
training step on a CPU (issue 19). This module holds the pieces that remove that overhead
without changing what is computed:

- :func:`sample_action` and :func:`log_prob_entropy` work on the logits directly instead of
  building a ``torch.distributions.Categorical`` per call. They run the same tensor operations
  as ``Categorical(logits=...)`` (normalize by ``logsumexp``, ``softmax``, ``torch.multinomial``
  with replacement, ``gather``, the clamped ``p log p`` sum), so actions, log-probabilities,
  entropies and their gradients are bit-identical to it and the random stream is consumed the
  same way (``tests/test_lean.py``);
- :class:`EpisodeLog` collects finished episodes during a rollout and writes their log lines
  and TensorBoard scalars once per update, at the global steps they finished at.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from agents.tb_events import add_scalars


def normalized_logits(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities: ``logits - logsumexp(logits)``, as ``Categorical(logits=...)`` stores them."""
    return logits - logits.logsumexp(dim=-1, keepdim=True)


def sample_action(logits: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One action per row of ``logits`` and its log-probability; the same draws as
    ``Categorical(logits=logits).sample()`` from the same generator state."""
    logp = normalized_logits(logits)
    action = torch.multinomial(torch.softmax(logp, dim=-1), 1, True, generator=generator).squeeze(-1)
    return action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)


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
