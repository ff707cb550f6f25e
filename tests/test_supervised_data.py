"""Dataset readers and benchmark splits, on tiny files written in the real on-disk formats.

The generators below write each format from its specification (CIFAR row layout R-plane,
G-plane, B-plane; IDX big-endian header; SVHN HWCN .mat with label 10 for digit 0; GTSRB
``;``-separated csv; CUB id tables), independently of the readers. Synthetic CIFAR/MNIST/
SVHN images carry their label and a unique sample id in fixed pixels, so every split and
relabelling can be checked against the generator's own record.
"""

from __future__ import annotations

import gzip
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from supervised import readers
from supervised.data import (
    BENCHMARKS,
    CIFAR_MEAN,
    CIFAR_STD,
    Benchmark,
    DatasetMissingError,
    TaskData,
    load_benchmark,
)

rng0 = np.random.default_rng(12345)


# --------------------------------------------------------------------------------------
# format writers


def _encoded_images(labels: np.ndarray, uid_start: int, hw: int = 32, channels: int = 3) -> np.ndarray:
    """Random HWC images with label in pixel (0,0,ch0) and a 16-bit uid in pixels (0,1) and (0,2) of ch0."""
    n = len(labels)
    img = rng0.integers(0, 256, size=(n, hw, hw, channels), dtype=np.uint8)
    uid = np.arange(uid_start, uid_start + n)
    img[:, 0, 0, 0] = labels
    img[:, 0, 1, 0] = uid // 256
    img[:, 0, 2, 0] = uid % 256
    return img


def _uid(x: torch.Tensor | np.ndarray, row: int = 0, col: int = 0) -> np.ndarray:
    """Read back the uid from NCHW data (pixels shifted by ``row``/``col`` after padding)."""
    x = np.asarray(x)
    return x[:, 0, row, col + 1].astype(np.int64) * 256 + x[:, 0, row, col + 2]


def _cifar_rows(img_hwc: np.ndarray) -> np.ndarray:
    """CIFAR row format: 1024 red values, then green, then blue, each row-major."""
    planes = [img_hwc[:, :, :, c].reshape(len(img_hwc), -1) for c in range(3)]
    return np.concatenate(planes, axis=1)


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(data_dir: Path, per_class_batch: int = 1, per_class_test: int = 2) -> dict:
    root = data_dir / "cifar-10-batches-py"
    record = {"train": [], "test": None}
    uid = 0
    for b in range(1, 6):
        y = np.repeat(np.arange(10), per_class_batch)
        img = _encoded_images(y, uid)
        uid += len(y)
        record["train"].append((img, y))
        _dump(root / f"data_batch_{b}", {b"batch_label": b"training batch", b"labels": y.tolist(), b"data": _cifar_rows(img), b"filenames": [b"x.png"] * len(y)})
    y = np.repeat(np.arange(10), per_class_test)
    img = _encoded_images(y, 20000)
    record["test"] = (img, y)
    _dump(root / "test_batch", {b"batch_label": b"testing batch", b"labels": y.tolist(), b"data": _cifar_rows(img), b"filenames": [b"x.png"] * len(y)})
    _dump(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": 10})
    return record


def write_cifar100(data_dir: Path, per_class_train: int = 4, per_class_test: int = 2) -> dict:
    root = data_dir / "cifar-100-python"
    record = {}
    for split, per, start in (("train", per_class_train, 30000), ("test", per_class_test, 40000)):
        y = rng0.permutation(np.repeat(np.arange(100), per))
        img = _encoded_images(y, start)
        record[split] = (img, y)
        _dump(root / split, {b"filenames": [b"x.png"] * len(y), b"batch_label": split.encode(), b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(), b"data": _cifar_rows(img)})
    _dump(root / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": [f"g{i}".encode() for i in range(20)]})
    return record


def write_idx(path: Path, arr: np.ndarray, code: int = 0x08) -> None:
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    payload = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes() + np.asarray(arr, dtype=big).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder: Path, gz: bool, uid_start: int, per_class_train: int = 3, per_class_test: int = 1) -> dict:
    record = {}
    suffix = ".gz" if gz else ""
    for split, prefix, per, start in (("train", "train", per_class_train, uid_start), ("test", "t10k", per_class_test, uid_start + 5000)):
        y = np.repeat(np.arange(10), per).astype(np.uint8)
        img = _encoded_images(y, start, hw=28, channels=1)[..., 0]
        record[split] = (img, y)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", img)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y)
    return record


def write_svhn(folder: Path, per_class_train: int = 3, per_class_test: int = 1) -> dict:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    record = {}
    for split, per, start in (("train", per_class_train, 50000), ("test", per_class_test, 55000)):
        digit = np.repeat(np.arange(10), per)
        img = _encoded_images(digit, start)  # N,H,W,C; pixel (0,0,0) = digit
        mat_y = np.where(digit == 0, 10, digit).reshape(-1, 1).astype(np.uint8)  # SVHN: 10 means 0
        savemat(folder / f"{split}_32x32.mat", {"X": img.transpose(1, 2, 3, 0), "y": mat_y})
        record[split] = (img, digit)
    return record


def _color(c: int) -> tuple[int, int, int]:
    return (int(c * 5 % 256), int(255 - c), int(c * 37 % 256))


def _solid(path: Path, size: tuple[int, int], color, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def write_gtsrb(folder: Path, classes: int = 3, per_class: int = 4, test_per_class: int = 2) -> None:
    train = folder / "GTSRB" / "Final_Training" / "Images"
    for c in range(classes):
        d = train / f"{c:05d}"
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for i in range(per_class):
            name = f"00000_{i:05d}.ppm"
            _solid(d / name, (30 + i, 29), _color(c))
            rows.append(f"{name};{30 + i};29;5;5;20;20;{c}")
        (d / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")
    test = folder / "GTSRB" / "Final_Test" / "Images"
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    k = 0
    for c in range(classes):
        for _ in range(test_per_class):
            name = f"{k:05d}.ppm"
            _solid(test / name, (31, 33), _color(c))
            rows.append(f"{name};31;33;5;5;20;20;{c}")
            k += 1
    (folder / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def write_class_folders(folder: Path, classes: list[str], per_class: int, mode: str, size: tuple[int, int]) -> None:
    for c, name in enumerate(classes):
        for i in range(per_class):
            color = _color(c) if mode == "RGB" else 20 * c + 10
            _solid(folder / name / f"img{i}.png", size, color, mode)


# Omniglot's 30 + 20 alphabets; a few with several characters, the rest with one.
OMNIGLOT = {
    "images_background": {"Latin": 3, "Greek": 2, **{f"Bg{i:02d}": 1 for i in range(28)}},
    "images_evaluation": {"Atlantean": 2, **{f"Ev{i:02d}": 1 for i in range(19)}},
}
OMNIGLOT_DRAWINGS = 10


def write_omniglot(folder: Path) -> None:
    for s, alphabets in OMNIGLOT.items():
        for alphabet, chars in alphabets.items():
            for c in range(chars):
                for i in range(OMNIGLOT_DRAWINGS):
                    img = Image.new("1", (105, 105), 1)  # white background, black strokes
                    img.paste(0, (0, 0, 52 + 10 * c, 52))  # black box in the top-left, width by character
                    p = folder / s / alphabet / f"character{c + 1:02d}" / f"{c:04d}_{i:02d}.png"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    img.save(p)


def cub_color(c: int, i: int) -> tuple[int, int, int]:
    """Color of image ``i`` of CUB class ``c`` (0-based): red and blue by class, green by image."""
    return (int(c * 5 % 256), 30 + 40 * i, int(c * 37 % 256))


def write_cub(root: Path, per_class: int = 5) -> dict:
    """200 classes of ``per_class`` solid-color JPEGs (20x14 pixels); id tables written in
    shuffled line order, the official split alternating; file names sort by image index."""
    ids, lines_img, labels, is_train = [], [], {}, {}
    k = 1
    for c in range(200):
        folder = f"{c + 1:03d}.Bird_{c + 1}"
        for i in range(per_class):
            rel = f"{folder}/Bird_{c + 1}_{i}.jpg"
            _solid(root / "images" / rel, (20, 14), cub_color(c, i))
            lines_img.append(f"{k} {rel}")
            labels[k] = c + 1
            is_train[k] = int(i % 2 == 0)
            ids.append(k)
            k += 1
    perm = rng0.permutation(len(ids))
    (root / "images.txt").write_text("\n".join(lines_img[i] for i in perm) + "\n")
    perm = rng0.permutation(len(ids))
    (root / "image_class_labels.txt").write_text("\n".join(f"{ids[i]} {labels[ids[i]]}" for i in perm) + "\n")
    perm = rng0.permutation(len(ids))
    (root / "train_test_split.txt").write_text("\n".join(f"{ids[i]} {is_train[ids[i]]}" for i in perm) + "\n")
    return {"labels": labels, "is_train": is_train}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("data")
    rec = {
        "cifar10": write_cifar10(d),
        "cifar100": write_cifar100(d),
        "mnist": write_mnist(d / "MNIST" / "raw", gz=False, uid_start=60000),
        "fashion": write_mnist(d / "fashion_mnist", gz=True, uid_start=61000),
        "svhn": write_svhn(d / "svhn"),
    }
    write_gtsrb(d / "gtsrb")
    write_class_folders(d / "facescrub", [f"Person_{i}" for i in range(4)], per_class=5, mode="RGB", size=(40, 36))
    letters = list("ABCDEFGHIJ")
    write_class_folders(d / "notmnist" / "train", letters, per_class=3, mode="L", size=(28, 28))
    write_class_folders(d / "notmnist" / "test", letters, per_class=1, mode="L", size=(28, 28))
    (d / "notmnist" / "train" / "A" / "broken.png").write_bytes(b"not a png")  # the real notMNIST has a few
    write_omniglot(d / "omniglot")
    rec["cub"] = write_cub(d / "CUB_200_2011")
    return d, rec


# --------------------------------------------------------------------------------------
# readers


def test_cifar_readers_layout_and_labels(data_dir):
    d, rec = data_dir
    (xtr, ytr), (xte, yte) = readers.read_cifar10(d)
    img = np.concatenate([b[0] for b in rec["cifar10"]["train"]])
    assert xtr.dtype == np.uint8 and xtr.shape == (50, 3, 32, 32) and ytr.dtype == np.int64
    np.testing.assert_array_equal(xtr.transpose(0, 2, 3, 1), img)
    np.testing.assert_array_equal(ytr, np.concatenate([b[1] for b in rec["cifar10"]["train"]]))
    np.testing.assert_array_equal(xte.transpose(0, 2, 3, 1), rec["cifar10"]["test"][0])
    (xtr, ytr), (xte, yte) = readers.read_cifar100(d)
    np.testing.assert_array_equal(xtr.transpose(0, 2, 3, 1), rec["cifar100"]["train"][0])
    np.testing.assert_array_equal(ytr, rec["cifar100"]["train"][1])
    np.testing.assert_array_equal(yte, rec["cifar100"]["test"][1])
    assert ytr.min() == 0 and ytr.max() == 99


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_all_types(tmp_path, code, dtype, gz):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo, hi = (info.min, info.max) if info else (-1e6, 1e6)
    arr = rng0.uniform(lo, hi, size=(3, 4, 5)).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, arr, code)
    out = readers.read_idx(path)
    assert out.shape == (3, 4, 5) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_rejects_bad_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        readers.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        readers.read_idx(tmp_path / "short")


def test_mnist_reader_raw_layout_and_gz(data_dir):
    d, rec = data_dir
    for folder, key in ((d / "MNIST", "mnist"), (d / "fashion_mnist", "fashion")):
        (xtr, ytr), (xte, yte) = readers.read_mnist_like(folder)
        assert xtr.shape == (30, 1, 28, 28) and xte.shape == (10, 1, 28, 28) and xtr.dtype == np.uint8
        np.testing.assert_array_equal(xtr[:, 0], rec[key]["train"][0])
        np.testing.assert_array_equal(ytr, rec[key]["train"][1].astype(np.int64))
        assert ytr.dtype == np.int64


def test_svhn_reader_maps_label_10_to_0(data_dir):
    d, rec = data_dir
    (xtr, ytr), (xte, yte) = readers.read_svhn(d / "svhn")
    assert xtr.shape == (30, 3, 32, 32) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    np.testing.assert_array_equal(xtr.transpose(0, 2, 3, 1), rec["svhn"]["train"][0])
    np.testing.assert_array_equal(ytr, rec["svhn"]["train"][1])
    np.testing.assert_array_equal(ytr, xtr[:, 0, 0, 0])  # the digit drawn in the image
    assert set(ytr.tolist()) == set(range(10)) and set(yte.tolist()) == set(range(10))


def test_gtsrb_official_layout(data_dir):
    d, _ = data_dir
    (xtr, ytr), (xte, yte) = readers.read_gtsrb(d / "gtsrb", size=32)
    assert xtr.shape == (12, 3, 32, 32) and xte.shape == (6, 3, 32, 32)
    for x, y in ((xtr, ytr), (xte, yte)):
        colors = np.array([_color(c) for c in y])
        np.testing.assert_array_equal(x[:, :, 16, 16], colors)  # solid image keeps its color through resize
    assert sorted(set(yte.tolist())) == [0, 1, 2]


def test_gtsrb_class_folder_fallback_holds_out_test(tmp_path):
    write_class_folders(tmp_path / "gtsrb", [f"{c:05d}" for c in range(3)], per_class=5, mode="RGB", size=(25, 25))
    (xtr, ytr), (xte, yte) = readers.read_gtsrb(tmp_path / "gtsrb", size=32, test_fraction=0.2, test_seed=0)
    assert len(ytr) == 12 and len(yte) == 3 and sorted(yte.tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(xtr[:, :, 0, 0], np.array([_color(c) for c in ytr]))


def test_class_folders_train_test_and_broken_file(data_dir):
    d, _ = data_dir
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        (xtr, ytr), (xte, yte) = readers.read_class_folders(d / "notmnist", size=32, mode="L")
    assert xtr.shape == (30, 1, 32, 32) and xte.shape == (10, 1, 32, 32)
    np.testing.assert_array_equal(xtr[:, 0, 5, 5], 20 * ytr + 10)  # class c drawn with gray 20c+10
    np.testing.assert_array_equal(np.bincount(ytr), [3] * 10)


def test_omniglot_reader(data_dir):
    d, _ = data_dir
    alphabets = readers.list_omniglot_alphabets(d)
    names = [a for a, _ in alphabets]
    assert len(names) == 50 and names[28:31] == ["Greek", "Latin", "Atlantean"]  # background sorted, then evaluation
    x, y = readers.read_omniglot_alphabet(alphabets[29][1], size=28)
    assert x.shape == (3 * OMNIGLOT_DRAWINGS, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [OMNIGLOT_DRAWINGS] * 3)
    assert (x[:, 0, :10, :10] == 255).all() and (x[:, 0, 20:, 20:] == 0).all()  # ink high, background 0
    # the box is wider for later characters: more ink
    ink = x.reshape(len(y), -1).astype(float).mean(1)
    assert (np.diff([ink[y == c].mean() for c in range(3)]) > 0).all()


def test_cub_index_released_and_official_splits(data_dir):
    d, rec = data_dir
    root = readers.require_cub(d)
    paths, y, train = readers.cub_index(root, "released")
    assert len(paths) == 1000 and np.bincount(y).tolist() == [5] * 200
    index = np.array([int(p.stem.rsplit("_", 1)[1]) for p in paths])  # Bird_<c>_<i>.jpg
    np.testing.assert_array_equal(train, index < 4)  # first ceil(0.8 * 5) = 4 files of each class
    assert all(p.parent.name.startswith(f"{c + 1:03d}.") for p, c in zip(paths, y))
    paths, y, train = readers.cub_index(root, "official")
    expected = {(f"Bird_{rec['cub']['labels'][k]}_{(k - 1) % 5}", rec["cub"]["is_train"][k] == 1) for k in rec["cub"]["labels"]}
    assert {(p.stem, bool(t)) for p, t in zip(paths, train)} == expected
    assert all(p.stem.split("_")[1] == str(c + 1) for p, c in zip(paths, y))


def test_stratified_holdout():
    y = np.repeat(np.arange(4), [10, 5, 1, 20])
    keep, held = readers.stratified_holdout(y, 0.2, np.random.default_rng(0))
    assert np.intersect1d(keep, held).size == 0 and np.union1d(keep, held).size == len(y)
    np.testing.assert_array_equal(np.bincount(y[held], minlength=4), [2, 1, 0, 4])
    keep2, held2 = readers.stratified_holdout(y, 0.2, np.random.default_rng(1))
    assert not np.array_equal(held, held2)


# --------------------------------------------------------------------------------------
# benchmarks


def _check_task(task: TaskData, channels: int, hw: tuple[int, int]) -> None:
    for s in ("train", "valid", "test"):
        x, y = task.split(s)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape[1:] == (channels, *hw)
        if len(y):
            assert 0 <= int(y.min()) and int(y.max()) < task.num_classes
    assert len(task.mean) == len(task.std) == channels
    assert set(task.y_train.tolist()) == set(range(task.num_classes))


def test_split_digits_runs_without_data():
    from sklearn.datasets import load_digits

    bench = load_benchmark("split_digits", data_dir="/nonexistent", seed=0)
    assert isinstance(bench, Benchmark) and bench.input_shape == (1, 8, 8) and len(bench.tasks) == 5
    digits = load_digits()
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8)
    lookup: dict[bytes, set[int]] = {}
    for img, lab in zip(expected, digits.target):
        lookup.setdefault(img.tobytes(), set()).add(int(lab))
    seen = []
    total = 0
    for task in bench.tasks:
        _check_task(task, 1, (8, 8))
        a, b = (int(v) for v in task.name.split("-")[1:])
        seen += [a, b]
        for s in ("train", "valid", "test"):
            x, y = task.split(s)
            total += len(y)
            for img, lab in zip(x[:, 0].numpy(), y.tolist()):
                assert (a, b)[lab] in lookup[img.tobytes()]  # label 0 is digit a, label 1 digit b
    assert sorted(seen) == list(range(10)) and total == len(digits.target)
    assert bench.num_classes == [2] * 5


def test_split_cifar100_splits(data_dir):
    d, rec = data_dir
    bench = load_benchmark("split_cifar100", d, seed=3, valid_fraction=0.25)
    assert bench.input_shape == (3, 32, 32) and len(bench.tasks) == 10
    img_tr, y_tr = rec["cifar100"]["train"]
    img_te, y_te = rec["cifar100"]["test"]
    uid_tr = 30000 + np.arange(len(y_tr))
    uid_te = 40000 + np.arange(len(y_te))
    covered = []
    for task in bench.tasks:
        _check_task(task, 3, (32, 32))
        assert task.num_classes == 10 and task.mean == CIFAR_MEAN and task.std == CIFAR_STD
        lo, hi = (int(v) for v in task.name.rsplit("-", 1)[1].split(".."))
        assert hi - lo == 9
        covered += list(range(lo, hi + 1))
        for s in ("train", "valid", "test"):
            x, y = task.split(s)
            np.testing.assert_array_equal(y.numpy(), x[:, 0, 0, 0].numpy().astype(np.int64) - lo)  # relabel
        tr, va, te = _uid(task.x_train), _uid(task.x_valid), _uid(task.x_test)
        in_block = (y_tr >= lo) & (y_tr <= hi)
        assert np.intersect1d(tr, va).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), uid_tr[in_block])
        np.testing.assert_array_equal(np.sort(te), uid_te[(y_te >= lo) & (y_te <= hi)])
        np.testing.assert_array_equal(np.bincount(task.y_valid.numpy(), minlength=10), [1] * 10)  # 25% of 4
    assert sorted(covered) == list(range(100))


def test_seed_determinism_and_order(data_dir):
    d, _ = data_dir
    a = load_benchmark("split_cifar100", d, seed=5, valid_fraction=0.25)
    b = load_benchmark("split_cifar100", d, seed=5, valid_fraction=0.25)
    c = load_benchmark("split_cifar100", d, seed=6, valid_fraction=0.25)
    assert [t.name for t in a.tasks] == [t.name for t in b.tasks]
    for ta, tb in zip(a.tasks, b.tasks):
        assert torch.equal(ta.x_train, tb.x_train) and torch.equal(ta.y_valid, tb.y_valid)
    assert [t.name for t in a.tasks] != [t.name for t in c.tasks]
    assert sorted(t.name for t in a.tasks) == sorted(t.name for t in c.tasks)
    da = [t.name for t in load_benchmark("split_digits", seed=0).tasks]
    assert da == [t.name for t in load_benchmark("split_digits", seed=0).tasks]
    assert da != [t.name for t in load_benchmark("split_digits", seed=1).tasks]
    # the validation split also moves with the seed
    ta = next(t for t in a.tasks if t.name == c.tasks[0].name)
    assert not np.array_equal(np.sort(_uid(ta.x_valid)), np.sort(_uid(c.tasks[0].x_valid)))


def test_batches_normalization_matches_numpy(data_dir):
    d, rec = data_dir
    task = load_benchmark("split_cifar100", d, seed=0, num_tasks=1).tasks[0]
    img_tr, y_tr = rec["cifar100"]["train"]
    by_uid = {30000 + i: img for i, img in enumerate(img_tr)}
    mean, std = np.array(CIFAR_MEAN), np.array(CIFAR_STD)
    g = torch.Generator().manual_seed(0)
    xs, ys = zip(*task.batches("train", 7, shuffle=True, generator=g))
    assert all(len(yb) <= 7 for yb in ys) and max(len(yb) for yb in ys) == 7
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(y) == task.size("train")
    raw = task.x_train.numpy()
    uids = _uid(raw)
    # the shuffled batches hold every train sample once, labels aligned with their images
    order = {u: i for i, u in enumerate(uids)}
    expected = []
    for xb in x.numpy():
        # decode this sample's uid from the normalized pixels, then recompute its normalization in numpy
        pix = np.rint((xb[0, 0, 1:3] * std[0] + mean[0]) * 255).astype(np.int64)
        u = int(pix[0] * 256 + pix[1])
        hwc = by_uid[u].astype(np.float64) / 255.0
        expected.append(((hwc - mean) / std).transpose(2, 0, 1))
        assert int(y[len(expected) - 1]) == int(task.y_train[order[u]])
    np.testing.assert_allclose(x.numpy(), np.stack(expected), rtol=0, atol=1e-5)
    assert len({int(np.rint((xb[0, 0, 1] * std[0] + mean[0]) * 255)) * 256 + int(np.rint((xb[0, 0, 2] * std[0] + mean[0]) * 255)) for xb in x.numpy()}) == len(y)
    # unshuffled batches keep storage order; inputs() yields the same x only
    x_plain = torch.cat([xb for xb, _ in task.batches("test", 5)])
    x_inp = torch.cat(list(task.inputs("test", batch_size=3)))
    assert torch.equal(x_plain, x_inp)
    ref = (task.x_test.numpy().astype(np.float64) / 255 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(x_plain.numpy(), ref, atol=1e-5)
    # same generator seed, same order; another seed, another order
    y1 = torch.cat([yb for _, yb in task.batches("train", 7, shuffle=True, generator=torch.Generator().manual_seed(0))])
    y2 = torch.cat([yb for _, yb in task.batches("train", 7, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(y1, y) and not torch.equal(y1, y2)
    with pytest.raises(ValueError, match="unknown split"):
        task.batches("dev", 4)
    with pytest.raises(ValueError, match="batch_size"):
        task.inputs("train", batch_size=0)


def test_float32_task_batches_leave_storage_untouched():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 2, 3, 3, generator=g)
    y = torch.arange(10) % 3
    empty = torch.zeros(0, 2, 3, 3)
    task = TaskData("f", 3, x.clone(), y, empty, y[:0], x.clone(), y, mean=(0.5, 0.25), std=(0.2, 0.4))
    for shuffle in (False, True):
        out = torch.cat([xb for xb, _ in task.batches("train", 4, shuffle=shuffle, generator=torch.Generator().manual_seed(3))])
        assert torch.equal(task.x_train, x)  # no in-place damage to the stored float data
    ref = (x.numpy().astype(np.float64) - np.array([0.5, 0.25])[:, None, None]) / np.array([0.2, 0.4])[:, None, None]
    np.testing.assert_allclose(torch.cat(list(task.inputs("test", 3))).numpy(), ref, atol=1e-6)
    assert len(list(task.batches("valid", 4))) == 0
    with pytest.raises(ValueError, match="channels"):
        TaskData("bad", 3, x, y, empty, y[:0], x, y, mean=(0.5,), std=(0.2,))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda():
    task = load_benchmark("split_digits", num_tasks=1).tasks[0]
    xb, yb = next(task.batches("train", 16, device="cuda"))
    assert xb.is_cuda and yb.is_cuda and xb.dtype == torch.float32
    ref, _ = next(task.batches("train", 16))
    torch.testing.assert_close(xb.cpu(), ref)


def test_split_cifar10_100(data_dir):
    d, rec = data_dir
    bench = load_benchmark("split_cifar10_100", d, seed=1)
    assert len(bench.tasks) == 11 and bench.tasks[0].name == "cifar10" and bench.num_classes == [10] * 11
    t0 = bench.tasks[0]
    _check_task(t0, 3, (32, 32))
    np.testing.assert_array_equal(t0.y_train.numpy(), t0.x_train[:, 0, 0, 0].numpy())
    assert len(t0.y_train) + len(t0.y_valid) == 50 and len(t0.y_test) == 20
    names = [t.name for t in bench.tasks[1:]]
    assert names == [t.name for t in load_benchmark("split_cifar100", d, seed=1).tasks]
    short = load_benchmark("split_cifar10_100", d, seed=1, num_tasks=3)
    assert [t.name for t in short.tasks] == [t.name for t in bench.tasks[:3]]


def test_task_order_is_sklearn_shuffle_of_the_released_code(data_dir):
    from sklearn.utils import shuffle

    d, _ = data_dir
    assert shuffle(np.arange(10), random_state=0).tolist() == [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]  # the check
    for seed in (0, 1, 7):
        blocks = [int(t.name.rsplit("-", 1)[1].split("..")[0]) // 10 for t in load_benchmark("split_cifar100", d, seed=seed).tasks]
        assert blocks == shuffle(np.arange(10), random_state=seed).tolist()
        later = [t.name for t in load_benchmark("split_cifar10_100", d, seed=seed, num_tasks=4).tasks[1:]]
        assert later == [f"cifar100-classes-{10 * b}..{10 * b + 9}" for b in blocks[:3]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken notMNIST file
        mixture = [t.name for t in load_benchmark("mixture8", d, seed=3, num_tasks=3).tasks]
    hat_ids = ["cifar10", "cifar100", "mnist", "svhn", "fashion-mnist", "traffic-signs", "facescrub", "notmnist"]
    assert mixture == [hat_ids[i] for i in shuffle(np.arange(8), random_state=3)[:3]]


def test_omniglot_benchmark(data_dir):
    d, _ = data_dir
    a = load_benchmark("omniglot", d, seed=0)
    b = load_benchmark("omniglot", d, seed=1)
    assert len(a.tasks) == 50 and [t.name for t in a.tasks] == [t.name for t in b.tasks]  # order fixed (paper)
    assert a.input_shape == (1, 28, 28) and a.num_classes[28:31] == [2, 3, 2]
    moved = 0
    for task, other in zip(a.tasks, b.tasks):
        _check_split_sizes = (task.size("train"), task.size("valid"), task.size("test"))
        k = task.num_classes
        n = k * OMNIGLOT_DRAWINGS
        assert _check_split_sizes == (8 * (n // 10), n // 10, n - 9 * (n // 10))  # released 80/10/10 counts
        x_all = torch.cat([task.x_train, task.x_valid, task.x_test])
        assert x_all.shape == (n, 1, 28, 28) and task.y_test.max() < k
        full = task.x_train.numpy().astype(np.float64) / 255
        assert task.mean[0] == pytest.approx(full.mean(), abs=1e-9)
        moved += not torch.equal(task.y_test, other.y_test) or not torch.equal(task.x_test, other.x_test)
    assert moved > 0  # the split is drawn by seed
    latin = load_benchmark("omniglot", d, seed=0, valid_fraction=0.0, num_tasks=30).tasks[29]
    assert (latin.size("train"), latin.size("valid"), latin.size("test")) == (27, 0, 3)
    assert load_benchmark("omniglot", d, num_tasks=1).num_classes == [1]


def test_omniglot_partial_data_is_an_error(data_dir, tmp_path):
    import shutil

    d, _ = data_dir
    root = tmp_path / "omniglot"
    shutil.copytree(d / "omniglot" / "images_background", root / "images_background")
    with pytest.raises(DatasetMissingError, match="images_evaluation"):
        load_benchmark("omniglot", tmp_path)
    shutil.copytree(d / "omniglot" / "images_evaluation", root / "images_evaluation")
    shutil.rmtree(root / "images_background" / "Latin")
    with pytest.raises(readers.DataError, match="has 29 alphabet folders, Omniglot's images_background has 30"):
        load_benchmark("omniglot", tmp_path)
    for child in (root / "images_background").iterdir():
        shutil.rmtree(child)
    with pytest.raises(readers.DataError, match="has 0 alphabet folders"):
        load_benchmark("omniglot", tmp_path)


def _cub_reference_tasks(seed: int) -> list[list[int]]:
    """Classes (0-based, in local-label order) of each task per the released loader: label
    ``shuffle_idx[c]``, task t = labels 20t..20t+19, local label = label % 20."""
    from sklearn.utils import shuffle

    shuffle_idx = shuffle(np.arange(200), random_state=seed)
    tasks = [[0] * 20 for _ in range(10)]
    for c in range(200):
        tasks[shuffle_idx[c] // 20][shuffle_idx[c] % 20] = c
    return tasks


def test_cub200_benchmark_follows_the_released_protocol(data_dir):
    d, rec = data_dir
    bench = load_benchmark("cub200", d, seed=2, num_tasks=2)
    assert bench.input_shape == (3, 224, 224) and len(bench.tasks) == 2
    reference = _cub_reference_tasks(2)
    for t, task in enumerate(bench.tasks):
        assert task.num_classes == 20 and task.size("valid") == 0  # no validation split
        assert task.mean == (0.485, 0.500, 0.432) and task.std == (0.232, 0.227, 0.266)
        assert task.x_train.shape[1:] == (3, 256, 256) and task.x_test.shape[1:] == (3, 224, 224)
        assert task.size("train") == 80 and task.size("test") == 20  # 4 + 1 of 5 images per class
        np.testing.assert_array_equal(task.train_sizes.numpy(), [[14, 20]] * 80)
        for x, y, images in ((task.x_train, task.y_train, range(4)), (task.x_test, task.y_test, [4])):
            pix = x[:, :, 100, 100].numpy().astype(int)
            for p, label in zip(pix, y.tolist()):
                c = reference[t][label]
                assert min(np.abs(p - cub_color(c, i)).max() for i in images) <= 8  # JPEG is lossy
        batches = list(task.batches("train", 32, shuffle=True, generator=torch.Generator().manual_seed(0)))
        assert [tuple(xb.shape) for xb, _ in batches] == [(32, 3, 224, 224), (32, 3, 224, 224), (16, 3, 224, 224)]
    assert [t.name for t in bench.tasks] == ["cub200-0-seed2", "cub200-1-seed2"]
    official = load_benchmark("cub200", d, seed=2, num_tasks=1, cub_split="official", valid_fraction=0.0).tasks[0]
    assert official.size("train") == 60 and official.size("test") == 40  # alternating is_train over 5 images
    with pytest.raises(ValueError, match="cub_split"):
        load_benchmark("cub200", d, cub_split="half")


def test_random_resized_crop_matches_pil_crop_and_resize():
    """The batch crop (one grid_sample) against PIL's crop + bilinear resize of the same box,
    for boxes smaller than the output (upscaling, where both are plain bilinear)."""
    from PIL import Image

    from supervised.augment import apply_crops, sample_crops

    gen = np.random.default_rng(0)
    img = gen.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(img).resize((256, 256), Image.Resampling.BILINEAR))  # smooth content
    x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None].repeat(3, 1, 1, 1)
    sizes = torch.tensor([[256, 256]] * 3)
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [0.0, 0.0, 200.0, 150.0], [56.0, 30.0, 180.0, 210.0]], dtype=torch.float64)
    flips = torch.tensor([False, True, False])
    out = apply_crops(x, sizes, boxes, flips, out=224).numpy()
    for k, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = Image.fromarray(img).resize((224, 224), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        ref = np.asarray(ref).astype(np.float64).transpose(2, 0, 1)
        if flips[k]:
            ref = ref[:, :, ::-1]
        assert np.abs(out[k] - ref).mean() < 1.0 and np.abs(out[k] - ref).max() <= 6
    # the sampled boxes: inside the image, area 8%..100%, aspect 3/4..4/3, about half flipped
    sizes = torch.tensor([[375, 500], [500, 333]] * 500)
    boxes, flips = sample_crops(sizes, torch.Generator().manual_seed(1))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    frac, aspect = (h * w) / (sizes[:, 0] * sizes[:, 1]), w / h
    assert frac.min() >= 0.075 and frac.max() <= 1.0 and aspect.min() >= 0.74 and aspect.max() <= 1.35
    assert 0.4 < flips.float().mean() < 0.6 and frac.std() > 0.2


def test_test_transform_is_resize_shorter_then_center_crop():
    from PIL import Image

    from supervised.augment import resize_center_crop

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(200, 300, 3), dtype=np.uint8))
    out = resize_center_crop(img)
    assert out.size == (224, 224)
    # shorter side 200 -> 256, longer 300 -> int(256 * 300 / 200) = 384; crop offsets (80, 16)
    ref = img.resize((384, 256), Image.Resampling.BILINEAR).crop((80, 16, 304, 240))
    assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_mixture8(data_dir):
    d, rec = data_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken notMNIST file
        a = load_benchmark("mixture8", d, seed=0)
        b = load_benchmark("mixture8", d, seed=2, num_tasks=3)
    names = [t.name for t in a.tasks]
    assert sorted(names) == sorted(["cifar10", "cifar100", "mnist", "svhn", "fashion-mnist", "traffic-signs", "facescrub", "notmnist"])
    assert names[:3] != [t.name for t in b.tasks] and len(b.tasks) == 3
    by_name = {t.name: t for t in a.tasks}
    assert by_name["cifar100"].size("valid") == 100  # released mixture: 15% of 4 per class rounds to 1 (10% would give 0)
    expected_classes = {"cifar10": 10, "cifar100": 100, "mnist": 10, "svhn": 10, "fashion-mnist": 10, "traffic-signs": 3, "facescrub": 4, "notmnist": 10}
    for task in a.tasks:
        _check_task(task, 3, (32, 32))
        assert task.num_classes == expected_classes[task.name]
    by = {t.name: t for t in a.tasks}
    m = by["mnist"]
    x = m.x_train.numpy()
    assert (x[:, :, :2] == 0).all() and (x[:, :, -2:] == 0).all() and (x[:, :, :, :2] == 0).all()  # 2-px zero pad
    assert (x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all()  # gray replicated
    np.testing.assert_array_equal(m.y_train.numpy(), x[:, 0, 2, 2])  # label pixel moved by the pad
    np.testing.assert_array_equal(np.sort(np.concatenate([_uid(x, 2, 2), _uid(m.x_valid.numpy(), 2, 2)])), 60000 + np.arange(30))
    s = by["svhn"]
    np.testing.assert_array_equal(s.y_test.numpy(), s.x_test[:, 0, 0, 0].numpy())
    assert by["svhn"].mean == pytest.approx((0.4377, 0.4438, 0.4728)) and by["mnist"].std == pytest.approx((0.2752,) * 3)
    assert len(by["notmnist"].y_test) == 10 and len(by["facescrub"].y_test) == 4  # test folder vs 20% held out


# --------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "name,needle",
    [
        ("split_cifar100", "cifar-100-python"),
        ("split_cifar10_100", "cifar-10-batches-py"),
        ("omniglot", "images_background"),
        ("cub200", "CUB_200_2011"),
        ("mixture8", "put"),
    ],
)
def test_missing_data_message(tmp_path, name, needle):
    with pytest.raises(DatasetMissingError) as err:
        load_benchmark(name, tmp_path / "empty")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and needle in msg and str(tmp_path / "empty") in msg
    assert "\n" not in msg and "not found" in msg


def test_mixture_names_the_missing_dataset(data_dir, tmp_path):
    d, _ = data_dir
    (tmp_path / "cifar-10-batches-py").symlink_to(d / "cifar-10-batches-py")
    (tmp_path / "cifar-100-python").symlink_to(d / "cifar-100-python")
    with pytest.raises(DatasetMissingError, match="train_32x32.mat"):
        readers.require_mixture_dataset(tmp_path, "svhn")
    with pytest.raises(DatasetMissingError, match="not found: put folder "):
        load_benchmark("mixture8", tmp_path)  # the first non-CIFAR dataset of the order is missing
    readers.require_mixture_dataset(tmp_path, "cifar100")


def test_bad_arguments():
    with pytest.raises(ValueError) as err:
        load_benchmark("imagenet")
    assert all(b in str(err.value) for b in BENCHMARKS)
    with pytest.raises(ValueError, match="valid_fraction"):
        load_benchmark("split_digits", valid_fraction=1.0)
    with pytest.raises(ValueError, match="num_tasks"):
        load_benchmark("split_digits", num_tasks=0)
    with pytest.raises(ValueError, match="seed"):
        load_benchmark("split_digits", seed=-1)
    assert len(load_benchmark("split_digits", num_tasks=2).tasks) == 2
