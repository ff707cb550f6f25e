"""Readers of the standard on-disk formats of the vision datasets (nothing is downloaded).

Every reader returns numpy arrays: images as uint8 NCHW, labels as int64 starting at 0.
Binary formats (CIFAR pickles, IDX, SVHN .mat) are decoded whole with numpy; image folders
are decoded with PIL on a small thread pool (PIL releases the GIL while decoding/resizing).
A missing dataset raises :class:`DatasetMissingError` whose one-line message says what to
put where.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]  # (x uint8 NCHW, y int64)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class DatasetMissingError(FileNotFoundError):
    """A dataset is not under the data directory; the message says which files to put where."""


class DataError(ValueError):
    """A dataset file is there but is not what its name says (wrong format, truncated, partial
    data); the one-line message names the file or folder."""


def _missing(what: str, put: str, where: Path) -> DatasetMissingError:
    return DatasetMissingError(f"{what} not found: put {put} under {where}")


def find_dir(parent: Path, names: Sequence[str]) -> Path | None:
    """First child folder of ``parent`` named like one of ``names`` (exact first, then case-insensitive)."""
    parent = Path(parent)
    for name in names:
        if (parent / name).is_dir():
            return parent / name
    if parent.is_dir():
        wanted = {n.lower() for n in names}
        for child in sorted(parent.iterdir()):
            if child.is_dir() and child.name.lower() in wanted:
                return child
    return None


def stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``y`` into (kept, held-out) with ``round(fraction * n_c)`` held out per class.

    Random within each class; both index arrays are sorted. A class with a single sample
    keeps it (held out count capped at ``n_c - 1``) so no class vanishes from training.
    """
    y = np.asarray(y)
    n = y.shape[0]
    if n == 0 or fraction <= 0:
        return np.arange(n), np.arange(0)
    perm = rng.permutation(n)
    by_class = perm[np.argsort(y[perm], kind="stable")]  # random order inside each class
    ys = y[by_class]
    classes, first, counts = np.unique(ys, return_index=True, return_counts=True)
    rank = np.arange(n) - np.repeat(first, counts)
    n_held = np.minimum(np.floor(fraction * counts + 0.5).astype(np.int64), np.maximum(counts - 1, 0))
    held = rank < np.repeat(n_held, counts)
    return np.sort(by_class[~held]), np.sort(by_class[held])


# --------------------------------------------------------------------------------------
# CIFAR (python pickle version)

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")


def _unpickle(path: Path) -> dict:
    """A CIFAR python-version file as a dict with str keys; :class:`DataError` if it is not one."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - any undecodable file is one data error
        raise DataError(f"{path} is not a python-version CIFAR file (unpickling failed: {type(exc).__name__})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a python-version CIFAR file (holds a {type(d).__name__}, not a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_batch(path: Path, label_key: str) -> Arrays:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path} is not a CIFAR batch with {label_key!r}: its keys are {sorted(map(str, d))}")
    try:
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR batch: 'data' is not N x 3072 bytes ({type(exc).__name__})") from None
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels")
    return x, y


def require_cifar10(data_dir: Path) -> Path:
    root = Path(data_dir) / CIFAR10_DIR
    if not all((root / f).is_file() for f in CIFAR10_FILES):
        raise _missing("CIFAR-10", f"the python version (folder {CIFAR10_DIR}/ with data_batch_1..5, test_batch)", Path(data_dir))
    return root


def require_cifar100(data_dir: Path) -> Path:
    root = Path(data_dir) / CIFAR100_DIR
    if not all((root / f).is_file() for f in CIFAR100_FILES):
        raise _missing("CIFAR-100", f"the python version (folder {CIFAR100_DIR}/ with train, test, meta)", Path(data_dir))
    return root


def read_cifar10(data_dir: Path) -> tuple[Arrays, Arrays]:
    """CIFAR-10 train (the five data batches, in order) and test."""
    root = require_cifar10(data_dir)
    parts = [_cifar_batch(root / f, "labels") for f in CIFAR10_FILES[:5]]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, _cifar_batch(root / "test_batch", "labels")


def read_cifar100(data_dir: Path) -> tuple[Arrays, Arrays]:
    """CIFAR-100 train and test with the 100 fine labels."""
    root = require_cifar100(data_dir)
    return _cifar_batch(root / "train", "fine_labels"), _cifar_batch(root / "test", "fine_labels")


# --------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Decode an IDX file (optionally gzipped): 2 zero bytes, dtype code, ndim, big-endian int32 dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError) as exc:  # e.g. a truncated or not-gzip .gz file
        raise DataError(f"{path} is not a readable IDX file ({type(exc).__name__})") from None
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES or len(buf) < 4 + 4 * buf[3]:
        raise DataError(f"{path} is not an IDX file (magic {buf[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[buf[2]]), buf[3]
    dims = np.frombuffer(buf, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    count = int(np.prod(dims))
    offset = 4 + 4 * ndim
    if len(buf) - offset != count * dtype.itemsize:
        raise DataError(f"{path}: header says {tuple(dims)} of {dtype} but the file has {len(buf) - offset} data bytes")
    data = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(tuple(dims))
    return data.astype(dtype.newbyteorder("="), copy=False)


def _find_idx(folder: Path, stem: str) -> Path | None:
    """``stem`` (or the ``.idx`` dot variant), raw before .gz, anywhere under ``folder``."""
    variants = [stem, stem.replace("-idx", ".idx")]
    names = variants + [v + ".gz" for v in variants]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    for name in names:
        found = sorted(p for p in folder.rglob(name) if p.is_file())
        if found:
            return found[0]
    return None


def read_mnist_like(folder: Path, what: str = "MNIST") -> tuple[Arrays, Arrays]:
    """The four IDX files of MNIST or Fashion-MNIST: images uint8 (N,1,28,28), labels int64."""
    paths = {k: _find_idx(Path(folder), v) for k, v in IDX_FILES.items()}
    if any(p is None for p in paths.values()):
        raise _missing(what, f"{', '.join(IDX_FILES.values())} (or .gz)", Path(folder))
    arr = {k: read_idx(p) for k, p in paths.items()}
    out = []
    for s in ("train", "test"):
        x, y = arr[f"{s}_x"], arr[f"{s}_y"].astype(np.int64).reshape(-1)
        if x.ndim != 3 or x.shape[0] != y.shape[0]:
            raise DataError(f"{what} {s}: images {x.shape} and labels {y.shape} do not match")
        out.append((np.asarray(x, dtype=np.uint8)[:, None], y))
    return out[0], out[1]


# --------------------------------------------------------------------------------------
# SVHN (cropped digits, .mat)

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def read_svhn(folder: Path) -> tuple[Arrays, Arrays]:
    """SVHN train/test: X (32,32,3,N) -> (N,3,32,32); label 10 means digit 0."""
    from scipy.io import loadmat

    folder = Path(folder)
    if not all((folder / f).is_file() for f in SVHN_FILES):
        raise _missing("SVHN", " and ".join(SVHN_FILES), folder)
    out = []
    for f in SVHN_FILES:
        try:
            mat = loadmat(folder / f)
            x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
            y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one data error
            raise DataError(f"{folder / f} is not an SVHN .mat file with X (32x32x3xN) and y ({type(exc).__name__})") from None
        out.append((x, np.where(y == 10, 0, y)))
    return out[0], out[1]


# --------------------------------------------------------------------------------------
# image files


def _decode(path: Path, mode: str, size: tuple[int, int] | None, transform: Callable[[Any], Any] | None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The decoded image and its original (H, W); None when the file is unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            original = (im.size[1], im.size[0])
            im = im.convert(mode)
            if transform is not None:
                im = transform(im)
            elif size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8), original
    except OSError:  # unreadable or truncated file (notMNIST ships a few)
        return None


def decode_images_sized(
    paths: Sequence[Path],
    mode: str = "RGB",
    size: int | tuple[int, int] | None = None,
    workers: int | None = None,
    transform: Callable[[Any], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``paths`` to uint8 NCHW (``mode`` "L" gives 1 channel, "RGB" 3), resized to
    ``size`` (W, H) or mapped by ``transform`` (a PIL image to PIL image function).

    Returns ``(images, ok, sizes)``: ``ok`` marks the decoded files (unreadable ones are dropped
    with one warning) and ``sizes`` (n_ok, 2) holds their original (H, W). Without ``size`` or
    ``transform`` all images must share their size.
    """
    if isinstance(size, int):
        size = (size, size)
    channels = 1 if mode == "L" else len(mode)
    if len(paths) == 0:
        h, w = (size[1], size[0]) if size else (0, 0)
        return np.zeros((0, channels, h, w), dtype=np.uint8), np.zeros(0, dtype=bool), np.zeros((0, 2), dtype=np.int64)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda p: _decode(p, mode, size, transform), paths))
    ok = np.array([im is not None for im in images], dtype=bool)
    if not ok.all():
        bad = [str(p) for p, good in zip(paths, ok) if not good]
        warnings.warn(f"skipped {len(bad)} unreadable image(s), e.g. {bad[0]}", stacklevel=2)
    kept = [im for im in images if im is not None]
    if not kept:
        raise DataError(f"none of the {len(paths)} images could be decoded, e.g. {paths[0]}")
    x = np.stack([im for im, _ in kept])
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), ok, np.array([hw for _, hw in kept], dtype=np.int64)


def decode_images(
    paths: Sequence[Path], mode: str = "RGB", size: int | tuple[int, int] | None = None, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_images_sized` without the original sizes: ``(images, ok)``."""
    x, ok, _ = decode_images_sized(paths, mode, size, workers)
    return x, ok


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_class_folders(root: Path, classes: Sequence[str] | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files of a ``root/<class>/<image>`` tree: (paths, labels, class names); classes sorted by name.

    With ``classes`` given, labels follow that list (a folder not in it is an error).
    """
    dirs = _class_dirs(root)
    names = [d.name for d in dirs] if classes is None else list(classes)
    index = {n: i for i, n in enumerate(names)}
    paths: list[Path] = []
    labels: list[np.ndarray] = []
    for d in dirs:
        if d.name not in index:
            raise DataError(f"{d} is a class folder that the training set does not have (classes: {', '.join(names[:10])}...)")
        files = _image_files(d)
        paths += files
        labels.append(np.full(len(files), index[d.name], dtype=np.int64))
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    return paths, y, names


def read_class_folders(
    root: Path,
    *,
    size: int,
    mode: str = "RGB",
    test_fraction: float = 0.2,
    test_seed: int = 0,
) -> tuple[Arrays, Arrays]:
    """A class-per-folder dataset: ``root/train/<class>/*`` + ``root/test/<class>/*``, or ``root/<class>/*``.

    Without a test folder, ``test_fraction`` of every class is held out (stratified, ``test_seed``).
    """
    root = Path(root)
    train_dir, test_dir = find_dir(root, ["train"]), find_dir(root, ["test"])
    if train_dir is not None and test_dir is not None:
        tr_paths, tr_y, names = list_class_folders(train_dir)
        te_paths, te_y, _ = list_class_folders(test_dir, names)
        x_tr, ok_tr = decode_images(tr_paths, mode, size)
        x_te, ok_te = decode_images(te_paths, mode, size)
        return (x_tr, tr_y[ok_tr]), (x_te, te_y[ok_te])
    paths, y, _ = list_class_folders(train_dir if train_dir is not None else root)
    if not paths:
        raise DatasetMissingError(f"no class folders with images under {root}: expected {root}/<class>/<image> or {root}/train/<class>/<image>")
    x, ok = decode_images(paths, mode, size)
    y = y[ok]
    keep, held = stratified_holdout(y, test_fraction, np.random.default_rng(test_seed))
    return (x[keep], y[keep]), (x[held], y[held])


# --------------------------------------------------------------------------------------
# Omniglot (images_background/, images_evaluation/: alphabet/characterNN/*.png, 105x105)

OMNIGLOT_DIRS = ("omniglot", "Omniglot", "omniglot-py")
OMNIGLOT_SETS = ("images_background", "images_evaluation")


def omniglot_root(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    for candidate in [find_dir(data_dir, OMNIGLOT_DIRS), data_dir]:
        if candidate is not None and any(find_dir(candidate, [s]) is not None for s in OMNIGLOT_SETS):
            return candidate
    raise _missing("Omniglot", "folder omniglot/ with images_background/ and images_evaluation/ (alphabet/characterNN/*.png)", data_dir)


OMNIGLOT_ALPHABETS = {"images_background": 30, "images_evaluation": 20}  # 50 tasks in all


def list_omniglot_alphabets(data_dir: Path) -> list[tuple[str, Path]]:
    """(name, folder) of every alphabet: background set then evaluation set, each sorted by name.

    Partial data is an error, never a shorter run: both sets must be there with their 30 and
    20 alphabet folders.
    """
    root = omniglot_root(data_dir)
    out = []
    for s, expected in OMNIGLOT_ALPHABETS.items():
        d = find_dir(root, [s])
        if d is None:
            raise _missing(f"Omniglot {s}/", f"{s}/ ({expected} alphabet folders) next to the other set", root)
        alphabets = _class_dirs(d)
        if len(alphabets) != expected:
            raise DataError(f"{d} has {len(alphabets)} alphabet folders, Omniglot's {s} has {expected}")
        out += [(a.name, a) for a in alphabets]
    names = [n for n, _ in out]
    if len(set(names)) != len(names):  # not the case in the real data; keep names unique anyway
        out = [(f"{folder.parent.name}/{name}", folder) for name, folder in out]
    return out


def read_omniglot_alphabet(folder: Path, size: int = 28) -> Arrays:
    """One alphabet: ink as 255 on 0 (inverted from the PNGs' black on white), (N,1,size,size); label = character."""
    paths, y, _ = list_class_folders(Path(folder))
    if not paths:
        raise DataError(f"{folder} holds no character folders with images (expected characterNN/*.png)")
    x, ok = decode_images(paths, "L", size)
    return np.subtract(255, x, dtype=np.uint8), y[ok]


# --------------------------------------------------------------------------------------
# CUB-200-2011

CUB_DIR = "CUB_200_2011"
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")


CUB_CLASSES = 200
CUB_SPLITS = ("released", "official")
CUB_TRAIN_FRACTION = 0.8  # released protocol: the first ceil(0.8 n) images of each class train


def require_cub(data_dir: Path, split: str = "released") -> Path:
    """The CUB root: ``images/`` (released split) plus the id tables (official split)."""
    data_dir = Path(data_dir)
    files = CUB_FILES if split == "official" else ()
    for root in [data_dir / CUB_DIR, data_dir / CUB_DIR / CUB_DIR]:
        if (root / "images").is_dir() and all((root / f).is_file() for f in files):
            return root
    raise _missing("CUB-200-2011", f"folder {CUB_DIR}/ with images/, {', '.join(CUB_FILES)}", data_dir)


def _id_table(path: Path) -> tuple[np.ndarray, list[str]]:
    """(ids, second column) of a ``<id> <value>`` text file."""
    ids, values = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                if not parts[0].isdigit():
                    raise DataError(f"{path} line {number} does not start with an image id: {line.strip()[:40]!r}")
                ids.append(int(parts[0]))
                values.append(parts[1].strip())
    return np.asarray(ids, dtype=np.int64), values


def cub_index(root: Path, split: str = "released") -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Every CUB image as (paths, labels 0..199, is_train).

    ``released``: the authors' large-scale code (torchvision ``ImageFolder`` order: class folders
    of ``images/`` sorted by name, files sorted by name); the first ``ceil(0.8 n)`` images of
    each class train, the rest test. ``official``: ``train_test_split.txt`` (about 50/50).
    """
    root = Path(root)
    if split == "released":
        dirs = _class_dirs(root / "images")
        if len(dirs) != CUB_CLASSES:
            raise DataError(f"{root / 'images'} has {len(dirs)} class folders, CUB-200-2011 has {CUB_CLASSES} (001.Black_footed_Albatross/ ...)")
        paths: list[Path] = []
        labels, train = [], []
        for c, d in enumerate(dirs):
            files = _image_files(d)
            if not files:
                raise DataError(f"{d} holds no images")
            paths += files
            labels.append(np.full(len(files), c, dtype=np.int64))
            train.append(np.arange(len(files)) < math.ceil(len(files) * CUB_TRAIN_FRACTION))
        return paths, np.concatenate(labels), np.concatenate(train)
    if split != "official":
        raise ValueError(f"unknown CUB split {split!r}: valid choices are {', '.join(CUB_SPLITS)}")
    img_ids, rel_paths = _id_table(root / "images.txt")
    lab_ids, label_text = _id_table(root / "image_class_labels.txt")
    split_ids, is_train = _id_table(root / "train_test_split.txt")
    if not img_ids.size:
        raise DataError(f"{root / 'images.txt'} lists no images")
    order = np.argsort(img_ids)
    img_ids, rel = img_ids[order], [rel_paths[i] for i in order]
    if not (len(img_ids) == len(lab_ids) == len(split_ids)) or not np.array_equal(np.sort(lab_ids), img_ids) or not np.array_equal(np.sort(split_ids), img_ids):
        raise DataError(f"{root}: {', '.join(CUB_FILES)} do not list the same image ids")
    try:
        y = np.asarray(label_text, dtype=np.int64)[np.argsort(lab_ids)] - 1
        train = np.asarray(is_train, dtype=np.int64)[np.argsort(split_ids)] == 1
    except ValueError:
        raise DataError(f"{root}: image_class_labels.txt or train_test_split.txt holds a non-integer value") from None
    return [root / "images" / r for r in rel], y, train


# --------------------------------------------------------------------------------------
# GTSRB

GTSRB_DIRS = ("gtsrb", "GTSRB", "traffic_signs", "traffic-signs")


def _gtsrb_official(root: Path) -> tuple[list[Path], np.ndarray, list[Path], np.ndarray] | None:
    """The official layout: Final_Training/Images/<class>/GT-<class>.csv (+ Final_Test with GT-final_test.csv)."""
    train_dirs = sorted(p for p in root.rglob("Final_Training") if (p / "Images").is_dir())
    if not train_dirs:
        return None
    images = train_dirs[0] / "Images"
    paths: list[Path] = []
    labels: list[int] = []
    for d in _class_dirs(images):
        gt = sorted(d.glob("GT-*.csv"))
        if gt:
            with open(gt[0], newline="") as f:
                rows = list(csv.DictReader(f, delimiter=";"))
            paths += [d / r["Filename"] for r in rows]
            labels += [int(r["ClassId"]) for r in rows]
        else:
            files = _image_files(d)
            paths += files
            labels += [int(d.name)] * len(files)
    te_paths: list[Path] = []
    te_labels: list[int] = []
    test_images = sorted(p / "Images" for p in root.rglob("Final_Test") if (p / "Images").is_dir())
    gt_files = sorted(root.rglob("GT-final_test.csv"))
    if test_images and gt_files:
        with open(gt_files[0], newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        if rows and "ClassId" in rows[0]:
            te_paths = [test_images[0] / r["Filename"] for r in rows]
            te_labels = [int(r["ClassId"]) for r in rows]
    return paths, np.asarray(labels, dtype=np.int64), te_paths, np.asarray(te_labels, dtype=np.int64)


def read_gtsrb(folder: Path, size: int = 32, test_fraction: float = 0.2, test_seed: int = 0) -> tuple[Arrays, Arrays]:
    """GTSRB in the official ppm + csv layout, else class folders; test held out when no labelled test set."""
    official = _gtsrb_official(Path(folder))
    if official is None:
        return read_class_folders(folder, size=size, mode="RGB", test_fraction=test_fraction, test_seed=test_seed)
    paths, y, te_paths, te_y = official
    x, ok = decode_images(paths, "RGB", size)
    y = y[ok]
    if te_paths:
        x_te, ok_te = decode_images(te_paths, "RGB", size)
        return (x, y), (x_te, te_y[ok_te])
    keep, held = stratified_holdout(y, test_fraction, np.random.default_rng(test_seed))
    return (x[keep], y[keep]), (x[held], y[held])


# --------------------------------------------------------------------------------------
# the eight datasets of HAT's mixture, all as uint8 (N, 3, 32, 32)

MIXTURE_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST"),
    "svhn": ("svhn", "SVHN"),
    "fashion-mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST"),
    "traffic-signs": GTSRB_DIRS,
    "facescrub": ("facescrub", "FaceScrub"),
    "notmnist": ("notmnist", "notMNIST"),
}
_MIXTURE_PUT = {
    "mnist": "folder mnist/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or .gz)",
    "fashion-mnist": "folder fashion_mnist/ with the four Fashion-MNIST IDX files (train-images-idx3-ubyte, ..., or .gz)",
    "svhn": "folder svhn/ with train_32x32.mat and test_32x32.mat",
    "traffic-signs": "folder gtsrb/ with GTSRB/Final_Training/Images/<class>/ (ppm + csv) or <class>/ image folders",
    "facescrub": "folder facescrub/ with one image folder per person (or train/ and test/ of them)",
    "notmnist": "folder notmnist/ with one image folder per letter A..J (or train/ and test/ of them)",
}
_MIXTURE_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "svhn": "SVHN", "traffic-signs": "GTSRB", "facescrub": "FaceScrub", "notmnist": "notMNIST"}


def require_mixture_dataset(data_dir: Path, name: str) -> Path:
    """The folder of mixture dataset ``name`` (cheap presence check, no decoding)."""
    data_dir = Path(data_dir)
    if name == "cifar10":
        return require_cifar10(data_dir)
    if name == "cifar100":
        return require_cifar100(data_dir)
    if name not in MIXTURE_DIRS:
        raise ValueError(f"unknown mixture dataset {name!r}: valid choices are cifar10, cifar100, {', '.join(MIXTURE_DIRS)}")
    folder = find_dir(data_dir, MIXTURE_DIRS[name])
    error = _missing(_MIXTURE_NAMES[name], _MIXTURE_PUT[name], data_dir)
    if folder is None:
        raise error
    if name in ("mnist", "fashion-mnist") and any(_find_idx(folder, f) is None for f in IDX_FILES.values()):
        raise error
    if name == "svhn" and not all((folder / f).is_file() for f in SVHN_FILES):
        raise error
    if name in ("traffic-signs", "facescrub", "notmnist") and not _class_dirs(folder):
        raise error
    return folder


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """uint8 NCHW -> (N, 3, 32, 32): 28x28 zero-padded by 2 as HAT did, other sizes resized; gray replicated."""
    if x.shape[2:] == (28, 28):
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    elif x.shape[2:] != (32, 32):
        from PIL import Image

        mode = "L" if x.shape[1] == 1 else "RGB"
        imgs = [np.asarray(Image.fromarray(im[0] if mode == "L" else im.transpose(1, 2, 0), mode).resize((32, 32), Image.Resampling.BILINEAR)) for im in x]
        x = np.stack(imgs)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x)


def read_mixture_dataset(data_dir: Path, name: str, test_seed: int = 0) -> tuple[Arrays, Arrays]:
    """Train and test of mixture dataset ``name`` as uint8 (N, 3, 32, 32) and int64 labels."""
    folder = require_mixture_dataset(data_dir, name)
    if name == "cifar10":
        train, test = read_cifar10(data_dir)
    elif name == "cifar100":
        train, test = read_cifar100(data_dir)
    elif name in ("mnist", "fashion-mnist"):
        train, test = read_mnist_like(folder, _MIXTURE_NAMES[name])
    elif name == "svhn":
        train, test = read_svhn(folder)
    elif name == "traffic-signs":
        train, test = read_gtsrb(folder, size=32, test_seed=test_seed)
    else:
        mode = "L" if name == "notmnist" else "RGB"
        train, test = read_class_folders(folder, size=32, mode=mode, test_seed=test_seed)
    return (to_rgb32(train[0]), train[1]), (to_rgb32(test[0]), test[1])
