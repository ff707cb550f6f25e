"""Continual vision benchmarks as lists of tasks held in memory.

``load_benchmark(name, data_dir)`` returns a :class:`Benchmark`: a sequence of
:class:`TaskData`, each with its own label space ``0..num_classes-1`` (task-aware, one head
per task), train/valid/test splits kept as compact uint8 NCHW tensors and the per-channel
normalization the paper's code used. Batches are normalized on the fly, so a 224x224 CUB
task costs 1 byte per pixel in memory, not 4.

Nothing is downloaded. Datasets are read from ``data_dir`` (default: the ``AGSCL_DATA_DIR``
environment variable, else ``./data``) in their standard distribution formats::

    DATA_DIR/
      cifar-10-batches-py/   data_batch_1..5, test_batch           (python version of CIFAR-10)
      cifar-100-python/      train, test, meta                      (python version of CIFAR-100)
      omniglot/              images_background/, images_evaluation/ (alphabet/characterNN/*.png)
      CUB_200_2011/          images/, images.txt, image_class_labels.txt, train_test_split.txt
      mnist/                 train-images-idx3-ubyte, train-labels-idx1-ubyte,
                             t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or the .gz files)
      fashion_mnist/         the same four IDX files of Fashion-MNIST
      svhn/                  train_32x32.mat, test_32x32.mat
      gtsrb/                 GTSRB/Final_Training/Images/<class>/*.ppm + GT-<class>.csv
                             (+ Final_Test/Images/*.ppm with GT-final_test.csv), or
                             train/<class>/*, test/<class>/* image folders
      facescrub/             train/<person>/*, test/<person>/* (or just <person>/*)
      notmnist/              train/<letter>/*, test/<letter>/* (or just A/ .. J/)

``split_digits`` needs nothing on disk (scikit-learn ships the 8x8 digits); it is the quick
end-to-end check. Folder names are case-insensitive variants (``MNIST``, ``fashion-mnist``,
``SVHN``, ``GTSRB``, ``notMNIST``...) and IDX files may sit in any subfolder (e.g. the
``MNIST/raw/`` layout).

Splits and seeds (the authors' released code, unless said otherwise; ``supervised.presets``
lists the remaining differences):

* task order: ``sklearn.utils.shuffle(np.arange(n), random_state=seed)`` exactly as the
  released loaders call it (:func:`released_order`): split_cifar100 and split_cifar10_100
  shuffle the ten CIFAR-100 blocks of classes ``10k..10k+9`` (CIFAR-10 stays task 0);
  mixture8 shuffles HAT's dataset ids; cub200 gives class ``c`` the label ``order[c]`` and
  task ``t`` the labels ``20t..20t+19``, so a task is a random set of 20 classes. Omniglot's
  50 alphabets keep their order (background set, then evaluation set, each sorted by name),
  as the paper states; split_digits (ours) shuffles the ten digits by seed before pairing;
* validation: ``valid_fraction`` of each task's training data, default the released code's
  :data:`VALID_FRACTION` (CIFAR 10%, mixture 15%, CUB none), stratified by class, drawn by
  ``seed``;
* Omniglot: each alphabet is split at random (not per character) into 80% train, 10% valid
  and 10% test drawings (:func:`omniglot_split`), drawn by ``seed``;
* CUB-200: the first ``ceil(0.8 n)`` images of each class (file-name order) train, the rest
  test (``cub_split="official"``: ``train_test_split.txt``); training batches are random
  resized crops with flips, valid and test images are resized to 256 and center-cropped to
  224 (``supervised.augment``); CUB's own mean and std;
* where a dataset has no official test split (digits, class folders without a ``test/``
  folder) 20% of every class is held out as test, stratified, with a fixed seed so the test
  set is the same in every run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from supervised import readers
from supervised.readers import DataError, DatasetMissingError, stratified_holdout

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "DataError",
    "DatasetMissingError",
    "TaskData",
    "default_data_dir",
    "load_benchmark",
]

BENCHMARKS = ("split_digits", "split_cifar100", "split_cifar10_100", "omniglot", "cub200", "mixture8")
SPLITS = ("train", "valid", "test")

INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "split_digits": (1, 8, 8),
    "split_cifar100": (3, 32, 32),
    "split_cifar10_100": (3, 32, 32),
    "omniglot": (1, 28, 28),
    "cub200": (3, 224, 224),
    "mixture8": (3, 32, 32),
}

# Per-channel statistics (0..1 scale) used by the released code (HAT's loaders for CIFAR and
# the mixture; MNIST and Fashion-MNIST values include the 2-pixel zero padding to 32x32).
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
CUB_MEAN = (0.485, 0.500, 0.432)  # the released large-scale code's CUB statistics
CUB_STD = (0.232, 0.227, 0.266)
MIXTURE_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (CIFAR_MEAN, CIFAR_STD),
    "cifar100": (CIFAR_MEAN, CIFAR_STD),
    "mnist": ((0.1,) * 3, (0.2752,) * 3),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197)),
    "fashion-mnist": ((0.2190,) * 3, (0.3318,) * 3),
    "traffic-signs": ((0.3398, 0.3117, 0.3210), (0.2755, 0.2647, 0.2712)),
    "facescrub": ((0.5163, 0.5569, 0.4695), (0.2307, 0.2272, 0.2479)),
    "notmnist": ((0.4254,) * 3, (0.4501,) * 3),
}
MIXTURE_ORDER = tuple(MIXTURE_STATS)  # HAT's dataset ids 0..7

# Validation share of each benchmark's training data in the released code (its ``pc_valid``;
# Omniglot: of the whole alphabet, see ``omniglot_split``; CUB: none).
VALID_FRACTION: dict[str, float] = {
    "split_digits": 0.1, "split_cifar100": 0.1, "split_cifar10_100": 0.1, "omniglot": 0.1, "cub200": 0.0, "mixture8": 0.15,
}
TEST_FRACTION = 0.2  # held out where a dataset has no official test split
FIXED_TEST_SEED = 1234  # seed of those held-out test sets (Omniglot uses the run seed)


# --------------------------------------------------------------------------------------
# containers


@dataclass
class TaskData:
    """One task: its three splits (compact storage) and how to normalize them."""

    name: str
    num_classes: int
    x_train: Tensor
    y_train: Tensor
    x_valid: Tensor
    y_valid: Tensor
    x_test: Tensor
    y_test: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_sizes: Tensor | None = None
    """with ``crop``: original (H, W) of every stored training image (random-resized-crop geometry)"""
    crop: int | None = None
    """training batches are ``RandomResizedCrop(crop)`` + horizontal flip of the stored images"""

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        for split in SPLITS:
            x, y = self.split(split)
            if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"task {self.name!r} {split}: need x NCHW and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
            if x.dtype not in (torch.uint8, torch.float32):
                raise ValueError(f"task {self.name!r} {split}: x dtype {x.dtype} is not uint8 or float32")
            if x.shape[1] != len(self.mean) or len(self.mean) != len(self.std):
                raise ValueError(f"task {self.name!r}: {x.shape[1]} channels but mean {self.mean} and std {self.std}")
        if self.crop is not None and (self.train_sizes is None or self.train_sizes.shape != (self.size("train"), 2)):
            raise ValueError(f"task {self.name!r}: crop needs train_sizes of shape ({self.size('train')}, 2)")

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        """The stored ``(x, y)`` of ``split`` ("train", "valid" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: valid choices are {', '.join(SPLITS)}")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def size(self, split: str = "train") -> int:
        return int(self.split(split)[1].shape[0])

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield normalized float32 ``(x/255 - mean)/std`` batches and int64 labels on ``device``.

        Conversion happens per batch (after the uint8 copy to ``device``), so big datasets stay
        small in memory and cheap to transfer. float32 data is taken as already in 0..1.
        A task with ``crop`` (CUB) augments every training batch, shuffled or not, with crops
        drawn from ``generator`` (a fixed-seed stream when None, so unshuffled passes repeat).
        """
        x, y = self.split(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
        augment = split == "train" and self.crop is not None
        if augment and generator is None:
            generator = torch.Generator().manual_seed(0)
        return self._batches(x, y, int(batch_size), shuffle, generator, torch.device(device), augment)

    def _batches(
        self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool, generator: torch.Generator | None,
        device: torch.device, augment: bool,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        from supervised.augment import apply_crops, sample_crops

        n = y.shape[0]
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(shape)
        scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
        for start in range(0, n, batch_size):
            if not shuffle:
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)  # much faster than x[idx] on CPU
            if xb.dtype == torch.uint8:  # move the compact bytes, convert on the device
                xb = xb.to(device, non_blocking=True).float()
            else:  # always a fresh tensor: the in-place ops below must not touch the stored data
                xb = xb.to(device, dtype=torch.float32, non_blocking=True, copy=True)
            if augment:
                assert self.train_sizes is not None and self.crop is not None
                sizes = self.train_sizes.index_select(0, order[start : start + batch_size])
                xb = apply_crops(xb, sizes, *sample_crops(sizes, generator), out=self.crop)
            yield xb.mul_(scale).sub_(mean).div_(std), yb.to(device, non_blocking=True)

    def inputs(self, split: str = "train", batch_size: int = 256, device: str | torch.device = "cpu") -> Iterator[Tensor]:
        """Normalized input batches only (for importance estimates in ``end_task``)."""
        return (xb for xb, _ in self.batches(split, batch_size, device=device))


@dataclass
class Benchmark:
    name: str
    input_shape: tuple[int, int, int]
    tasks: list[TaskData] = field(default_factory=list)

    @property
    def num_classes(self) -> list[int]:
        """Classes per task, in task order (the size of every task head)."""
        return [t.num_classes for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)


# --------------------------------------------------------------------------------------
# splitting helpers (vectorized)


def _rng(seed: int, *purpose: int) -> np.random.Generator:
    """Independent stream per (seed, purpose...), so e.g. task order and valid splits do not interact."""
    return np.random.default_rng([seed, *purpose])


def _as_tensor_x(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def make_task(
    name: str,
    num_classes: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    valid_rng: np.random.Generator,
    valid_fraction: float,
) -> TaskData:
    """Carve the validation split from train and wrap numpy arrays as a :class:`TaskData`."""
    keep, held = stratified_holdout(y_train, valid_fraction, valid_rng)
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    return TaskData(
        name=name,
        num_classes=int(num_classes),
        x_train=_as_tensor_x(x_train[keep]),
        y_train=torch.from_numpy(y_train[keep]),
        x_valid=_as_tensor_x(x_train[held]),
        y_valid=torch.from_numpy(y_train[held]),
        x_test=_as_tensor_x(x_test),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        mean=tuple(mean),
        std=tuple(std),
    )


def _class_subset(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose label is in ``classes``, relabelled to the position of their class in ``classes``."""
    lut = np.full(max(int(y.max(initial=0)), int(classes.max())) + 1, -1, dtype=np.int64)
    lut[classes] = np.arange(classes.shape[0])
    new = lut[y]
    mask = new >= 0
    return x[mask], new[mask]


def class_split_tasks(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    groups: Sequence[np.ndarray],
    mean: Sequence[float],
    std: Sequence[float],
    seed: int,
    valid_fraction: float,
    names: Sequence[str],
) -> list[TaskData]:
    """One task per class group (labels remapped to 0..k-1 in group order)."""
    tasks = []
    for t, (classes, name) in enumerate(zip(groups, names)):
        classes = np.asarray(classes, dtype=np.int64)
        xtr, ytr = _class_subset(*train, classes)
        xte, yte = _class_subset(*test, classes)
        tasks.append(make_task(name, len(classes), xtr, ytr, xte, yte, mean, std, _rng(seed, 1, t), valid_fraction))
    return tasks


def _block_names(prefix: str, blocks: Sequence[np.ndarray], offset: int = 0) -> list[str]:
    return [f"{prefix}-classes-{int(b[0]) + offset}..{int(b[-1]) + offset}" for b in blocks]


def released_order(n: int, seed: int) -> np.ndarray:
    """``sklearn.utils.shuffle(np.arange(n), random_state=seed)``: the released code's order."""
    from sklearn.utils import shuffle

    return np.asarray(shuffle(np.arange(n), random_state=seed))


def _shuffled_blocks(num_classes: int, per_task: int, seed: int) -> list[np.ndarray]:
    """Contiguous class blocks in the released code's order for ``seed`` (block ids shuffled)."""
    blocks = np.arange(num_classes).reshape(-1, per_task)
    return list(blocks[released_order(blocks.shape[0], seed)])


def _wrap(name: str, num_classes: int, x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray],
          mean: Sequence[float], std: Sequence[float]) -> TaskData:
    """A :class:`TaskData` from one array pair and the (train, valid, test) index arrays."""
    tr, va, te = (np.sort(p) for p in parts)
    y = np.asarray(y, dtype=np.int64)
    return TaskData(name, int(num_classes), _as_tensor_x(x[tr]), torch.from_numpy(y[tr]), _as_tensor_x(x[va]),
                    torch.from_numpy(y[va]), _as_tensor_x(x[te]), torch.from_numpy(y[te]), tuple(mean), tuple(std))


# --------------------------------------------------------------------------------------
# benchmark builders: each returns the first ``num_tasks`` tasks (None = all)


def _split_digits(data_dir: Path, seed: int, valid_fraction: float, num_tasks: int | None) -> list[TaskData]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # N,1,8,8
    y = digits.target.astype(np.int64)
    train_idx, test_idx = stratified_holdout(y, TEST_FRACTION, _rng(FIXED_TEST_SEED))
    scaled = x.astype(np.float64) / 255.0
    mean, std = (float(scaled.mean()),), (float(scaled.std()),)  # no published constants: whole dataset
    order = _rng(seed, 0).permutation(10)
    groups = list(order.reshape(5, 2))[:num_tasks]
    names = [f"digits-{a}-{b}" for a, b in groups]
    return class_split_tasks(
        (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx]), groups, mean, std, seed, valid_fraction, names
    )


def _cifar100_tasks(data_dir: Path, seed: int, valid_fraction: float, num_tasks: int | None) -> list[TaskData]:
    train, test = readers.read_cifar100(data_dir)
    blocks = _shuffled_blocks(100, 10, seed)[:num_tasks]
    return class_split_tasks(
        train, test, blocks, CIFAR_MEAN, CIFAR_STD, seed, valid_fraction, _block_names("cifar100", blocks)
    )


def _split_cifar100(data_dir: Path, seed: int, valid_fraction: float, num_tasks: int | None) -> list[TaskData]:
    return _cifar100_tasks(data_dir, seed, valid_fraction, num_tasks)


def _split_cifar10_100(data_dir: Path, seed: int, valid_fraction: float, num_tasks: int | None) -> list[TaskData]:
    readers.require_cifar10(data_dir)
    if num_tasks is None or num_tasks > 1:
        readers.require_cifar100(data_dir)  # fail before reading anything
    (xtr, ytr), (xte, yte) = readers.read_cifar10(data_dir)
    first = make_task("cifar10", 10, xtr, ytr, xte, yte, CIFAR_MEAN, CIFAR_STD, _rng(seed, 2), valid_fraction)
    if num_tasks == 1:
        return [first]
    return [first] + _cifar100_tasks(data_dir, seed, valid_fraction, None if num_tasks is None else num_tasks - 1)


def omniglot_split(n: int, valid_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The released Omniglot split of an alphabet's ``n`` drawings, random over the whole
    alphabet (not per character): ``8 * (n // 10)`` train, ``n // 10`` valid, the rest test.

    ``valid_fraction`` is the validation share of the *alphabet* (0.1 gives the released
    counts); test stays ``n - 9 * (n // 10)`` and train takes what validation leaves.
    """
    tenth = n // 10
    if tenth < 1:
        raise ValueError(f"an alphabet of {n} drawings is too small for the 80/10/10 split (needs at least 10)")
    n_test = n - 9 * tenth
    n_valid = min(int(math.floor(valid_fraction * n + 1e-9)), n - n_test - 1)
    perm = rng.permutation(n)
    n_train = n - n_test - n_valid
    return perm[:n_train], perm[n_train : n_train + n_valid], perm[n_train + n_valid :]


def _omniglot(data_dir: Path, seed: int, valid_fraction: float, num_tasks: int | None) -> list[TaskData]:
    alphabets = readers.list_omniglot_alphabets(data_dir)[:num_tasks]
    tasks = []
    for t, (name, folder) in enumerate(alphabets):
        x, y = readers.read_omniglot_alphabet(folder, size=28)
        try:
            parts = omniglot_split(len(y), valid_fraction, _rng(seed, 3, t))
        except ValueError as exc:
            raise readers.DataError(f"{folder}: {exc}") from None
        scaled = x[parts[0]].astype(np.float64) / 255.0
        mean, std = (float(scaled.mean()),), (float(scaled.std()) or 1.0,)  # no published constants: task's train split
        tasks.append(_wrap(name, int(y.max()) + 1, x, y, parts, mean, std))
    return tasks


def _cub200(data_dir: Path, seed: int, valid_fraction: float, num_tasks: int | None, split: str = "released") -> list[TaskData]:
    """The released large-scale protocol: class ``c`` gets label ``order[c]`` with ``order`` =
    :func:`released_order` (200, seed) and task ``t`` holds labels ``20t .. 20t+19`` (local label
    = label mod 20), so each task is a random set of 20 classes; train images are stored for
    random-resized crops, valid and test images resized to 256 and center-cropped to 224."""
    from supervised import augment

    root = readers.require_cub(data_dir, split)
    paths, y, is_train = readers.cub_index(root, split)
    if y.size == 0 or y.min() < 0 or y.max() >= readers.CUB_CLASSES:
        raise readers.DataError(f"{root}: CUB labels must be 1..{readers.CUB_CLASSES}")
    per_task = readers.CUB_CLASSES // 10
    groups = np.argsort(released_order(readers.CUB_CLASSES, seed)).reshape(10, per_task)[:num_tasks]
    tasks = []
    for t, classes in enumerate(groups):
        lut = np.full(readers.CUB_CLASSES, -1, dtype=np.int64)
        lut[classes] = np.arange(per_task)
        local = lut[y]
        train_idx = np.flatnonzero((local >= 0) & is_train)
        test_idx = np.flatnonzero((local >= 0) & ~is_train)
        keep, held = stratified_holdout(local[train_idx], valid_fraction, _rng(seed, 1, t))
        decoded = []
        for idx, transform in ((train_idx[keep], augment.stretch), (train_idx[held], augment.resize_center_crop),
                               (test_idx, augment.resize_center_crop)):
            x, ok, sizes = readers.decode_images_sized([paths[i] for i in idx], "RGB", transform=transform)
            if x.shape[0] == 0:  # an empty split keeps its image shape
                side = augment.STORE if transform is augment.stretch else augment.CROP
                x = np.zeros((0, 3, side, side), dtype=np.uint8)
            decoded.append((x, local[idx][ok], sizes))
        (xtr, ytr, sizes), (xva, yva, _), (xte, yte, _) = decoded
        name = f"cub200-{t}-seed{seed}" + ("-official" if split == "official" else "")
        tasks.append(TaskData(
            name, per_task, _as_tensor_x(xtr), torch.from_numpy(ytr), _as_tensor_x(xva), torch.from_numpy(yva),
            _as_tensor_x(xte), torch.from_numpy(yte), CUB_MEAN, CUB_STD,
            train_sizes=torch.from_numpy(sizes), crop=augment.CROP,
        ))
    return tasks


def _mixture8(data_dir: Path, seed: int, valid_fraction: float, num_tasks: int | None) -> list[TaskData]:
    order = [MIXTURE_ORDER[i] for i in released_order(len(MIXTURE_ORDER), seed)][:num_tasks]
    for name in order:  # fail on the first missing dataset before decoding any of them
        readers.require_mixture_dataset(data_dir, name)
    tasks = []
    for t, name in enumerate(order):
        (xtr, ytr), (xte, yte) = readers.read_mixture_dataset(data_dir, name, test_seed=FIXED_TEST_SEED)
        num_classes = int(max(ytr.max(), yte.max(initial=0))) + 1
        mean, std = MIXTURE_STATS[name]
        tasks.append(make_task(name, num_classes, xtr, ytr, xte, yte, mean, std, _rng(seed, 1, t), valid_fraction))
    return tasks


BUILDERS: dict[str, Callable[..., list[TaskData]]] = {
    "split_digits": _split_digits,
    "split_cifar100": _split_cifar100,
    "split_cifar10_100": _split_cifar10_100,
    "omniglot": _omniglot,
    "cub200": _cub200,
    "mixture8": _mixture8,
}


def default_data_dir() -> Path:
    """``$AGSCL_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("AGSCL_DATA_DIR", "data"))


def load_benchmark(
    name: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    valid_fraction: float | None = None,
    num_tasks: int | None = None,
    cub_split: str = "released",
) -> Benchmark:
    """Build benchmark ``name`` from ``data_dir``; ``num_tasks`` keeps only the first tasks (quick runs).

    ``valid_fraction`` None takes the released code's value (:data:`VALID_FRACTION`);
    ``cub_split`` picks CUB's "released" 80/20 split or the dataset's "official" one.

    Only the data of the kept tasks is decoded where the format allows (Omniglot alphabets,
    CUB classes, mixture datasets); a ``num_tasks`` above the benchmark's length keeps all.

    Raises ``ValueError`` for bad arguments, :class:`DatasetMissingError` (a
    ``FileNotFoundError``) naming the files to put under ``data_dir`` when they are absent and
    :class:`DataError` naming the file or folder when the data there is wrong or partial.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}: valid choices are {', '.join(BENCHMARKS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    if cub_split not in readers.CUB_SPLITS:
        raise ValueError(f"unknown cub_split {cub_split!r}: valid choices are {', '.join(readers.CUB_SPLITS)}")
    if valid_fraction is None:
        valid_fraction = VALID_FRACTION[name]
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction={valid_fraction!r} is out of range: allowed valid_fraction in [0, 1)")
    if num_tasks is not None and (isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1):
        raise ValueError(f"num_tasks={num_tasks!r} must be None (all tasks) or an integer >= 1")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    options = {"split": cub_split} if name == "cub200" else {}
    tasks = BUILDERS[name](root, int(seed), float(valid_fraction), None if num_tasks is None else int(num_tasks), **options)
    return Benchmark(name=name, input_shape=INPUT_SHAPES[name], tasks=tasks)
