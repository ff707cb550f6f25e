"""Networks of the paper's vision benchmarks, as a shared ``trunk`` plus one ``Linear`` head per task.

Every plain network is a flat ``nn.Sequential`` of ``Conv2d``/``Linear`` layers each followed by
its own ``nn.ReLU`` (pooling, dropout and flatten in between), ending with the last hidden
ReLU: that chain is what AGS-CL and HAT read their nodes from (``agscl.groups``). ResNet-18's
skip connections do not form such a chain, so it serves the weight-wise methods only.

Layouts (multi-head, the head is the only task-specific part):

* ``digits``: 2 conv (32, 32) + fc 64 for the 8x8 scikit-learn digits (ours, small and fast).
* ``cifar``: 6 conv 3x3 pad 1 (32, 32, 64, 64, 128, 128), max-pool and dropout 0.25 after every
  two, fc 256 with dropout 0.5 (the released AGS-CL / UCL ``conv_net``).
* ``omniglot``: 4 conv 3x3 no pad, 64 channels, max-pool after conv 2 and 4; heads read the
  flattened 64x4x4 maps (the released ``conv_net_omniglot``).
* ``alexnet``: torchvision's AlexNet (features, 6x6 adaptive pool, fc 4096, fc 4096) for 224x224
  CUB-200, loadable from an ImageNet state_dict in torchvision's key layout.
* ``alexnet_mix``: the AGS-CL authors' mixture network, an AlexNet with 5 conv layers
  (64, 192, 384, 256, 256) and fc 4096, 4096, trained from scratch on the 8-dataset mixture
  (32x32 inputs). The widths are the released ones; kernel sizes, padding and pooling for
  32x32 inputs are ours (torchvision's kernels 5/5/3/3/3 at stride 1, same padding, max-pool 2
  after conv 1, 2 and 5, so fc 1 reads 256x4x4; dropout 0.5 before each fc as torchvision).
* ``alexnet32``: HAT's small AlexNet for 32x32 inputs (conv 64/128/256 with kernels size//8,
  size//10, 2; fc 2048, 2048; dropout 0.2 / 0.5), an option for the mixture.
* ``resnet18``: torchvision's ResNet-18 without its ``fc`` (512 features), loadable from a
  torchvision state_dict; for weight-wise methods only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

NETWORKS = ("digits", "mlp", "cifar", "omniglot", "alexnet", "alexnet_mix", "alexnet32", "resnet18")
PLAIN_NETWORKS = ("digits", "mlp", "cifar", "omniglot", "alexnet", "alexnet_mix", "alexnet32")
PRETRAINABLE = ("alexnet", "resnet18")

# The network each benchmark uses in the paper (``mlp`` is an extra, not a default).
DEFAULT_NETWORK = {
    "split_digits": "digits",
    "split_cifar100": "cifar",
    "split_cifar10_100": "cifar",
    "omniglot": "omniglot",
    "cub200": "alexnet",
    "mixture8": "alexnet_mix",
}


class WeightsMismatchError(ValueError):
    """A weights file that does not fit the network (missing/unexpected keys, wrong shapes)."""


def _conv_block(c_in: int, c_out: int, kernel: int, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=kernel, padding=padding), nn.ReLU()]


def _digits(input_shape: tuple[int, int, int]) -> nn.Sequential:
    c, h, w = input_shape
    return nn.Sequential(
        *_conv_block(c, 32, 3, 1),
        *_conv_block(32, 32, 3, 1),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (h // 2) * (w // 2), 64),
        nn.ReLU(),
    )


def _mlp(input_shape: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU()
    )


def _cifar(input_shape: tuple[int, int, int]) -> nn.Sequential:
    c, h, w = input_shape
    layers: list[nn.Module] = []
    widths = [(c, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    for index, (c_in, c_out) in enumerate(widths):
        layers += _conv_block(c_in, c_out, 3, 1)
        if index % 2 == 1:
            layers += [nn.MaxPool2d(2), nn.Dropout(0.25)]
    layers += [nn.Flatten(), nn.Linear(128 * (h // 8) * (w // 8), 256), nn.ReLU(), nn.Dropout(0.5)]
    return nn.Sequential(*layers)


def _omniglot(input_shape: tuple[int, int, int]) -> nn.Sequential:
    c, h, w = input_shape
    return nn.Sequential(
        *_conv_block(c, 64, 3),
        *_conv_block(64, 64, 3),
        nn.MaxPool2d(2),
        *_conv_block(64, 64, 3),
        *_conv_block(64, 64, 3),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )


# Position of torchvision's AlexNet modules in our flat trunk: features.i -> i, then
# avgpool (13), flatten (14), classifier.0..5 -> 15..20; classifier.6 (ImageNet's 1000-way
# output) is not part of the trunk.
_ALEXNET_CLASSIFIER_OFFSET = 15


def _alexnet(input_shape: tuple[int, int, int]) -> nn.Sequential:
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)),
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
    )


def _alexnet_mix(input_shape: tuple[int, int, int]) -> nn.Sequential:
    c, h, w = input_shape
    if h < 8 or w < 8:
        raise ValueError(f"alexnet_mix needs inputs of at least 8x8 pixels, got {input_shape}")
    return nn.Sequential(
        *_conv_block(c, 64, 5, 2), nn.MaxPool2d(2),
        *_conv_block(64, 192, 5, 2), nn.MaxPool2d(2),
        *_conv_block(192, 384, 3, 1),
        *_conv_block(384, 256, 3, 1),
        *_conv_block(256, 256, 3, 1), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * (h // 8) * (w // 8), 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
    )


def _alexnet32(input_shape: tuple[int, int, int]) -> nn.Sequential:
    c, size, _ = input_shape
    k1, k2 = max(size // 8, 1), max(size // 10, 1)
    s = (size - k1 + 1) // 2
    s = (s - k2 + 1) // 2
    s = (s - 2 + 1) // 2
    if s < 1:
        raise ValueError(f"alexnet32 needs inputs of at least 16x16 pixels, got {input_shape}")
    return nn.Sequential(
        *_conv_block(c, 64, k1), nn.MaxPool2d(2), nn.Dropout(0.2),
        *_conv_block(64, 128, k2), nn.MaxPool2d(2), nn.Dropout(0.2),
        *_conv_block(128, 256, 2), nn.MaxPool2d(2), nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(256 * s * s, 2048), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(2048, 2048), nn.ReLU(), nn.Dropout(0.5),
    )


class BasicBlock(nn.Module):
    """ResNet basic block with torchvision's attribute names (so its state_dict keys match)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResNet18Trunk(nn.Module):
    """torchvision's ResNet-18 up to the global pool (512 features); no ``fc``."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for index, (c_in, c_out, stride) in enumerate(widths, start=1):
            setattr(self, f"layer{index}", nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


_BUILDERS: dict[str, Callable[[tuple[int, int, int]], nn.Module]] = {
    "digits": _digits,
    "mlp": _mlp,
    "cifar": _cifar,
    "omniglot": _omniglot,
    "alexnet": _alexnet,
    "alexnet_mix": _alexnet_mix,
    "alexnet32": _alexnet32,
    "resnet18": lambda shape: ResNet18Trunk(shape[0]),
}


def build_trunk(name: str, input_shape: Sequence[int]) -> nn.Module:
    """The shared trunk ``name`` for inputs of shape ``(C, H, W)``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown network {name!r}: valid choices are {', '.join(NETWORKS)}")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape={input_shape!r} must be (C, H, W) with positive sizes")
    return _BUILDERS[name](shape)  # type: ignore[arg-type]


@torch.no_grad()
def feature_dim(trunk: nn.Module, input_shape: Sequence[int]) -> int:
    """Width of the trunk's output, by one forward pass on a zero input (eval mode)."""
    was_training = trunk.training
    trunk.eval()
    try:
        device = next(trunk.parameters()).device
        out = trunk(torch.zeros((1, *input_shape), device=device))
    finally:
        trunk.train(was_training)
    return int(out.reshape(1, -1).shape[1])


def build_heads(features: int, num_classes: Sequence[int]) -> nn.ModuleList:
    """One ``Linear(features, n)`` per task (multi-head, task-aware evaluation)."""
    return nn.ModuleList(nn.Linear(features, int(n)) for n in num_classes)


def build_network(name: str, input_shape: Sequence[int], num_classes: Sequence[int]) -> tuple[nn.Module, nn.ModuleList]:
    """``(trunk, heads)`` of network ``name`` for a benchmark with ``num_classes`` per task."""
    trunk = build_trunk(name, input_shape)
    return trunk, build_heads(feature_dim(trunk, input_shape), num_classes)


def is_plain_chain(trunk: nn.Module) -> bool:
    """Whether ``trunk`` is a chain AGS-CL and HAT can read nodes from."""
    from agscl.groups import discover_layers

    try:
        discover_layers(trunk)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# pretrained weights in torchvision's layout


def _translate_alexnet_key(key: str) -> str | None:
    """torchvision AlexNet key -> our trunk key; None for the ImageNet output layer."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit():
        return f"{parts[1]}.{parts[2]}"
    if len(parts) == 3 and parts[0] == "classifier" and parts[1].isdigit():
        if parts[1] == "6":
            return None
        return f"{int(parts[1]) + _ALEXNET_CLASSIFIER_OFFSET}.{parts[2]}"
    return key  # unknown: reported as unexpected


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsMismatchError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user error
        raise WeightsMismatchError(f"weights file {str(path)!r} is not a readable torch state_dict ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(f"weights file {str(path)!r} does not hold a state_dict of tensors")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_pretrained(trunk: nn.Module, network: str, path: str | Path) -> int:
    """Copy a torchvision-layout state_dict (AlexNet ``features.0.weight``..., ResNet-18
    ``conv1.weight``...) into ``trunk``; the ImageNet classifier output is skipped.

    Raises :class:`WeightsMismatchError` (one line) when keys or shapes do not fit.
    Returns the number of tensors loaded.
    """
    if network not in PRETRAINABLE:
        raise WeightsMismatchError(
            f"network {network!r} has no pretrained layout: weights files fit {', '.join(PRETRAINABLE)}"
        )
    state = _read_state_dict(Path(path))
    if network == "alexnet":
        translated = {}
        for key, value in state.items():
            new = _translate_alexnet_key(key)
            if new is not None:
                translated[new] = value
    else:
        translated = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = trunk.state_dict()
    missing = sorted(k for k in own if k not in translated and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in translated if k not in own)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise WeightsMismatchError(
            f"weights file {str(path)!r} does not fit network {network!r}: {detail} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys; expected torchvision's {network} layout)"
        )
    for key, value in translated.items():
        if value.shape != own[key].shape:
            raise WeightsMismatchError(
                f"weights file {str(path)!r} does not fit network {network!r}: {key} has shape "
                f"{tuple(value.shape)}, the network needs {tuple(own[key].shape)}"
            )
    merged = dict(own)
    merged.update({k: v.to(own[k].dtype) for k, v in translated.items()})
    trunk.load_state_dict(merged)
    return len(translated)
