"""The rollout: ``num_steps`` steps of one game's training environments under a fixed policy.

:class:`Rollout` owns what a rollout needs between updates: the buffers, the environments'
current observations and game ends, and the finished episodes' log. :meth:`Rollout.collect`
runs the policy and returns one :class:`Batch`; the global step goes in and comes back in the
batch, so nothing outside changes behind the loop's back.

How it steps (``agents/fastpath.py`` :class:`~agents.fastpath.SplitEnv`): one group of all
environments, or two halves (``--overlap-env``) where each half's policy inference runs while
the other half steps. Per-step writes go to numpy arrays (host staging) and reach the device once
per rollout; on the CPU the batch's tensors share those arrays. A step cut by the time limit
(``--bootstrap-time-limits``) records the value of the game's final observation
(``final_values``, see :func:`agents.ppo_math.compute_gae`), and a next-step-autoreset
environment (Atari) marks the steps that only started a new game (``autoreset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from agents.lean import EpisodeLog

#: the rollout's policy: uint8 observations -> (action, log-probability, value), one per row
Policy = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class Batch:
    """One rollout on the device, ``(num_steps, num_envs)`` per field (observations
    ``(num_steps, num_envs, *obs_shape)`` uint8). Views of the :class:`Rollout`'s buffers: valid
    until its next :meth:`~Rollout.collect`."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor  # 1 where the step's observation starts a new game
    final_values: Optional[torch.Tensor]  # V(final observation) where the time limit cut the game, else 0; or None
    autoreset: Optional[torch.Tensor]  # 1 where the step only started a new game (Atari); or None
    next_obs: torch.Tensor  # the observation after the rollout, and its game end
    next_done: torch.Tensor
    global_step: int  # the global step after the rollout


class Rollout:
    """Rollouts of one game: ``env`` (a :class:`~agents.fastpath.SplitEnv`) is reset here, and every
    :meth:`collect` continues its games where the last one stopped.

    ``to_device`` moves a numpy array to the device (:meth:`agents.fastpath.FastPath.to_device`);
    ``value`` is the critic on device observations, used for ``final_values`` when
    ``bootstrap_time_limits``; ``autoreset``: the environment resets a finished game at its next
    step (``info["autoreset"]``); ``episodes`` logs the finished games once per rollout."""

    def __init__(self, env: Any, num_steps: int, obs_shape: tuple[int, ...], device: torch.device,
                 to_device: Callable[[np.ndarray], torch.Tensor], value: Callable[[torch.Tensor], torch.Tensor],
                 episodes: EpisodeLog, bootstrap_time_limits: bool, autoreset: bool) -> None:
        self.env, self.num_steps, self.to_device, self.value, self.episodes = env, num_steps, to_device, value, episodes
        shape = (num_steps, env.num_envs)
        self.obs = torch.zeros(shape + obs_shape, dtype=torch.uint8, device=device)
        self.actions = torch.zeros(shape, dtype=torch.long, device=device)
        self.logprobs = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        # rewards, game ends and autoreset marks are staged in numpy (cheaper per write than a torch
        # index write, docs/scale_minatar.md) and reach the device once per rollout
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.dones = np.zeros(shape, dtype=np.float32)
        self.autoreset = np.zeros(shape, dtype=np.float32) if autoreset else None
        self.final_values = torch.zeros(shape, device=device) if bootstrap_time_limits else None
        self.next_obs = np.array(env.reset(), dtype=np.uint8)
        self.next_done = np.zeros(env.num_envs, dtype=np.float32)

    def collect(self, policy: Policy, global_step: int) -> Batch:
        """``num_steps`` steps of every environment under ``policy`` (its weights must not change
        meanwhile), starting at ``global_step``; finished games are logged at the step they ended."""
        env, obs, actions, logprobs, values = self.env, self.obs, self.actions, self.logprobs, self.values
        to_device, next_obs, next_done, dones = self.to_device, self.next_obs, self.next_done, self.dones
        last = self.num_steps - 1
        with torch.inference_mode():  # no autograd bookkeeping; results written in place into the buffers
            for step in range(self.num_steps):
                for k, part in enumerate(env.parts):
                    if step > 0:
                        global_step = self.receive(k, step - 1, global_step)
                    obs[step, part] = observation = to_device(next_obs[part])
                    dones[step, part] = next_done[part]
                    action, logprobs[step, part], values[step, part] = policy(observation)
                    actions[step, part] = action
                    env.send(k, action.cpu().numpy())
            for k in range(len(env.parts)):
                global_step = self.receive(k, last, global_step)
        self.episodes.flush()
        return Batch(obs, actions, logprobs, values, to_device(self.rewards), to_device(dones), self.final_values,
                     None if self.autoreset is None else to_device(self.autoreset), to_device(next_obs),
                     to_device(next_done), global_step)

    def receive(self, k: int, step: int, global_step: int) -> int:
        """Environment group ``k``'s result of ``step``, which ends at ``global_step`` plus the group's
        size: the new global step."""
        part = self.env.parts[k]
        o, reward, term, trunc, info = self.env.recv(k)
        global_step += part.stop - part.start
        self.rewards[step, part] = reward
        self.next_obs[part] = o
        self.next_done[part] = term | trunc
        if self.autoreset is not None:
            self.autoreset[step, part] = info["autoreset"]
        if self.final_values is not None:
            cut = np.flatnonzero(trunc & ~term)  # the game goes on: bootstrap from its final observation
            self.final_values[step, part] = 0.0
            if len(cut):
                with torch.no_grad():
                    v = self.value(self.to_device(info["final_obs"][cut])).flatten()
                self.final_values[step, part.start + torch.from_numpy(cut).to(v.device)] = v
        if info["game_over"].any():
            self.episodes.add(global_step, info)
        return global_step
