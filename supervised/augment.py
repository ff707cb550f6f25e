"""The CUB-200 image transforms of the authors' released large-scale code, in torch and PIL.

Released (torchvision) pipeline, reproduced here without torchvision:

* test: ``Resize(256)`` (shorter side to 256, the longer one to ``int(256 * long / short)``,
  bilinear) then ``CenterCrop(224)``: :func:`resize_center_crop`, applied once at load time
  with PIL exactly as torchvision applies it to PIL images;
* train: ``RandomResizedCrop(224)`` (area fraction in [0.08, 1], aspect ratio log-uniform in
  [3/4, 4/3], 10 tries then the central crop) and ``RandomHorizontalFlip()``, drawn anew for
  every sample of every epoch: :func:`sample_crops` draws the boxes in the *original* image's
  pixel coordinates, :func:`apply_crops` cuts and resizes a whole batch with one
  ``grid_sample`` on the device.

Deliberate difference: training images are stored once, stretched to ``STORE x STORE``
pixels (uint8, with their original size kept for the crop geometry), so a crop is resampled
from at most 256 source pixels per side and without antialiasing (the released code read
the JPEG of every sample at full resolution in 8 loader processes). The crop geometry and
its distribution are torchvision's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

STORE = 256  # side of the stored (stretched) training images
RESIZE = 256  # test: shorter side before the center crop
CROP = 224  # network input side
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
TRIES = 10


def resize_center_crop(image, resize: int = RESIZE, crop: int = CROP):
    """torchvision's ``Resize(resize)`` then ``CenterCrop(crop)`` on a PIL image (bilinear)."""
    from PIL import Image

    w, h = image.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BILINEAR)
    w, h = image.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def stretch(image, size: int = STORE):
    """The stored training image: ``image`` resized to ``size`` x ``size`` (bilinear)."""
    from PIL import Image

    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)


def sample_crops(sizes: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``RandomResizedCrop`` boxes and flips for images of original ``sizes`` (N, 2) = (H, W).

    Returns ``boxes`` (N, 4) float64 = (top, left, height, width) in original pixels and
    ``flips`` (N,) bool (probability 1/2).
    """
    sizes = sizes.to(torch.float64)
    n = sizes.shape[0]
    height, width = sizes[:, 0], sizes[:, 1]
    area = height * width
    boxes = torch.zeros(n, 4, dtype=torch.float64)
    found = torch.zeros(n, dtype=torch.bool)
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(TRIES):
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
        target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 0])
        aspect = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[:, 1])
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height) & ~found
        top = torch.floor(u[:, 2] * (height - h + 1))
        left = torch.floor(u[:, 3] * (width - w + 1))
        boxes[ok] = torch.stack([top, left, h, w], dim=1)[ok]
        found |= ok
    if not bool(found.all()):  # torchvision's fallback: the central crop clamped to the ratio range
        rest = ~found
        in_ratio = width / height
        w = torch.where(in_ratio < RATIO[0], width, torch.where(in_ratio > RATIO[1], torch.round(height * RATIO[1]), width))
        h = torch.where(in_ratio < RATIO[0], torch.round(width / RATIO[0]), height)
        center = torch.stack([torch.div(height - h, 2, rounding_mode="floor"), torch.div(width - w, 2, rounding_mode="floor"), h, w], 1)
        boxes[rest] = center[rest]
    flips = torch.rand(n, generator=generator) < 0.5
    return boxes, flips


def apply_crops(x: Tensor, sizes: Tensor, boxes: Tensor, flips: Tensor, out: int = CROP) -> Tensor:
    """Cut ``boxes`` (original pixel coordinates of images of ``sizes``) out of the stored,
    stretched float batch ``x`` (N, C, S, S), resize them to ``out`` x ``out`` (bilinear) and
    mirror the ``flips``: one ``affine_grid`` + ``grid_sample`` for the batch."""
    n = x.shape[0]
    sizes = sizes.to(torch.float64)
    top, left, h, w = boxes.unbind(1)
    # normalized coordinates (align_corners=False): pixel edge 0 -> -1, edge W -> +1
    cx = 2.0 * (left + w / 2.0) / sizes[:, 1] - 1.0
    cy = 2.0 * (top + h / 2.0) / sizes[:, 0] - 1.0
    sx = (w / sizes[:, 1]) * torch.where(flips, -1.0, 1.0).to(torch.float64)
    sy = h / sizes[:, 0]
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), [n, x.shape[1], out, out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
