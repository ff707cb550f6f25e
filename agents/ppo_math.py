"""The PPO loop's arithmetic and optimizer bookkeeping, as small functions tested on their own.

``agents/ppo_continual.py`` calls these so that its loop stays one readable page:

- :func:`compute_gae`: generalized advantage estimation over a rollout, where a step cut by the
  time limit (``--bootstrap-time-limits``) is not an end of the game: its target bootstraps from
  the value of the game's final observation;
- :func:`normalize_advantages`: the advantage normalization, applied to the whole batch once
  (``--norm-adv-scope batch``, the authors' code) or to each minibatch (cleanrl);
- :func:`build_optimizer` / :func:`optimizer_covers`: a fresh Adam per game (cleanrl-style runs
  of this project) or one Adam over the trunk and every head for the whole sequence, its
  state carried from game to game (the authors' code, ``--no-optimizer-per-game``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    gamma: float,
    gae_lambda: float,
    final_values: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (value targets) of a ``(T, N)`` rollout.

    ``dones[t]`` is 1 where the observation of step ``t`` starts a new game (the previous step
    ended one); ``next_value``/``next_done`` are those of the observation after the rollout.
    ``final_values`` (``(T, N)``, or None) holds, at each step cut by the time limit but not
    terminated, the value of that game's final observation, and 0 elsewhere: the step's one-step
    target becomes ``r_t + gamma * V(final)`` instead of ``r_t`` (the game did not end, only its
    recording did), while the trace still stops there (the next observation belongs to another
    game). Without it a truncated step is treated as terminal (cleanrl)."""
    # On the CPU the recursion runs on numpy views of the same float32 tensors: the same operations in
    # the same order (bit-identical results) at a fraction of torch's per-call cost on (N,) rows.
    host = rewards.device.type == "cpu"
    if host:
        rewards, values, dones, next_value, next_done = (t.numpy() for t in (rewards, values, dones, next_value, next_done))
        final_values = final_values.numpy() if final_values is not None else None
    zeros_like = np.zeros_like if host else torch.zeros_like
    steps = rewards.shape[0]
    advantages = zeros_like(rewards)
    lastgaelam = zeros_like(next_value.reshape(-1))
    for t in reversed(range(steps)):
        if t == steps - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value.reshape(-1)
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        if final_values is not None:
            delta = delta + gamma * final_values[t]
        lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        advantages[t] = lastgaelam
    if host:
        advantages, values = torch.from_numpy(advantages), torch.from_numpy(values)
    return advantages, advantages + values


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit (unbiased) standard deviation over all of ``advantages``."""
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def build_optimizer(trunk: nn.Module, heads: nn.ModuleList, game: int, lr: float, per_game: bool,
                    fused: bool = False) -> torch.optim.Adam:
    """Adam (eps 1e-5, as cleanrl and the authors) over the trunk and the heads it trains.

    ``per_game``: the trunk and game ``game``'s head, one parameter group (a fresh Adam each game).
    Otherwise one group for the trunk and one per head that exists (``heads[0..]``); later heads
    join with :func:`optimizer_covers`. Heads of finished games get no gradient (their loss is
    not computed), so Adam leaves them untouched: unlike the authors' code, where zeroed (not
    ``None``) gradients let Adam's momentum keep moving old heads. ``fused``: torch's fused Adam
    kernel (``--fused-adam``), the same update up to float rounding."""
    fused_flag = fused or None
    if per_game:
        return torch.optim.Adam(list(trunk.parameters()) + list(heads[game].parameters()), lr=lr, eps=1e-5, fused=fused_flag)
    groups = [{"params": list(trunk.parameters())}] + [{"params": list(h.parameters())} for h in heads]
    return torch.optim.Adam(groups, lr=lr, eps=1e-5, fused=fused_flag)


def optimizer_covers(optimizer: torch.optim.Optimizer, heads: nn.ModuleList) -> None:
    """Add to a sequence-wide optimizer (one group per head after the trunk's) the heads created
    since it was built, so that a new game's head trains in the same Adam."""
    while len(optimizer.param_groups) < 1 + len(heads):
        head = heads[len(optimizer.param_groups) - 1]
        optimizer.add_param_group({"params": list(head.parameters())})


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


__all__ = ("build_optimizer", "compute_gae", "normalize_advantages", "optimizer_covers", "set_lr")
