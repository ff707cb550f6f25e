"""Vectorized Atari games by name, with the standard DQN/PPO preprocessing, on two backends.

``make_atari("Boxing", num_envs=8, seed=1)`` gives an :class:`AtariVecEnv`: frame skip 4
(max-pooled over the last two frames), up to 30 no-op actions at reset, 84x84 grayscale,
4 stacked frames, FIRE at reset where the game needs it, and a cap of 27000 agent steps
(108000 frames) per game. ``backend="envpool"`` (default) and ``backend="ale"`` (ale-py's
threaded ``AtariVectorEnv``) run the same emulator and give the same observations and rewards.

Both backends run whole games with unclipped rewards underneath; this wrapper adds what
training needs, identically for both:

- ``train=True``: rewards are clipped to their sign and ``terminated`` also fires when a life
  is lost (episodic life), while the emulator keeps playing the same game;
- every mode: ``info["game_over"]`` marks the end of a *whole* game (real game over or the
  step cap) and ``info["episode_return"]`` / ``info["episode_length"]`` hold that game's
  unclipped score and length in agent steps (NaN / 0 elsewhere), so logged returns are real
  game scores, never per-life scores.

Autoreset is "next step" on both backends: the step after a game over ignores its action and
returns the first observation of a new game with reward 0. So the observation a step returns
is also the game's final observation where that step ended the game; ``info["final_obs"]`` is
that same array (the key :mod:`envs.minatar` fills with the observation before its reset), so
a truncated game bootstraps from its true final observation on every backend. The autoreset
step itself is no transition of either game: ``info["autoreset"]`` marks it, and the agent gives
it no advantage (:func:`agents.ppo_math.compute_gae`).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from envs import naming

BACKENDS = ("envpool", "ale")
FRAME_SKIP = 4
STACK = 4
OBS_SHAPE = (STACK, 84, 84)
#: The standard cap: 27000 agent steps = 108000 emulator frames (about 30 minutes of play).
MAX_EPISODE_FRAMES = 108_000
#: The eight games of the AGS-CL paper, in the paper's order.
PAPER_GAMES = ("StarGunner", "Boxing", "VideoPinball", "CrazyClimber", "Gopher", "Robotank", "DemonAttack", "NameThisGame")
#: Named game sequences usable wherever a list of games is expected.
SEQUENCES: dict[str, tuple[str, ...]] = {"paper": PAPER_GAMES}
LIST_HINT = "list them with `python -m envs --list`"
# ale-py ROMs that envpool 1.2.5 does not ship.
_NOT_IN_ENVPOOL = frozenset({"Combat", "Joust", "MazeCraze", "Warlords"})


def _camel(rom_id: str) -> str:
    return "".join(part.capitalize() for part in rom_id.split("_"))


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@lru_cache(maxsize=1)
def _rom_ids() -> dict[str, str]:
    """CamelCase game name -> ale-py ROM id (snake case), for every ROM ale-py ships."""
    from ale_py import roms

    return {_camel(rom): rom for rom in roms.get_all_rom_ids()}


def list_games(backend: str = "envpool") -> list[str]:
    """The game names (CamelCase) that ``backend`` can run."""
    check_backend(backend)
    names = _rom_ids()
    return sorted(n for n in names if backend == "ale" or n not in _NOT_IN_ENVPOOL)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def resolve_game(name: str, backend: str = "envpool") -> str:
    """Canonical CamelCase name of ``name`` ("boxing", "star_gunner", "StarGunner-v5" all work);
    ``ValueError`` with close matches and where to find the list when it is not a game."""
    games = list_games(backend)
    by_key = {_key(g): g for g in games}
    key = _key(re.sub(r"-v\d+$", "", name.strip()))
    if key in by_key:
        return by_key[key]
    if backend == "envpool" and key in {_key(g) for g in _NOT_IN_ENVPOOL}:
        raise ValueError(f"game {name!r} is not in envpool 1.2.5: use backend 'ale' for it")
    close = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(by_key[c] for c in close)}?)" if close else ""
    raise ValueError(f"unknown Atari game {name!r}{hint}: {LIST_HINT}, or use a named sequence ({', '.join(SEQUENCES)})")


def resolve_games(names: Sequence[str], backend: str = "envpool") -> list[str]:
    """Canonical names of ``names``, expanding named sequences (``paper``); no duplicates."""
    return naming.resolve_games(names, SEQUENCES, lambda name: resolve_game(name, backend), "atari")


class AtariVecEnv:
    """``num_envs`` copies of one Atari game; numpy in, numpy out (see the module docstring).

    ``step(actions)`` returns ``obs`` (uint8, ``(N, 4, 84, 84)``), ``reward`` (float32, clipped
    to its sign when ``train``), ``terminated`` (bool: game over, or a lost life when
    ``train``), ``truncated`` (bool: step cap) and ``info`` with ``raw_reward``, ``game_over``,
    ``episode_return``, ``episode_length``, ``lives`` and ``final_obs`` (``obs`` itself: next-step autoreset).
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        seed: int = 0,
        backend: str = "envpool",
        train: bool = True,
        max_episode_frames: int = MAX_EPISODE_FRAMES,
        noop_max: int = 30,
        num_threads: int = 0,
    ) -> None:
        check_backend(backend)
        self.game = resolve_game(game, backend)
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} is out of range: allowed num_envs >= 1")
        if max_episode_frames < FRAME_SKIP:
            raise ValueError(f"max_episode_frames={max_episode_frames} is out of range: allowed >= {FRAME_SKIP}")
        if noop_max < 1:  # envpool crashes (segfault) with noop_max=0
            raise ValueError(f"noop_max={noop_max} is out of range: allowed noop_max >= 1")
        self.num_envs, self.backend, self.train, self.seed = num_envs, backend, train, seed
        self.max_episode_steps = max_episode_frames // FRAME_SKIP
        if backend == "envpool":
            import envpool

            self._env = envpool.make(
                f"{self.game}-v5",
                env_type="gymnasium",
                num_envs=num_envs,
                seed=seed,
                num_threads=num_threads,
                episodic_life=False,  # done here, identically for both backends
                reward_clip=False,
                max_episode_steps=self.max_episode_steps,
                noop_max=noop_max,
                frame_skip=FRAME_SKIP,
                stack_num=STACK,
                img_height=84,
                img_width=84,
                use_fire_reset=True,
                repeat_action_probability=0.0,
            )
        else:
            from ale_py import AtariVectorEnv

            self._env = AtariVectorEnv(
                _rom_ids()[self.game],
                num_envs,
                num_threads=num_threads,
                max_num_frames_per_episode=self.max_episode_steps * FRAME_SKIP,
                repeat_action_probability=0.0,
                img_height=84,
                img_width=84,
                grayscale=True,
                stack_num=STACK,
                frameskip=FRAME_SKIP,
                maxpool=True,
                noop_max=noop_max,
                episodic_life=False,  # ale-py's episodic_life restarts the game at a life loss
                life_loss_info=False,
                reward_clipping=False,
                use_fire_reset=True,
            )
        self.action_count = int(self._env.single_action_space.n if backend == "ale" else self._env.action_space.n)
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._since_reset = np.zeros(num_envs, dtype=np.int64)
        self._resetting = np.zeros(num_envs, dtype=bool)

    # ale-py fills a fresh frame stack with black frames; envpool repeats the first frame.
    def _fill_stack(self, obs: np.ndarray) -> np.ndarray:
        if self.backend == "ale":
            for k in range(STACK - 1):
                rows = self._since_reset == k
                if rows.any():
                    first = STACK - 1 - k  # slot of the game's first frame
                    obs[rows, :first] = obs[rows, first : first + 1]
        return obs

    def reset(self) -> np.ndarray:
        """Start a new game in every copy (the first reset uses ``seed``)."""
        if self.backend == "envpool":
            obs, info = self._env.reset()
        else:
            obs, info = self._env.reset(seed=self.seed)
            self.seed += self.num_envs  # a later reset draws fresh no-op counts
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._since_reset[:] = 0
        self._resetting[:] = False
        self._lives = np.asarray(info["lives"], dtype=np.int64).copy()
        return self._fill_stack(np.array(obs, copy=True))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.send(actions)
        return self.recv()

    def send(self, actions: np.ndarray) -> None:
        """Start a step and return at once: the emulator threads run it while the caller works
        (e.g. infers on another group of environments); :meth:`recv` collects it."""
        self._env.send(np.asarray(actions, dtype=np.int64))

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The result of the step started by :meth:`send` (what :meth:`step` returns)."""
        obs, reward, terminated, truncated, info = self._env.recv()
        obs = np.array(obs, copy=True)
        raw = np.asarray(info["reward"] if self.backend == "envpool" else reward, dtype=np.float32).copy()
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        lives = np.asarray(info["lives"], dtype=np.int64)
        # The autoreset step of a copy whose game ended on the previous step: a new game.
        restarted = self._resetting
        self._since_reset = np.where(restarted, 0, self._since_reset + 1)
        obs = self._fill_stack(obs)
        game_over = terminated | truncated
        self._returns = np.where(restarted, 0.0, self._returns) + raw
        self._lengths = np.where(restarted, 0, self._lengths + 1)
        episode_return = np.where(game_over, self._returns, np.nan)
        episode_length = np.where(game_over, self._lengths, 0)
        if self.train:
            life_lost = (lives < self._lives) & ~restarted
            terminated = terminated | life_lost
            reward = np.sign(raw).astype(np.float32)
        else:
            reward = raw
        self._lives = lives.copy()
        self._resetting = game_over
        out_info = {
            "raw_reward": raw,
            "game_over": game_over,
            "episode_return": episode_return,
            "episode_length": episode_length,
            "lives": lives.copy(),
            "final_obs": obs,
            "autoreset": restarted.copy(),
        }
        return obs, reward, terminated, truncated, out_info

    def close(self) -> None:
        close = getattr(self._env, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "AtariVecEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The factory: ``make_atari(game, num_envs, seed=..., backend=..., train=...)``; training
#: (``train=True``: clipped rewards, episodic life) or evaluation (whole games, raw scores).
make_atari = AtariVecEnv
