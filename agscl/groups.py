"""Group discovery: which layers hold nodes, where each node's activation is read, and how
a layer's input columns map onto the nodes of the layer before it (done once, here).

A node is an output unit of a ``Linear`` or an output channel of a ``Conv2d`` in the shared
trunk. Its group is its incoming weight row (conv: whole filter) plus its bias. The trunk is
read as a chain in module registration order; every regularized layer must be followed by an
``nn.ReLU`` (the node's activation) before the next regularized layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

# Parameter-free or per-channel modules that may sit between regularized layers.
PASS_THROUGH = (
    nn.Flatten,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Identity,
)
REGULARIZED = (nn.Conv2d, nn.Linear)
_ALLOWED = "Conv2d, Linear, ReLU, " + ", ".join(t.__name__ for t in PASS_THROUGH)


@dataclass
class NodeLayer:
    """One regularized layer of the trunk and how it connects to the layer before it."""

    name: str
    module: nn.Conv2d | nn.Linear
    activation: nn.ReLU
    # Each input column of this layer belongs to node ``col // in_repeat`` of the previous
    # regularized layer (Linear after Conv + Flatten: in_repeat = H*W). None for the first layer.
    in_repeat: int | None

    @property
    def num_nodes(self) -> int:
        return self.module.weight.shape[0]

    @property
    def group_size(self) -> int:
        w = self.module.weight
        return w[0].numel() + (1 if self.module.bias is not None else 0)


def _leaves(trunk: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in trunk.named_modules() if len(list(m.children())) == 0]


def discover_layers(trunk: nn.Module) -> list[NodeLayer]:
    """Read the trunk's chain of regularized layers; ``ValueError`` on anything unsupported."""
    found: list[tuple[str, nn.Module]] = []
    activation_of: dict[int, nn.ReLU] = {}
    seen_relus: set[int] = set()
    for name, module in _leaves(trunk):
        if isinstance(module, REGULARIZED):
            if found and id(found[-1][1]) not in activation_of:
                raise ValueError(
                    f"layer {found[-1][0]!r} is not followed by an nn.ReLU before {name!r}: "
                    "AGS-CL needs every Conv2d/Linear of the trunk followed by a ReLU"
                )
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                raise ValueError(f"layer {name!r} is a grouped convolution (groups={module.groups}): only groups=1 is supported")
            found.append((name, module))
        elif isinstance(module, nn.ReLU):
            if id(module) in seen_relus:
                raise ValueError(f"ReLU {name!r} is used twice in the trunk: give every layer its own nn.ReLU")
            seen_relus.add(id(module))
            if found and id(found[-1][1]) not in activation_of:
                activation_of[id(found[-1][1])] = module
        elif not isinstance(module, PASS_THROUGH):
            raise ValueError(
                f"unsupported layer {name!r} of type {type(module).__name__} in the trunk: allowed types are {_ALLOWED}"
            )
    if not found:
        raise ValueError("the trunk has no regularizable layer: it needs at least one Conv2d or Linear followed by a ReLU")
    if id(found[-1][1]) not in activation_of:
        raise ValueError(f"the last layer {found[-1][0]!r} of the trunk is not followed by an nn.ReLU")

    layers: list[NodeLayer] = []
    for index, (name, module) in enumerate(found):
        in_repeat = None
        if index > 0:
            prev_nodes = found[index - 1][1].weight.shape[0]
            in_repeat = input_repeat(name, module, prev_nodes, found[index - 1][1])
        layers.append(NodeLayer(name, module, activation_of[id(module)], in_repeat))
    return layers


def input_repeat(name: str, module: nn.Module, prev_nodes: int, prev: nn.Module) -> int:
    """How many input columns of ``module`` each node of the previous layer feeds."""
    if isinstance(module, nn.Conv2d):
        if not isinstance(prev, nn.Conv2d):
            raise ValueError(f"layer {name!r}: a Conv2d after a Linear is not supported")
        if module.in_channels != prev_nodes:
            raise ValueError(f"layer {name!r} expects {module.in_channels} channels but the layer before has {prev_nodes} nodes")
        return 1
    in_features = module.weight.shape[1]
    if in_features % prev_nodes != 0:
        raise ValueError(
            f"layer {name!r} has {in_features} inputs, not a multiple of the {prev_nodes} nodes of the layer before"
        )
    return in_features // prev_nodes


def head_input_layer(head: nn.Module) -> nn.Linear:
    """The Linear of a head module that reads the trunk's features (its first Linear)."""
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return module
        if isinstance(module, nn.Conv2d):
            break
    raise ValueError(f"head {type(head).__name__} has no Linear input layer: heads must start with an nn.Linear")


def spread_over_inputs(per_node: torch.Tensor, weight: torch.Tensor, repeat: int | None = None) -> torch.Tensor:
    """A per-node vector of the feeding layer as a tensor broadcastable over ``weight``'s
    input columns: ``(1, C, 1, 1)`` for a conv, ``(1, in_features)`` for a Linear, each node
    repeated ``repeat`` times (inferred from the shapes when None, e.g. for heads)."""
    if weight.ndim == 4:
        return per_node.view(1, -1, 1, 1)
    if repeat is None:
        repeat = weight.shape[1] // per_node.numel()
        if repeat * per_node.numel() != weight.shape[1]:
            raise ValueError(
                f"a layer with {weight.shape[1]} inputs cannot be fed by {per_node.numel()} nodes: not a multiple"
            )
    return per_node.repeat_interleave(repeat).view(1, -1)


def group_count(layers: Sequence[NodeLayer]) -> int:
    return sum(layer.num_nodes for layer in layers)
