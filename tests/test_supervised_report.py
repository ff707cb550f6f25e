"""The report: table values against hand-computed matrices, reference matching, figures, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervised.report import main, report

NAN = None


def write_run(root: Path, name: str, method: str, seed: int, tasks: list[str], acc: list[list[float | None]],
              hparams: dict | None = None, label: str | None = None, stats: list[dict] | None = None,
              stored: float = 0.0, schedule: dict | None = None, network: str = "digits") -> Path:
    """A results.json in the trainer's format with a hand-made accuracy matrix."""
    done = sum(1 for row in acc if row[0] is not None)
    data = {
        "format": "agscl-supervised-results/1",
        "run_name": name,
        "label": label or method,
        "config": {"method": method, "seed": seed, "benchmark": "split_digits"},
        "hparams": hparams or {},
        "schedule": schedule or {"epochs": 15, "lr": 0.01},
        "network": {"name": network},
        "valid_fraction": 0.1,
        "benchmark": {"name": "split_digits", "input_shape": [1, 8, 8],
                      "tasks": [{"name": t, "num_classes": 2} for t in tasks]},
        "tasks_done": done,
        "finished": done == len(tasks),
        "accuracy": acc,
        "plasticity": None,
        "stored_floats": stored,
        "per_task": [{"task": i, "stats": s} for i, s in enumerate(stats or [{} for _ in range(done)])],
    }
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(data))
    return folder


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    order0, order1 = ["a", "b", "c"], ["b", "c", "a"]
    write_run(root, "ft0", "finetune", 0, order0, [[0.9, NAN, NAN], [0.6, 0.8, NAN], [0.5, 0.7, 0.9]])
    write_run(root, "ft1", "finetune", 1, order1, [[1.0, NAN, NAN], [0.5, 1.0, NAN], [0.5, 0.5, 1.0]])
    stats = [{"sparsity": 0.6, "used_capacity": 0.0}, {"sparsity": 0.4, "used_capacity": 0.5},
             {"sparsity": 0.2, "used_capacity": 0.7}]
    hp = {"lam": 400.0, "mu": 10.0}
    write_run(root, "ags0", "agscl", 0, order0, [[0.8, NAN, NAN], [0.8, 0.9, NAN], [0.7, 0.9, 1.0]], hp, stats=stats, stored=128)
    write_run(root, "ags1", "agscl", 1, order1, [[0.9, NAN, NAN], [0.9, 0.8, NAN], [0.9, 0.8, 0.7]], hp, stats=stats, stored=128)
    write_run(root, "ags_lam", "agscl", 0, order0, [[0.5, NAN, NAN], [0.5, 0.5, NAN], [0.5, 0.5, 0.5]],
              {"lam": 10.0, "mu": 10.0}, stored=128)
    write_run(root, "ewc0", "ewc", 0, order0, [[0.9, NAN, NAN], [0.8, 0.8, NAN], [NAN, NAN, NAN]], {"lam": 5.0}, stored=42400)
    return root


def test_table_against_hand_computed_values(runs, tmp_path):
    rows, text, written = report([str(runs)], tmp_path / "out")
    by_label = {r["label"]: r for r in rows}
    assert set(by_label) == {"finetune", "agscl (lam=400)", "agscl (lam=10)", "ewc"}
    ags = by_label["agscl (lam=400)"]
    # seed 0: final avg (0.7+0.9+1.0)/3, forgetting ((0.8-0.7)+(0.9-0.9))/2,
    #         P vs ft0 = (0.8/0.9 + 0.9/0.8 + 1.0/0.9)/3, S = (0.7/0.8 + 0.9/0.9 + 1)/3
    # seed 1: final avg 0.8, forgetting 0, P vs ft1 = (0.9+0.8+0.7)/3, S = 1
    assert ags["average_accuracy"][0] == pytest.approx((2.6 / 3 + 0.8) / 2)
    assert ags["forgetting"][0] == pytest.approx(0.025)
    assert ags["plasticity"][0] == pytest.approx(((0.8 / 0.9 + 0.9 / 0.8 + 1.0 / 0.9) / 3 + 0.8) / 2)
    assert ags["stability"][0] == pytest.approx(((0.875 + 1 + 1) / 3 + 1) / 2)
    assert ags["seeds"] == [0, 1] and ags["stored_floats"] == (128.0, 0.0)
    # average accuracy curve after each task: seed 0 (0.8, 0.85, 0.8667), seed 1 (0.9, 0.85, 0.8)
    xs, mean, _ = ags["curve"]
    assert xs == [1, 2, 3]
    assert mean == pytest.approx([0.85, 0.85, (2.6 / 3 + 0.8) / 2])
    assert ags["sparsity_curve"][1] == pytest.approx([0.6, 0.4, 0.2])
    ft = by_label["finetune"]
    assert ft["plasticity"][0] == pytest.approx(1.0)
    assert ft["bwt"][0] == pytest.approx((((0.5 - 0.9) + (0.7 - 0.8)) / 2 + ((0.5 - 1.0) + (0.5 - 1.0)) / 2) / 2)
    ewc = by_label["ewc"]  # unfinished run: its two finished tasks only
    assert ewc["tasks"] == 2 and ewc["average_accuracy"][0] == pytest.approx(0.8)
    assert ewc["forgetting"][0] == pytest.approx(0.1)
    assert ewc["plasticity"][0] == pytest.approx((0.9 / 0.9 + 0.8 / 0.8) / 2)
    assert "agscl (lam=400)" in text and "finetune" in text
    names = {p.name for p in written}
    assert {"average_accuracy.png", "capacity.png", "ps_tradeoff.png", "memory.png", "summary.txt"} <= names
    for path in written:
        if path.suffix == ".png":
            blob = path.read_bytes()
            assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000
    assert json.loads((tmp_path / "out" / "summary.json").read_text())[0]["benchmark"] == "split_digits"


def test_cli_prints_the_table_and_rejects_bad_paths(runs, tmp_path, capsys):
    assert main([str(runs / "ags0"), str(runs / "ft0" / "results.json"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "agscl" in out and "finetune" in out and "average_accuracy.png" in out
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o3")]) == 2
    assert "no results.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main([str(bad), "--out", str(tmp_path / "o4")]) == 2
    assert "not a supervised results file" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o4").exists()


def test_runs_that_do_not_compare_are_never_merged(tmp_path):
    """Same label: 3-task runs of 3 epochs (two seeds), a 5-task run of 15 epochs and a run on
    another network give three rows, each named by what differs; plasticity only from a
    fine-tuning run with the same schedule and seed."""
    root = tmp_path / "runs"
    short, long = {"epochs": 3, "lr": 0.01}, {"epochs": 15, "lr": 0.01}
    three = [[0.9, NAN, NAN], [0.8, 0.9, NAN], [0.7, 0.8, 0.9]]
    write_run(root, "e3s0", "ewc", 0, ["a", "b", "c"], three, {"lam": 5.0}, schedule=short)
    write_run(root, "e3s1", "ewc", 1, ["b", "a", "c"], three, {"lam": 5.0}, schedule=short)
    five = [[1.0] + [NAN] * 4, [1.0, 1.0] + [NAN] * 3, [1.0] * 3 + [NAN] * 2, [1.0] * 4 + [NAN], [1.0] * 5]
    write_run(root, "e15", "ewc", 0, ["a", "b", "c", "d", "e"], five, {"lam": 5.0}, schedule=long)
    write_run(root, "mlp", "ewc", 0, ["a", "b", "c"], three, {"lam": 5.0}, schedule=short, network="mlp")
    # fine-tuning with the 15-epoch schedule on the same 3 tasks: not a reference for the 3-epoch runs
    write_run(root, "ft15", "finetune", 0, ["a", "b", "c"], [[0.5, NAN, NAN], [0.5, 0.5, NAN], [0.5, 0.5, 0.5]], schedule=long)
    rows, _, _ = report([str(root)], tmp_path / "out")
    ewc = {r["label"]: r for r in rows if r["method"] == "ewc"}
    assert set(ewc) == {"ewc (epochs=3, network=digits, tasks=3)", "ewc (epochs=15, network=digits, tasks=5)",
                        "ewc (epochs=3, network=mlp, tasks=3)"}
    merged = ewc["ewc (epochs=3, network=digits, tasks=3)"]
    assert merged["seeds"] == [0, 1] and merged["tasks"] == 3
    assert ewc["ewc (epochs=15, network=digits, tasks=5)"]["seeds"] == [0]
    assert merged["plasticity"] is None  # ft15 has another schedule
    write_run(root, "ft3", "finetune", 0, ["a", "b", "c"], [[0.9, NAN, NAN], [0.5, 0.9, NAN], [0.5, 0.5, 0.9]], schedule=short)
    rows, _, _ = report([str(root)], tmp_path / "out2")
    merged = next(r for r in rows if r["label"] == "ewc (epochs=3, network=digits, tasks=3)")
    assert merged["plasticity"] == (pytest.approx(1.0), 0.0)  # seed 0 only: seed 1 has no reference


def test_stability_without_warning_when_a_task_stays_at_zero(tmp_path):
    import warnings

    root = tmp_path / "runs"
    write_run(root, "z", "ewc", 0, ["a", "b"], [[0.0, NAN], [0.0, 0.8]], {"lam": 5.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, text, _ = report([str(root)], tmp_path / "out")
    assert rows[0]["stability"] == (pytest.approx(1.0), 0.0)  # task b only: task a had nothing to keep
    assert "nan" not in text.lower()


def test_help_names_the_module(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "usage: python -m supervised.report" in capsys.readouterr().out
