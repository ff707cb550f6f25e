"""Evaluation of a continual agent: whole games with a game's head, and the random-policy score.

Evaluation never touches torch's or numpy's global random generators: actions are sampled
from a generator seeded by the evaluation's own seed, so how often a run evaluates cannot
change what it learns (same seed, same losses, whatever ``--eval-every``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from agents.plasticity_metrics import dormant_fraction  # noqa: F401 - its home before agents/plasticity_metrics.py
from agscl.base import eval_mode


def play_games(env: Any, policy: Callable[[np.ndarray], np.ndarray], episodes: int) -> dict[str, Any]:
    """Play ``episodes`` whole games on ``env`` (one per copy in turn) and return raw-score stats.

    Episodes are split evenly over the environment copies in advance (each plays its own
    quota), so short games are not over-represented as they would be by taking the first N to
    finish. ``policy`` maps a batch of observations to actions.
    """
    n_envs = env.num_envs
    quota = np.full(n_envs, episodes // n_envs)
    quota[: episodes % n_envs] += 1
    done = np.zeros(n_envs, dtype=np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    obs = env.reset()
    while (done < quota).any():
        obs, _, _, _, info = env.step(policy(obs))
        counted = info["game_over"] & (done < quota)
        returns.extend(info["episode_return"][counted].tolist())
        lengths.extend(info["episode_length"][counted].tolist())
        done += counted
    r = np.asarray(returns, dtype=np.float64)
    return {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()), "max": float(r.max()),
            "episodes": int(r.size), "mean_length": float(np.mean(lengths)), "returns": r.tolist()}


@torch.no_grad()
def evaluate(agent: Any, game_index: int, env: Any, episodes: int, device: torch.device, seed: int,
             greedy: bool = False) -> dict[str, Any]:
    """Play ``episodes`` whole games with head ``game_index``; actions sampled from a private
    generator seeded with ``seed`` (the global generators are left untouched)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.act(torch.from_numpy(obs).to(device), game_index, greedy=greedy, generator=generator).cpu().numpy()

    with eval_mode(agent):  # restores every module's own train/eval flag afterwards
        return play_games(env, policy, episodes)


def evaluate_random(env: Any, episodes: int, seed: int) -> dict[str, Any]:
    """The uniform random policy over the game's action set, played by the same code as
    :func:`evaluate`: the baseline that the RL metrics shift scores by."""
    rng = np.random.default_rng(seed)
    return play_games(env, lambda obs: rng.integers(0, env.action_count, size=obs.shape[0]), episodes)


@torch.no_grad()
def collect_observations(agent: Any, env: Any, obs: np.ndarray, game_index: int, count: int,
                         device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` observations of the game, played by the trained policy (uint8, on the CPU)."""
    out = torch.empty((count,) + obs.shape[1:], dtype=torch.uint8)
    filled = 0
    while filled < count:
        take = min(count - filled, obs.shape[0])
        out[filled : filled + take] = torch.from_numpy(obs[:take])
        filled += take
        if filled < count:
            action = agent.act(torch.from_numpy(obs).to(device), game_index)
            obs, *_ = env.step(action.cpu().numpy())
    return out, obs
