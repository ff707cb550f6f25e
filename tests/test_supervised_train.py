"""The supervised trainer end to end on split_digits, its outputs, resume, networks, weights and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from supervised import presets
from supervised.networks import (
    ResNet18Trunk,
    WeightsMismatchError,
    build_network,
    build_trunk,
    is_plain_chain,
    load_pretrained,
)
from supervised.train import Config, UsageError, build_method, main, resolve, train

ROOT = Path(__file__).resolve().parents[1]


def quick(tmp: Path, **kw) -> Config:
    base = dict(runs_dir=str(tmp), progress=False, tensorboard=False, threads=1)
    base.update(kw)
    return Config(**base)


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Full split_digits sequences (preset schedule) with fine-tuning, then AGS-CL, seed 1."""
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("runs")
    finetune = train(quick(runs, method="finetune", seed=1))
    agscl = train(quick(runs, method="agscl", seed=1))
    return runs, finetune, agscl


def matrix(result: dict) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in result["accuracy"]], dtype=float)


def test_agscl_forgets_clearly_less_than_finetune(digits_runs):
    _, finetune, agscl = digits_runs
    assert finetune["finished"] and agscl["finished"]
    assert finetune["forgetting"] >= 0.05  # the sequence really does interfere
    assert agscl["forgetting"] <= finetune["forgetting"] - 0.05
    assert agscl["average_accuracy"][-1] > finetune["average_accuracy"][-1]
    # every task is learned by both (task-aware binary digit pairs)
    assert min(np.diag(matrix(agscl))) > 0.85 and min(np.diag(matrix(finetune))) > 0.85


def test_results_file_is_consistent_with_its_matrix(digits_runs):
    runs, finetune, agscl = digits_runs
    path = runs / "split_digits_agscl_seed1" / "results.json"
    text = path.read_text()
    assert "NaN" not in text
    on_disk = json.loads(text)
    assert on_disk["accuracy"] == agscl["accuracy"]
    a, f = matrix(agscl), matrix(finetune)
    t = a.shape[0]
    assert t == 5 and all(np.isnan(a[i, i + 1 :]).all() for i in range(t))
    # recomputed here, independently of reporting.metrics
    avg = [sum(a[i, : i + 1]) / (i + 1) for i in range(t)]
    forgetting = sum(max(a[i, j] for i in range(j, t - 1)) - a[t - 1, j] for j in range(t - 1)) / (t - 1)
    bwt = sum(a[t - 1, j] - a[j, j] for j in range(t - 1)) / (t - 1)
    stability = sum(a[t - 1, j] / max(a[i, j] for i in range(j, t)) for j in range(t)) / t
    plasticity = sum(a[j, j] / f[j, j] for j in range(t)) / t
    assert on_disk["average_accuracy"] == pytest.approx(avg)
    assert on_disk["forgetting"] == pytest.approx(forgetting)
    assert on_disk["bwt"] == pytest.approx(bwt)
    assert on_disk["stability"] == pytest.approx(stability)
    assert on_disk["plasticity"] == pytest.approx(plasticity)
    assert on_disk["reference"].endswith("split_digits_finetune_seed1/results.json")
    # AGS-CL stores one float per trunk node: digits net = conv 32 + conv 32 + fc 64
    assert on_disk["stored_floats"] == 32 + 32 + 64
    assert on_disk["network"]["nodes"] == 128
    assert on_disk["hparams"]["lam"] == presets.hparams_for("split_digits", "agscl")["lam"]
    assert len(on_disk["per_task"]) == 5 and len(on_disk["timeline"]) == 5 * on_disk["schedule"]["epochs"]
    sparsity = [p["stats"]["sparsity"] for p in on_disk["per_task"]]
    assert all(0 <= s <= 1 for s in sparsity) and sparsity[-1] <= sparsity[0]
    assert {"torch", "numpy", "python"} <= set(on_disk["versions"])
    assert finetune["plasticity"] == pytest.approx(1.0) and finetune["stored_floats"] == 0


def test_resume_continues_at_the_last_finished_task(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    whole = train(quick(tmp_path / "a", method="agscl", num_tasks=3, epochs=2))

    import supervised.train as trainer

    real = trainer.build_method

    def interrupting(*args, **kwargs):
        method = real(*args, **kwargs)
        begin = method.begin_task

        def begin_task(task):
            if task == 2:
                raise KeyboardInterrupt
            begin(task)

        method.begin_task = begin_task
        return method

    monkeypatch.setattr(trainer, "build_method", interrupting)
    config = quick(tmp_path / "b", method="agscl", num_tasks=3, epochs=2, tensorboard=True)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    partial = json.loads((tmp_path / "b" / "split_digits_agscl_seed0" / "results.json").read_text())
    assert partial["tasks_done"] == 2 and not partial["finished"]
    monkeypatch.setattr(trainer, "build_method", real)
    # an existing run is never silently replaced
    with pytest.raises(UsageError, match="already exists"):
        train(config)
    with pytest.raises(UsageError, match="differs"):
        train(quick(tmp_path / "b", method="agscl", num_tasks=3, epochs=3, resume=True))
    resumed = train(quick(tmp_path / "b", method="agscl", num_tasks=3, epochs=2, resume=True, tensorboard=True))
    assert resumed["finished"]
    assert resumed["accuracy"] == whole["accuracy"]
    assert [r["task"] for r in resumed["timeline"]] == [0, 0, 1, 1, 2, 2]
    assert resumed["per_task"][-1]["stats"]["stored_floats"] == whole["per_task"][-1]["stats"]["stored_floats"]
    assert list((tmp_path / "b" / "split_digits_agscl_seed0" / "tb").glob("events.out.tfevents.*"))


def test_ablation_flags_reach_agscl(tmp_path):
    resolved = resolve(quick(tmp_path, method="agscl", zero_init=False))
    assert resolved.hparams["zero_init"] is False and resolved.hparams["rand_init"] is True
    assert resolved.label == "agscl w/o (I.1)"
    trunk, heads = build_network("digits", (1, 8, 8), [2, 2])
    method = build_method(resolved, trunk, heads)
    assert method.zero_init is False and method.rand_init is True
    assert method.mu == presets.hparams_for("split_digits", "agscl")["mu"]
    assert resolve(quick(tmp_path, method="agscl", zero_init=False, rand_init=False)).label == "agscl w/o re-init"


def test_authors_presets():
    """The published (lambda, mu, rho, eta) of the released code's README."""
    expected = {"split_cifar100": (400, 10, 0.3, 0.9), "split_cifar10_100": (7000, 20, 0.2, 0.9),
                "omniglot": (1000, 7, 0.5, 0.9), "cub200": (1.5, 0.5, 0.1, 0.9)}
    for bench, values in expected.items():
        hp = presets.hparams_for(bench, "agscl")
        assert (hp["lam"], hp["mu"], hp["rho"], hp["eta"]) == values
        assert hp["prox_every"] == "epoch"
    assert presets.hparams_for("split_cifar100", "hat") == {"c": 0.75, "smax": 400.0}
    for bench in presets.HPARAMS:
        assert set(presets.HPARAMS[bench]) == set(presets.METHOD_NAMES)
        for method in presets.METHOD_NAMES:
            assert set(presets.hparams_for(bench, method)) <= set(presets.METHOD_HPARAMS[method])


@pytest.mark.parametrize(
    "name, shape, features",
    [("cifar", (3, 32, 32), 256), ("omniglot", (1, 28, 28), 64 * 4 * 4), ("alexnet32", (3, 32, 32), 2048),
     ("alexnet_mix", (3, 32, 32), 4096),
     ("digits", (1, 8, 8), 64), ("mlp", (1, 8, 8), 100)],
)
def test_plain_networks_are_chains_with_the_papers_sizes(name, shape, features):
    trunk, heads = build_network(name, shape, [10, 5])
    assert is_plain_chain(trunk)
    out = trunk.eval()(torch.zeros(2, *shape))
    assert out.shape == (2, features)
    assert [h.out_features for h in heads] == [10, 5] and heads[0].in_features == features
    convs = [m.out_channels for m in trunk if isinstance(m, nn.Conv2d)]
    if name == "cifar":
        assert convs == [32, 32, 64, 64, 128, 128]
    if name == "omniglot":
        assert convs == [64, 64, 64, 64]
    if name == "alexnet_mix":  # the authors' mixture AlexNet: 5 conv + fc 4096 x 2
        assert convs == [64, 192, 384, 256, 256]
        assert [m.out_features for m in trunk if isinstance(m, nn.Linear)] == [4096, 4096]


def test_agscl_and_hat_refuse_resnet(tmp_path):
    assert not is_plain_chain(ResNet18Trunk())
    for method in ("agscl", "hat"):
        with pytest.raises(UsageError, match="plain"):
            resolve(quick(tmp_path, benchmark="cub200", method=method, network="resnet18"))
    assert resolve(quick(tmp_path, benchmark="cub200", method="ewc", network="resnet18")).network == "resnet18"


def _torchvision_alexnet_state(classes: int = 1000) -> dict[str, torch.Tensor]:
    """torchvision's AlexNet key layout and shapes, written out by hand."""
    shapes = {
        "features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
        "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3),
        "classifier.1": (4096, 9216), "classifier.4": (4096, 4096), "classifier.6": (classes, 4096),
    }
    state = {}
    for key, shape in shapes.items():
        state[f"{key}.weight"] = torch.randn(shape)
        state[f"{key}.bias"] = torch.randn(shape[0])
    return state


def test_alexnet_loads_torchvision_layout_and_rejects_a_mismatch(tmp_path):
    state = _torchvision_alexnet_state()
    good = tmp_path / "alexnet.pth"
    torch.save(state, good)
    trunk = build_trunk("alexnet", (3, 224, 224))
    assert load_pretrained(trunk, "alexnet", good) == 14  # 7 layers x (weight, bias), ImageNet output skipped
    convs = [m for m in trunk if isinstance(m, nn.Conv2d)]
    linears = [m for m in trunk if isinstance(m, nn.Linear)]
    assert torch.equal(convs[0].weight, state["features.0.weight"])
    assert torch.equal(convs[4].bias, state["features.10.bias"])
    assert torch.equal(linears[0].weight, state["classifier.1.weight"])
    assert torch.equal(linears[1].weight, state["classifier.4.weight"])
    state["features.3.weight"] = torch.randn(192, 64, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsMismatchError, match=r"features|3\.weight"):
        load_pretrained(build_trunk("alexnet", (3, 224, 224)), "alexnet", bad)


def test_resnet18_loads_torchvision_layout(tmp_path):
    source = ResNet18Trunk()
    state = dict(source.state_dict())
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"):
        assert key in state  # torchvision's names
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    target = ResNet18Trunk()
    load_pretrained(target, "resnet18", path)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    del state["layer3.1.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError, match="missing"):
        load_pretrained(ResNet18Trunk(), "resnet18", path)


def _one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs), "--no-progress", "--no-tensorboard"]
    line = _one_error_line(capsys, ["--method", "sgd"] + common)
    assert "'sgd'" in line and "agscl" in line and "hat" in line
    line = _one_error_line(capsys, ["--rho", "1.5"] + common)
    assert "rho=1.5" in line and "[0, 1]" in line
    line = _one_error_line(capsys, ["--eta", "0"] + common)
    assert "eta=0" in line
    line = _one_error_line(capsys, ["--method", "ewc", "--mu", "3"] + common)
    assert "--mu" in line and "ewc" in line
    line = _one_error_line(capsys, ["--method", "ewc", "--no-zero-init"] + common)
    assert "ablation" in line
    line = _one_error_line(capsys, ["--epochs", "0"] + common)
    assert "epochs=0" in line
    line = _one_error_line(capsys, ["--benchmark", "split_cifar100", "--data-dir", str(tmp_path / "empty")] + common)
    assert "cifar-100" in line.lower()
    bad = tmp_path / "weights.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    line = _one_error_line(capsys, ["--benchmark", "cub200", "--weights", str(bad), "--data-dir", str(tmp_path)] + common)
    assert "does not fit" in line and "alexnet" in line
    assert not runs.exists()


def test_cli_subprocess_unknown_benchmark(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "supervised.train", "--benchmark", "imagenet", "--runs-dir", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'imagenet'" in lines[0] and "split_cifar100" in lines[0]
    assert not (tmp_path / "r").exists()
