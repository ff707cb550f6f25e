"""Trunk building blocks beyond ``torch.nn``: CReLU and a LayerNorm over a feature map's channels.

Both are ``--activation crelu`` and ``--layer-norm`` of the agent (docs/agent.md, "Trunk
options"). They live here, pure torch, so that :mod:`agents.network` builds trunks with them and
:mod:`agents.plasticity_metrics` recognizes them without importing the agent or any environment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CReLU(nn.Module):
    """Concatenated ReLU (Shang et al. 2016; Abbas et al. 2023 against loss of plasticity):
    ``cat(relu(x), relu(-x))`` along dim 1, so an input of C channels (or units) gives 2C outputs;
    unit ``n``'s two outputs are ``n`` and ``n + C``. Never all zero unless ``x == 0``: a unit
    cannot go dormant the way a ReLU unit does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((F.relu(x), F.relu(-x)), dim=1)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm of a conv feature map (N, C, H, W) over its C channels at each position, with a
    per-channel affine (as Plasticine's LayerNorm of conv features): the affine parameters are one
    pair per channel, like the conv's bias, whatever the map's size."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


#: the trunk's activation modules: where a unit's output is read (dormant units, AGS-CL's nodes)
ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, CReLU)
