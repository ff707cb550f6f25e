"""The PPO loop's arithmetic and optimizer bookkeeping, as small functions tested on their own.

``agents/ppo_continual.py`` calls these so that its loop stays one readable page:

- :func:`compute_gae`: generalized advantage estimation over a rollout, where a step cut by the
  time limit (``--bootstrap-time-limits``) is not an end of the game: its target bootstraps from
  the value of the game's final observation;
- :func:`normalize_advantages`: the advantage normalization, applied to the whole batch once
  (``--norm-adv-scope batch``, the authors' code) or to each minibatch (cleanrl);
- :func:`build_optimizer` / :func:`optimizer_covers`: a fresh Adam per game (cleanrl-style runs
  of this project) or one Adam over the trunk and every head for the whole sequence, its
  state carried from game to game (the authors' code, ``--no-optimizer-per-game``);
- :func:`ppo_loss`: the minibatch's PPO loss with its gradient in the logits and values computed in
  one pass (``--fused-loss``), the same numbers up to rounding as :func:`ppo_loss_autograd`, cleanrl's
  expression through autograd (``--no-fused-loss``); both take the same arguments;
- :func:`make_update`: the update of one minibatch as one function (forward, loss, penalty,
  backward, clip, optimizer step, the method's ``after_step``), its implementations chosen once
  when it is made: the shape ``torch.compile`` or a CUDA graph can wrap.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from agents.lean import log_prob_entropy


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    gamma: float,
    gae_lambda: float,
    final_values: Optional[torch.Tensor] = None,
    autoreset: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (value targets) of a ``(T, N)`` rollout.

    ``dones[t]`` is 1 where the observation of step ``t`` starts a new game (the previous step
    ended one); ``next_value``/``next_done`` are those of the observation after the rollout.
    ``final_values`` (``(T, N)``, or None) holds, at each step cut by the time limit but not
    terminated, the value of that game's final observation, and 0 elsewhere: the step's one-step
    target becomes ``r_t + gamma * V(final)`` instead of ``r_t`` (the game did not end, only its
    recording did), while the trace still stops there (the next observation belongs to another
    game). Without it a truncated step is treated as terminal (cleanrl).

    ``autoreset`` (``(T, N)`` of 0/1, or None) marks the steps of a next-step-autoreset
    environment (Atari) that only started a new game: their action was ignored and they lead
    from the ended game's final observation to the new game's first one with reward 0, which is
    no transition of either game. Their advantage is 0 and their return their own value (no
    learning signal); nothing flows across them, since ``dones`` already cuts the trace there."""
    # On the CPU the recursion runs on numpy views of the same float32 tensors: the same operations in
    # the same order (bit-identical results), with less per-call cost on (N,) rows than torch's.
    host = rewards.device.type == "cpu"
    if host:
        rewards, values, dones, next_value, next_done = (t.numpy() for t in (rewards, values, dones, next_value, next_done))
        final_values = final_values.numpy() if final_values is not None else None
        autoreset = autoreset.numpy() if autoreset is not None else None
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
        if autoreset is not None:
            lastgaelam = lastgaelam * (1.0 - autoreset[t])
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


def ppo_loss_autograd(logits: torch.Tensor, value: torch.Tensor, action: torch.Tensor, old_logprob: torch.Tensor,
                      advantages: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor, *, clip_coef: float,
                      clip_vloss: bool, ent_coef: float, vf_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cleanrl's PPO loss of one minibatch as a plain autograd expression (``--no-fused-loss``; the
    reference :func:`ppo_loss` is tested against), with :func:`ppo_loss`'s arguments: the clipped
    surrogate, the (clipped) value loss and the entropy bonus, and the same logging stats."""
    newlogprob, entropy = log_prob_entropy(logits, action)
    logratio = newlogprob - old_logprob
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    pg_loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    newvalue = value.view(-1)
    if clip_vloss:
        v_unclipped = (newvalue - returns) ** 2
        v_clipped = old_values + torch.clamp(newvalue - old_values, -clip_coef, clip_coef)
        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef
    stats = torch.stack([pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac]).detach()
    return loss, stats


class PPOLoss(torch.autograd.Function):
    """cleanrl's PPO loss of one minibatch, ``pg_loss - ent_coef * entropy + vf_coef * v_loss``, and its
    gradient with respect to the actor's logits and the critic's values, both computed in the forward
    pass instead of by autograd's graph of many small operations (docs/scale_minatar.md).

    The gradient follows autograd's conventions for the reference expression
    (:func:`ppo_loss_autograd`, the loop's ``--no-fused-loss`` path): ``max`` splits a tie in half,
    ``clamp`` passes its closed range. The surrogate's two terms tie exactly where the ratio is inside
    the clip range (the clamp returns the ratio itself), so there the whole gradient flows. Logits must be finite (the actor's are). Also
    returns, without gradient, ``(pg_loss, v_loss, entropy, old_approx_kl, approx_kl, clipfrac)`` for
    logging, computed as cleanrl does. Use it through :func:`ppo_loss`.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, value: torch.Tensor, action: torch.Tensor,  # type: ignore[override]
                old_logprob: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor,
                clip_coef: float, clip_vloss: bool, ent_coef: float, vf_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
        inv_n = 1.0 / logits.shape[0]
        logp = torch.log_softmax(logits, dim=-1)
        p = logp.exp()
        plogp = p * logp
        entropy = plogp.sum(-1).neg_()
        index = action.long().unsqueeze(-1)
        logratio = logp.gather(-1, index).squeeze(-1) - old_logprob
        ratio = logratio.exp()
        neg_adv = advantages.neg()
        unclipped = neg_adv * ratio
        clipped = neg_adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)
        pg_loss = torch.maximum(unclipped, clipped).mean()
        # d pg_i / d ratio_i = -A_i where the ratio is inside the clip range (a tie: half through each term,
        # the clamp passes the other half) or where the unclipped term is the larger, else 0
        inside = (ratio >= 1 - clip_coef) & (ratio <= 1 + clip_coef)
        flows = (inside | (unclipped > clipped)).to(logits.dtype)
        grad_logratio = neg_adv.mul_(flows).mul_(ratio).mul_(inv_n)
        # d/dlogits: log-probability: (onehot - p) * grad_logratio; -ent_coef * entropy: ent_coef/n * p (logp + H)
        grad_logits = (plogp + p * entropy.unsqueeze(-1)).mul_(ent_coef * inv_n)
        grad_logits.sub_(p * grad_logratio.unsqueeze(-1)).scatter_add_(-1, index, grad_logratio.unsqueeze(-1))

        v = value.reshape(-1)
        diff = v - returns
        if clip_vloss:
            delta = v - old_values
            diff_clipped = old_values + delta.clamp(-clip_coef, clip_coef) - returns
            sq, sq_clipped = diff.square(), diff_clipped.square()
            v_loss = 0.5 * torch.maximum(sq, sq_clipped).mean()
            w = (sq > sq_clipped).to(v.dtype).add_((sq == sq_clipped).to(v.dtype), alpha=0.5)  # max: ties split
            clamp_passes = (delta >= -clip_coef) & (delta <= clip_coef)
            grad_value = diff.mul_(w).add_(diff_clipped.mul_((1 - w).mul_(clamp_passes)))
        else:
            v_loss = 0.5 * diff.square().mean()
            grad_value = diff
        grad_value.mul_(vf_coef * inv_n)

        entropy_loss = entropy.mean()
        loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef
        with torch.no_grad():
            stats = torch.stack([pg_loss, v_loss, entropy_loss, logratio.neg().mean(), ((ratio - 1) - logratio).mean(),
                                 ((ratio - 1.0).abs() > clip_coef).to(logits.dtype).mean()])
        ctx.save_for_backward(grad_logits, grad_value.view_as(value))
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_stats: torch.Tensor) -> tuple:  # type: ignore[override]
        grad_logits, grad_value = ctx.saved_tensors
        return grad_logits * grad_loss, grad_value * grad_loss, None, None, None, None, None, None, None, None, None


def ppo_loss(logits: torch.Tensor, value: torch.Tensor, action: torch.Tensor, old_logprob: torch.Tensor,
             advantages: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor, *, clip_coef: float,
             clip_vloss: bool, ent_coef: float, vf_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch's PPO loss (differentiable in ``logits`` and ``value``) and its logging stats
    ``(pg_loss, v_loss, entropy, old_approx_kl, approx_kl, clipfrac)``: see :class:`PPOLoss`.
    ``advantages`` are used as given (normalize them first where the run does)."""
    return PPOLoss.apply(logits, value, action, old_logprob, advantages, returns, old_values,
                         clip_coef, clip_vloss, ent_coef, vf_coef)


#: the order of the loss's logging stats (:func:`ppo_loss`, :func:`ppo_loss_autograd`, :func:`make_update`)
STATS = ("pg_loss", "v_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac")
APPROX_KL, CLIPFRAC = STATS.index("approx_kl"), STATS.index("clipfrac")
#: one minibatch: ``(obs, actions, logprobs, advantages, returns, values)`` (:meth:`agents.lean.Minibatches.take`)
Minibatch = Sequence[torch.Tensor]
#: ``update(minibatch, channels, optimizer, lr, grads) -> (loss, penalty, stats)``: see :func:`make_update`
Update = Callable[[Minibatch, Optional[torch.Tensor], torch.optim.Optimizer, float, Any],
                  tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def make_update(agent: Any, game: int, method: Any, params: Sequence[torch.Tensor], args: Any,
                check_finite: Callable[[torch.Tensor], None]) -> Update:
    """The update of one minibatch of game ``game``, with every implementation chosen here, once:
    the loss (``ppo_loss`` or ``ppo_loss_autograd``, ``--fused-loss``), the penalty's backward
    (``method.add_penalty_grad()`` after ``backward()``, ``--fused-penalty`` on a method that has it,
    or ``method.penalty()`` in the loss) and ``check_finite`` (raises on a NaN/inf loss, at once or
    deferred: :meth:`agents.fastpath.FastPath.check_finite`).

    ``update(minibatch, channels, optimizer, lr, grads)`` normalizes the minibatch's advantages
    (``--norm-adv-scope minibatch``), runs the forward on the input ``channels`` kept
    (:class:`agents.lean.Minibatches`), back-propagates loss and penalty, records the gradient in
    ``grads`` (a :class:`agents.plasticity_metrics.GradNormMeter`, or None), clips to
    ``max_grad_norm`` over ``params``, steps ``optimizer`` and calls ``method.after_step(lr)``.
    It returns the loss and penalty (detached) and the loss's stats, in the order of :data:`STATS`."""
    loss_fn = ppo_loss if args.fused_loss else ppo_loss_autograd
    coefs = dict(clip_coef=args.clip_coef, clip_vloss=args.clip_vloss, ent_coef=args.ent_coef, vf_coef=args.vf_coef)
    per_minibatch = args.norm_adv and args.norm_adv_scope == "minibatch"  # else once per batch, or not at all
    max_norm, foreach = args.max_grad_norm, args.fused_adam or None

    def penalty_in_loss(ppo: torch.Tensor, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        penalty = method.penalty()
        loss = ppo + penalty
        check_finite(loss)
        optimizer.zero_grad()
        loss.backward()
        return loss.detach(), penalty.detach()

    def penalty_fused(ppo: torch.Tensor, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        check_finite(ppo)
        optimizer.zero_grad()
        ppo.backward()
        penalty = method.add_penalty_grad()  # its gradient added to .grad: no autograd graph for it
        return ppo.detach() + penalty, penalty

    backward = penalty_fused if args.fused_penalty and method.fused_penalty else penalty_in_loss

    def update(minibatch: Minibatch, channels: Optional[torch.Tensor], optimizer: torch.optim.Optimizer, lr: float,
               grads: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        obs, actions, logprobs, advantages, returns, values = minibatch
        if per_minibatch:
            advantages = normalize_advantages(advantages)
        logits, value = agent.logits_and_value(obs, game, channels)
        ppo, stats = loss_fn(logits, value, actions, logprobs, advantages, returns, values, **coefs)
        loss, penalty = backward(ppo, optimizer)
        if grads is not None:  # the gradient the optimizer gets, before clipping
            grads.add()
        nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)
        optimizer.step()
        method.after_step(lr)
        return loss, penalty, stats

    return update


__all__ = ("APPROX_KL", "CLIPFRAC", "Minibatch", "PPOLoss", "STATS", "Update", "build_optimizer", "compute_gae", "make_update", "normalize_advantages",
           "optimizer_covers", "ppo_loss", "ppo_loss_autograd", "set_lr")
