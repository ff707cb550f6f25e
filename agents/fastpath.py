"""The agent's fast path: bf16 autocast, channels-last, env steps overlapped with inference, fewer syncs.

Each speed-up is one flag of ``agents/ppo_continual.py`` (``--bf16 auto|on|off``,
``--channels-last``, ``--overlap-env``, ``--fewer-syncs``); with all of them off the agent runs the *plain path*
(fp32, contiguous tensors, environment steps and inference in sequence), bit-reproducible
with a seed. ``bench/agent_throughput.py`` measures what each one buys.

What stays exact under autocast: only the trunk's forward (and so its backward) runs in
bf16. Parameters, gradients, Adam's state, the heads, the PPO losses and every regularizer
hook (AGS-CL's prox step, masks, Omega and anchors; EWC/MAS importances) stay fp32, and
:mod:`agscl` switches autocast off itself where it measures or edits weights.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import torch

from agents.runtime import NonFiniteLoss


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions clearly faster than fp32 (what ``--bf16 auto``
    asks): CUDA with native bf16 (Ampere or later), or a CPU with AMX tiles; elsewhere (an
    AVX512-BF16 CPU without AMX included, docs/scale.md) fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


class FastPath:
    """The resolved fast-path settings of one run and the few helpers the PPO loop calls.

    ``bf16`` is ``"on"``, ``"off"`` or ``"auto"`` (on where the device has fast bf16,
    :func:`fast_bf16`); ``overlap`` needs at least two environments. ``to_device`` moves a numpy
    array to the device (pinned and non-blocking on CUDA with ``fewer_syncs``); ``check_finite``
    raises :class:`agents.runtime.NonFiniteLoss` on a NaN/inf loss, chosen once: at once (plain
    path) or queued on the device and raised by :meth:`end_epoch` (``fewer_syncs``).
    """

    def __init__(self, args: Any, device: torch.device) -> None:
        self.device = device
        self.bf16 = args.bf16 == "on" or (args.bf16 == "auto" and fast_bf16(device))
        self.channels_last = bool(args.channels_last)
        self.overlap = bool(args.overlap_env) and args.num_envs >= 2
        self.fewer_syncs = bool(args.fewer_syncs)
        self.compile = bool(args.compile)
        self.pin = self.fewer_syncs and device.type == "cuda"
        self._bad: torch.Tensor | None = None
        self.check_finite: Callable[[torch.Tensor], None] = self._check_later if self.fewer_syncs else self._check_now

    def describe(self) -> str:
        on = [name for name, flag in (("bf16", self.bf16), ("channels-last", self.channels_last),
                                      ("overlap-env", self.overlap), ("fewer-syncs", self.fewer_syncs),
                                      ("compile", self.compile)) if flag]
        return "fast path: " + (", ".join(on) if on else "none (plain fp32 path)")

    def trunk_precision(self) -> ContextManager[Any]:
        """The context the trunk runs in: bf16 autocast (fp32 master weights) or nothing."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def apply(self, agent: Any) -> None:
        """Set the agent's trunk precision and input memory format."""
        agent.trunk_precision = self.trunk_precision
        agent.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # The compiled function reads the trunk's parameters as they are at each call, so AGS-CL's
        # in-place prox steps, masks and re-initializations act on it; batch sizes vary (rollout,
        # minibatch, evaluation), so shapes are dynamic from the start instead of recompiling.
        # (A bound method, not the compiled module: as an attribute that would become a submodule
        # and change the agent's state_dict.)
        agent.trunk_fn = torch.compile(agent.trunk, dynamic=True).__call__ if self.compile else None

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.pin:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    @staticmethod
    def _check_now(loss: torch.Tensor) -> None:
        """The plain path: one host sync per minibatch."""
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLoss(f"non-finite loss ({loss.item()})")

    def _check_later(self, loss: torch.Tensor) -> None:
        """``fewer_syncs``: queued on the device, raised by :meth:`end_epoch` (a run that fails stops
        one epoch later, never checkpointed)."""
        bad = ~torch.isfinite(loss.detach())
        self._bad = bad if self._bad is None else self._bad | bad

    def end_epoch(self) -> None:
        """Raise :class:`agents.runtime.NonFiniteLoss` if a loss checked later in this epoch was NaN/inf."""
        bad, self._bad = self._bad, None
        if bad is not None and bool(bad):
            raise NonFiniteLoss("non-finite loss in this epoch")


class SplitEnv:
    """One game's training environments as ``len(parts)`` groups stepped by ``send``/``recv``.

    With one group (the plain path) ``send`` then ``recv`` is a plain step. With two halves
    (``--overlap-env``) the PPO loop sends one half's actions and infers on the other half while
    the emulator threads step the first: inference and emulation overlap. Each half is its own
    vector environment with its own seed, so a run stays reproducible. Environments without
    ``send``/``recv`` (MinAtar, stepped in Python) step at ``recv``.
    """

    def __init__(self, make: Callable[[int, int], Any], num_envs: int, seed: int, parts: int) -> None:
        sizes = [num_envs // parts + (1 if k < num_envs % parts else 0) for k in range(parts)]
        starts = np.cumsum([0] + sizes)
        self.parts: list[slice] = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        self.envs: list[Any] = []
        try:
            for k, size in enumerate(sizes):
                self.envs.append(make(size, seed + 1_000_003 * k))
        except BaseException:
            self.close()
            raise
        self.num_envs, self.action_count = num_envs, self.envs[0].action_count
        #: observation channels from this one on are always zero, where the environment says so (MinAtar), else None
        self.used_channels: int | None = getattr(self.envs[0], "used_channels", None)
        self._pending: list[np.ndarray | None] = [None] * parts

    def reset(self) -> np.ndarray:
        return np.concatenate([env.reset() for env in self.envs])

    def send(self, k: int, actions: np.ndarray) -> None:
        env = self.envs[k]
        if hasattr(env, "send"):
            env.send(actions)
        else:
            self._pending[k] = actions

    def recv(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        env, actions = self.envs[k], self._pending[k]
        self._pending[k] = None
        return env.recv() if actions is None else env.step(actions)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """All groups at once (used outside the rollout, e.g. to collect importance observations)."""
        for k, part in enumerate(self.parts):
            self.send(k, actions[part])
        results = [self.recv(k) for k in range(len(self.parts))]
        obs, reward, term, trunc = (np.concatenate([r[i] for r in results]) for i in range(4))
        info = {key: np.concatenate([r[4][key] for r in results]) for key in results[0][4]}
        return obs, reward, term, trunc, info

    def close(self) -> None:
        for env in self.envs:
            env.close()


def duration(seconds: float) -> str:
    """``1d02h``, ``3h05m``, ``4m10s`` or ``12s``: an ETA at the precision that matters."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    days, hours, minutes = s // 86_400, s // 3600 % 24, s // 60 % 60
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s % 60:02d}s" if minutes else f"{s}s"


def progress_line(sps: float, game_left: int, sequence_left: int) -> str:
    """``SPS=... ETA game ... sequence ...`` from the training rate and the steps still to run
    (training only: evaluations and end-of-game importance come on top)."""
    rate = max(sps, 1e-9)
    return f"SPS={int(sps)} ETA game {duration(game_left / rate)} sequence {duration(sequence_left / rate)}"


__all__: Sequence[str] = ("FastPath", "SplitEnv", "duration", "fast_bf16", "progress_line")
