"""The continual agent's network: a shared CNN trunk and one (actor, critic) head pair per game.

The trunk is a plain Conv-ReLU-...-Linear-ReLU chain, the model contract of :mod:`agscl`:
Nature-CNN for Atari, MinAtar's conv16 + fc128 for ``--suite minatar``. ``--activation crelu``
puts CReLU in place of each ReLU and ``--layer-norm`` a LayerNorm before each activation
(:mod:`agents.layers`; docs/agent.md, "Trunk options"). How the trunk runs
(precision, memory format) is set by :class:`agents.fastpath.FastPath`; the defaults here
are the plain fp32 path.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from agents.layers import ChannelLayerNorm, CReLU
from agents.lean import log_prob_entropy, sample_action
from envs.suites import get_suite


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def torch_default_init(layer: nn.Module) -> nn.Module:
    """PyTorch's own initialization of the layer (Kaiming-uniform weights, uniform biases): the
    authors' trunk, whose conv1-3 and linear1 are built without their ``init_``."""
    layer.reset_parameters()
    return layer


#: ``--trunk-init``: how the trunk's layers are initialized, and how AGS-CL's (I.2) re-draws them.
TRUNK_INITS: dict[str, Callable[[nn.Module], nn.Module]] = {"orthogonal": layer_init, "torch_default": torch_default_init}


#: (kernel, stride) of each conv of the trunk, per suite (MinAtar: every conv is 3x3/1).
CONV_LAYOUTS: dict[str, tuple[tuple[int, int], ...]] = {"atari": ((8, 4), (4, 2), (3, 1)), "minatar": ((3, 1),)}


def trunk_layout(suite: str, convs: int) -> tuple[tuple[int, int], ...]:
    layout = CONV_LAYOUTS[suite]
    return layout if suite == "atari" else layout * convs


#: ``--activation`` choices: outputs per unit (CReLU gives each unit two, relu(x) and relu(-x))
ACTIVATION_OUTPUTS: dict[str, int] = {"relu": 1, "crelu": 2}


def activation_block(units: int, activation: str, layer_norm: bool, conv: bool) -> list[nn.Module]:
    """What follows a Conv2d/Linear of ``units`` outputs: [LayerNorm,] activation. The default
    (relu, no LayerNorm) is the one ``nn.ReLU`` of the plain chain."""
    norm: list[nn.Module] = [ChannelLayerNorm(units) if conv else nn.LayerNorm(units)] if layer_norm else []
    return norm + [CReLU() if activation == "crelu" else nn.ReLU()]


class Agent(nn.Module):
    """Shared CNN trunk (a plain Conv-ReLU-...-Linear-ReLU chain, as :mod:`agscl` expects) and
    ``heads[g] = ModuleList([actor, critic])`` per game; inputs are uint8 observations that the
    agent scales by ``obs_scale`` (Atari pixels 1/255, MinAtar's 0/1 cells 1).

    ``channels`` and ``hidden`` count units (filters, the Linear's outputs) before the activation:
    with ``activation="crelu"`` each layer gives twice as many outputs, so the layer after it, and
    the heads, read twice as many inputs (``features_dim = 2 * hidden``). ``layer_norm``: a
    LayerNorm over each layer's units before its activation (over a conv's channels at each
    position). ``trunk_init``: a key of :data:`TRUNK_INITS` for the trunk's Conv2d/Linear layers."""

    def __init__(self, channels: Sequence[int], hidden: int, suite: str = "atari", activation: str = "relu",
                 layer_norm: bool = False, trunk_init: str = "orthogonal") -> None:
        super().__init__()
        if activation not in ACTIVATION_OUTPUTS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATION_OUTPUTS)}")
        if trunk_init not in TRUNK_INITS:
            raise ValueError(f"trunk_init={trunk_init!r} is not valid: choose one of {', '.join(TRUNK_INITS)}")
        init = TRUNK_INITS[trunk_init]
        spec = get_suite(suite)
        self.obs_scale = spec.obs_scale
        self.obs_shape = tuple(spec.obs_shape)
        self.activation, self.layer_norm = activation, bool(layer_norm)
        outputs = ACTIVATION_OUTPUTS[activation]
        layers: list[nn.Module] = []
        in_channels = spec.obs_shape[0]
        for out_channels, (kernel, stride) in zip(channels, trunk_layout(suite, len(channels))):
            layers += [init(nn.Conv2d(in_channels, out_channels, kernel, stride=stride)),
                       *activation_block(out_channels, activation, layer_norm, conv=True)]
            in_channels = out_channels * outputs
        layers.append(nn.Flatten())
        with torch.no_grad():
            flat = nn.Sequential(*layers)(torch.zeros((1,) + spec.obs_shape)).shape[1]
        self.trunk = nn.Sequential(*layers, init(nn.Linear(flat, hidden)),
                                   *activation_block(hidden, activation, layer_norm, conv=False))
        #: the last conv's index when its output is made contiguous in training (MinAtar, see run_trunk), else None
        self.contiguous_conv = max(i for i, m in enumerate(self.trunk) if isinstance(m, nn.Conv2d)) if suite == "minatar" else None
        self.hidden = hidden
        #: the trunk's output width, what each head reads: ``hidden`` units times their outputs (CReLU: 2)
        self.features_dim = hidden * outputs
        self.heads = nn.ModuleList()
        # set by agents.fastpath.FastPath.apply; these defaults are the plain fp32 path
        self.trunk_precision: Callable[[], ContextManager[Any]] = contextlib.nullcontext
        self.memory_format = torch.contiguous_format
        self.trunk_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        """what runs the trunk when set (``torch.compile`` of it, ``--compile``); the trunk module is unchanged"""

    def add_head(self, action_count: int) -> int:
        """Append an (actor, critic) pair for a new game; returns its index."""
        device = next(self.trunk.parameters()).device
        actor = layer_init(nn.Linear(self.features_dim, action_count), std=0.01)
        critic = layer_init(nn.Linear(self.features_dim, 1), std=1.0)
        self.heads.append(nn.ModuleList([actor, critic]).to(device))
        return len(self.heads) - 1

    def features(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """Trunk features in fp32 (the trunk itself may run under bf16 autocast). ``channels``: see :meth:`run_trunk`."""
        x = x.float() if self.obs_scale == 1 else x.float() * self.obs_scale  # MinAtar's 0/1 cells: no multiply
        x = x.contiguous(memory_format=self.memory_format)
        with self.trunk_precision():
            return self.run_trunk(x, channels).float()

    def run_trunk(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's output (``trunk_fn`` when set). MinAtar, channels-last, in training: the last
        conv's output is made contiguous before its activation (or LayerNorm), so that ReLU's backward sees one memory
        layout (a channels-last output with the contiguous gradient that comes back through Flatten
        takes PyTorch's slow strided path) and Flatten is a view. The same values (a copy), the same
        modules and hooks (what it saves: docs/scale_minatar.md).

        ``channels``: ``x`` holds only these input channels, the others being zero in the whole batch
        (:class:`agents.lean.Minibatches`; a MinAtar game fills only its own leading channels of the
        shared 10). The first convolution then runs on those channels of its weight: the same output,
        and the same gradient (zero) for the weights of the absent channels, with less arithmetic."""
        if self.trunk_fn is not None:
            if channels is not None:
                raise ValueError("a channel subset needs the plain trunk (not --compile)")
            return self.trunk_fn(x)
        plain = self.contiguous_conv is None or self.memory_format is not torch.channels_last or not torch.is_grad_enabled()
        if plain and channels is None:
            return self.trunk(x)
        for index, layer in enumerate(self.trunk):
            if index == 0 and channels is not None:
                x = F.conv2d(x, layer.weight.index_select(1, channels), layer.bias, layer.stride, layer.padding,
                             layer.dilation, layer.groups)
            else:
                x = layer(x)
            if index == self.contiguous_conv and not plain:
                x = x.contiguous()
        return x

    def get_value(self, x: torch.Tensor, game: int) -> torch.Tensor:
        return self.heads[game][1](self.features(x))

    def logits_and_value(self, x: torch.Tensor, game: int,
                         channels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Game ``game``'s actor logits and critic values (training's forward, for :func:`agents.ppo_math.ppo_loss`);
        ``channels``: see :meth:`run_trunk`."""
        hidden = self.features(x, channels)
        actor, critic = self.heads[game]
        return actor(hidden), critic(hidden)

    def get_action_and_value(
        self, x: torch.Tensor, game: int, action: torch.Tensor | None = None, channels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The policy's action (sampled when ``action`` is None), its log-probability, the policy's
        entropy and the value: ``Categorical(logits=...)``'s numbers, bit for bit (agents/lean.py);
        ``channels``: see :meth:`run_trunk`."""
        logits, value = self.logits_and_value(x, game, channels)
        if action is None:
            action = sample_action(logits)[0]
        logprob, entropy = log_prob_entropy(logits, action)
        return action, logprob, entropy, value

    def act_and_value(self, x: torch.Tensor, game: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rollout's call: a sampled action, its log-probability and the value (no entropy);
        the same draws and numbers as :meth:`get_action_and_value`. Each module's ``forward`` is
        called directly, without ``Module.__call__`` (its overhead: docs/scale_minatar.md), so no
        hooks run: the rollout needs none (AGS-CL's activation hooks live only inside its
        ``end_task``, which calls the trunk itself)."""
        x = x.float() if self.obs_scale == 1 else x.float() * self.obs_scale
        x = x.contiguous(memory_format=self.memory_format)
        with self.trunk_precision():
            if self.trunk_fn is not None:
                x = self.trunk_fn(x)
            else:
                for layer in self.trunk:
                    x = layer.forward(x)
        hidden = x.float()
        actor, critic = self.heads[game]
        action, logprob = sample_action(actor.forward(hidden))
        return action, logprob, critic.forward(hidden).view(-1)

    @torch.no_grad()
    def act(self, x: torch.Tensor, game: int, greedy: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions of game ``game``'s policy; sampled from ``generator`` when given (evaluation
        uses its own, so it never moves torch's global generator)."""
        logits = self.heads[game][0](self.features(x))
        if greedy:
            return logits.argmax(dim=1)
        return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
