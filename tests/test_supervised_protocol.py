"""The trainer on the authors' protocol: lr drops, determinism, bad data, the plasticity
reference, undefined ratios and the help text (issue 9)."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import supervised.train as trainer
from supervised.train import Config, UsageError, format_matrix, main, resolve, summarize, train


def quick(tmp: Path, **kw) -> Config:
    base = dict(runs_dir=str(tmp), progress=False, tensorboard=False, threads=1)
    base.update(kw)
    return Config(**base)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plateau_drop_starts_a_fresh_optimizer_at_the_lower_lr(tmp_path, monkeypatch):
    """Validation loss that never improves after epoch 0, patience 1: every later epoch drops
    the lr by 3 and, as the released code, re-creates the optimizer (no Adam moments kept)."""
    real_evaluate, real_make = trainer.evaluate, trainer._make_optimizer
    calls = {"valid": 0}
    made: list[tuple[float, torch.optim.Optimizer]] = []

    def evaluate(*args, **kwargs):
        loss, acc = real_evaluate(*args, **kwargs)
        if args[5] == "valid":
            calls["valid"] += 1
            return float(calls["valid"]), acc  # rising: only the first epoch of a task is "best"
        return loss, acc

    def make(params, schedule, lr):
        opt = real_make(params, schedule, lr)
        made.append((lr, opt))
        return opt

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    monkeypatch.setattr(trainer, "_make_optimizer", make)
    result = train(quick(tmp_path, method="finetune", num_tasks=1, epochs=4, lr_schedule="plateau", lr_patience=1,
                         lr=0.01, lr_factor=3.0))
    lrs = [lr for lr, _ in made]
    assert lrs == pytest.approx([0.01, 0.01 / 3, 0.01 / 9, 0.01 / 27])  # epochs 1, 2, 3 each drop once
    assert len({id(opt) for _, opt in made}) == 4
    # epoch e trains with the lr set after epoch e-1; the last drop (after the last epoch) trains nothing
    assert [r["lr"] for r in result["timeline"]] == pytest.approx([lrs[0]] + lrs[:3])
    # each fresh Adam starts without moments and fills its state during its own epochs only
    assert all(len(opt.state) > 0 for _, opt in made[:3]) and len(made[3][1].state) == 0


def test_step_schedule_keeps_its_optimizer(tmp_path, monkeypatch):
    made = []
    real_make = trainer._make_optimizer
    monkeypatch.setattr(trainer, "_make_optimizer", lambda p, s, lr: made.append(lr) or real_make(p, s, lr))
    result = train(quick(tmp_path, method="finetune", num_tasks=1, epochs=3, lr_schedule="step", lr=0.01, lr_factor=10.0))
    assert made == [0.01]  # milestones of the preset are beyond 3 epochs; in-place drops otherwise
    assert [r["lr"] for r in result["timeline"]] == [0.01] * 3


def test_seed_everything_sets_cudnn_deterministic_on_gpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: None)  # no GPU needed for the flags
    trainer.seed_everything(3, torch.device("cpu"))
    assert torch.backends.cudnn.deterministic is False and torch.backends.cudnn.benchmark is True
    trainer.seed_everything(3, torch.device("cuda"))
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False


# -- bad or partial data: one line, exit 2, naming the file ------------------------------------


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _common(tmp_path: Path, data: Path, benchmark: str) -> list[str]:
    return ["--benchmark", benchmark, "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
            "--no-progress", "--no-tensorboard", "--method", "finetune", "--epochs", "1"]


def test_corrupt_files_are_one_line_errors_naming_the_file(tmp_path, capsys):
    # a CIFAR-10 batch placed as cifar-100-python/train (and test)
    data = tmp_path / "cifar"
    batch = {b"data": np.zeros((10, 3072), dtype=np.uint8), b"labels": list(range(10)), b"batch_label": b"training batch"}
    for name in ("train", "test", "meta"):
        (data / "cifar-100-python").mkdir(parents=True, exist_ok=True)
        (data / "cifar-100-python" / name).write_bytes(pickle.dumps(batch, protocol=2))
    line = _error_line(capsys, _common(tmp_path, data, "split_cifar100"))
    assert str(data / "cifar-100-python" / "train") in line and "fine_labels" in line
    # a file that is no pickle at all
    (data / "cifar-100-python" / "train").write_bytes(b"\x00garbage")
    line = _error_line(capsys, _common(tmp_path, data, "split_cifar100"))
    assert str(data / "cifar-100-python" / "train") in line and "not a python-version CIFAR file" in line
    # an empty CUB images/ folder
    cub = tmp_path / "cubdata" / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt"):
        (cub / name).write_text("")
    line = _error_line(capsys, _common(tmp_path, tmp_path / "cubdata", "cub200"))
    assert str(cub / "images") in line and "0 class folders" in line
    line = _error_line(capsys, _common(tmp_path, tmp_path / "cubdata", "cub200") + ["--cub-split", "official"])
    assert str(cub / "images.txt") in line and "lists no images" in line
    assert not (tmp_path / "runs").exists()


def test_partial_omniglot_is_a_one_line_error(tmp_path, capsys):
    root = tmp_path / "data" / "omniglot"
    (root / "images_background").mkdir(parents=True)
    (root / "images_evaluation").mkdir()
    line = _error_line(capsys, _common(tmp_path, tmp_path / "data", "omniglot"))
    assert str(root / "images_background") in line and "0 alphabet folders" in line
    (root / "images_evaluation").rmdir()
    for i in range(30):
        (root / "images_background" / f"A{i}" / "character01").mkdir(parents=True)
    line = _error_line(capsys, _common(tmp_path, tmp_path / "data", "omniglot"))
    assert "images_evaluation" in line and "not found" in line
    assert not (tmp_path / "runs").exists()


def test_cub_split_and_valid_fraction_resolve_to_the_released_protocol(tmp_path):
    assert resolve(quick(tmp_path, benchmark="cub200")).valid_fraction == 0.0
    assert resolve(quick(tmp_path, benchmark="cub200")).cub_split == "released"
    assert resolve(quick(tmp_path, benchmark="mixture8")).valid_fraction == 0.15
    assert resolve(quick(tmp_path, benchmark="mixture8")).network == "alexnet_mix"
    assert resolve(quick(tmp_path, benchmark="omniglot", valid_fraction=0.0)).valid_fraction == 0.0
    with pytest.raises(UsageError, match="cub200 only"):
        resolve(quick(tmp_path, cub_split="official"))
    with pytest.raises(UsageError, match="unknown cub_split 'half'"):
        resolve(quick(tmp_path, benchmark="cub200", cub_split="half"))


# -- the fine-tuning reference -----------------------------------------------------------------


def test_reference_must_be_a_finetune_run_in_the_same_setting(tmp_path):
    runs = tmp_path / "runs"
    short = dict(num_tasks=2, epochs=1)
    train(quick(runs, method="finetune", run_name="ft_e1", **short))
    train(quick(runs, method="finetune", run_name="ft_e2", num_tasks=2, epochs=2))
    train(quick(runs, method="finetune", run_name="ft_seed1", seed=1, **short))
    # automatic: only the run with the same schedule, seed and task order
    found = train(quick(runs, method="ewc", **short))
    assert found["reference"].endswith("ft_e1/results.json") and found["plasticity"] is not None
    other_seed = train(quick(runs, method="ewc", seed=2, **short))
    assert other_seed["reference"] is None and other_seed["plasticity"] is None
    # explicit: an error naming what differs
    with pytest.raises(UsageError, match="schedule differs"):
        train(quick(runs, method="mas", reference=str(runs / "ft_e2"), **short))
    with pytest.raises(UsageError, match="seed 1 is not 0"):
        train(quick(runs, method="mas", reference=str(runs / "ft_seed1"), **short))
    with pytest.raises(UsageError, match="tasks differs"):
        train(quick(runs, method="mas", reference=str(runs / "ft_e1"), num_tasks=3, epochs=1))
    with pytest.raises(UsageError, match="method 'ewc' is not finetune"):
        train(quick(runs, method="mas", reference=str(runs / "split_digits_ewc_seed0"), **short))


# -- undefined ratios and the help ---------------------------------------------------------------


def test_stability_of_a_task_that_never_learned_is_undefined_not_nan(tmp_path):
    acc = np.array([[0.9, np.nan, np.nan], [0.8, 0.0, np.nan], [0.6, 0.0, 0.7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy divide warnings
        out = summarize(acc, 3, np.array([0.9, 0.0, 0.8]))
    assert out["stability"] == pytest.approx((0.6 / 0.9 + 0.7 / 0.7) / 2)
    assert np.isnan(out["stability_per_task"][1])
    assert out["plasticity"] == pytest.approx((0.9 / 0.9 + 0.7 / 0.8) / 2)
    line = format_matrix({"accuracy": acc.tolist(), "tasks_done": 3, "stored_floats": 0, **out})
    assert "nan" not in line.lower() and f"S {out['stability']:.4f}" in line
    stuck = np.zeros((2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert summarize(stuck, 2, None)["stability"] is None


def test_help_names_the_module_and_shows_presets(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: python -m supervised.train" in text
    assert "(default: None)" not in text
    flat = " ".join(text.replace("│", " ").split())
    assert "epochs per task (preset: 100 (split_digits 15))" in flat
    assert "mixture8 alexnet_mix" in flat and "(preset: 0.1 (cub200 0, mixture8 0.15))" in flat


def test_results_record_the_resolved_data_protocol(tmp_path):
    result = train(quick(tmp_path, method="finetune", num_tasks=1, epochs=1))
    on_disk = json.loads((tmp_path / "split_digits_finetune_seed0" / "results.json").read_text())
    assert on_disk["valid_fraction"] == result["valid_fraction"] == 0.1 and on_disk["cub_split"] is None
