"""Seeds x methods aggregation (agents/aggregate.py) on results files written by hand, and the
MinAtar benchmark's smoke version end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from agents import aggregate
from agscl import metrics

GAMES = ["A", "B"]
RANDOM = {"A": 1.0, "B": -2.0}


def write_run(root, name: str, method: str, seed: int, matrix: list[list[float | None]], random=RANDOM) -> str:
    """A finished two-game run: timeline = one evaluation at each game's end (score matrix rows)."""
    timeline = []
    for i, row in enumerate(matrix):
        scores = {g: {"mean": row[j]} for j, g in enumerate(GAMES) if j <= i}
        timeline.append({"global_step": 100 * (i + 1), "game": i, "boundary": True, "scores": scores})
    results = {"format": 2, "games": GAMES, "config": {"method": method, "seed": seed}, "steps_per_game": 100,
               "score_matrix": matrix, "timeline": timeline, "random": {g: {"mean": r} for g, r in random.items()},
               "progress": {"status": "finished"}}
    path = root / name
    path.mkdir()
    (path / "results.json").write_text(json.dumps(results))
    return str(path)


def test_metrics_of_a_run_against_hand_computation(tmp_path):
    ft = [write_run(tmp_path, f"ft{s}", "finetune", s, m) for s, m in
          enumerate([[[11.0, None], [3.0, 8.0]], [[9.0, None], [5.0, 6.0]]])]
    ags = write_run(tmp_path, "ags", "agscl", 0, [[6.0, None], [6.0, 2.0]])
    runs, summary = aggregate.aggregate([*ft, ags])
    # reference: best per game averaged over the fine-tuning seeds, A: (11+9)/2 = 10, B: (8+6)/2 = 7;
    # right-after-learning scores: A (11+9)/2 = 10, B (8+6)/2 = 7
    run = runs[-1]
    assert run.label == "agscl"
    # normalized final: A (6-1)/(10-1) = 5/9, B (2+2)/(7+2) = 4/9
    assert run.values["accumulated_normalized"] == pytest.approx(5 / 9 + 4 / 9)
    assert run.values["final_return"] == pytest.approx((6 + 2) / 2)
    # P: A (6-1)/(10-1), B (2+2)/(7+2); S: A (6-1)/(6-1) = 1, B 1
    assert run.values["P"] == pytest.approx((5 / 9 + 4 / 9) / 2)
    assert run.values["S"] == pytest.approx(1.0)
    assert run.values["forgetting"] == pytest.approx(0.0)
    first_ft = runs[0]
    # fine-tuning seed 0 forgot A: S_A = (3-1)/(11-1), forgetting (11-3)/(10-1)
    assert first_ft.per_game["S"][0] == pytest.approx(0.2)
    assert first_ft.values["forgetting"] == pytest.approx(8 / 9)
    # the accumulated normalized timeline: after game 1, (11-1)/9; after game 2, (3-1)/9 + (8+2)/9
    assert first_ft.accumulated.tolist() == pytest.approx([10 / 9, 2 / 9 + 10 / 9])
    ft_s = summary["methods"]["finetune"]["metrics"]["S"]
    assert ft_s[0] == pytest.approx(np.mean([(0.2 + 1) / 2, ((5 - 1) / (9 - 1) + 1) / 2]))
    assert ft_s[1] <= ft_s[0] <= ft_s[2] and ft_s[1] < ft_s[2]
    mean_matrix = np.array(summary["methods"]["finetune"]["score_matrix_mean"], dtype=float)
    assert mean_matrix[1].tolist() == [4.0, 7.0] and np.isnan(mean_matrix[0, 1])
    table = aggregate.markdown(summary)
    assert "| agscl | 1 |" in table and "| finetune | 2 |" in table
    json.dumps(aggregate.jsonable(summary), allow_nan=False)  # strict JSON: undefined metrics become null


def test_a_game_never_learned_above_random_has_no_stability():
    # B never rises above its random score -2: its S is undefined, not a ratio of negatives
    s = metrics.stability_per_task([[5.0, np.nan], [4.0, -8.0]], [1.0, -2.0])
    assert s[0] == pytest.approx(3 / 4) and np.isnan(s[1])


def test_interval_is_scipy_bootstrap_and_collapses_on_equal_values():
    from scipy.stats import bootstrap

    values = [0.2, 0.5, 0.9, 0.4]
    mean, lo, hi = aggregate.interval(values, seed=3)
    ref = bootstrap((np.array(values),), np.mean, confidence_level=0.95, n_resamples=aggregate.RESAMPLES,
                    method="percentile", random_state=np.random.default_rng(3)).confidence_interval
    assert mean == pytest.approx(0.5) and (lo, hi) == pytest.approx((ref.low, ref.high))
    assert min(values) <= lo < mean < hi <= max(values)
    assert aggregate.interval([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))
    assert np.isnan(aggregate.interval([float("nan")])[0])


def test_unfinished_or_reference_less_grids_are_refused(tmp_path):
    ags = write_run(tmp_path, "ags", "agscl", 0, [[6.0, None], [6.0, 2.0]])
    with pytest.raises(ValueError, match="finetune method as its reference"):
        aggregate.aggregate([ags])
    half = write_run(tmp_path, "half", "finetune", 0, [[6.0, None], [None, None]])
    with pytest.raises(ValueError, match="finished 1 of 2 games"):
        aggregate.aggregate([half])


@pytest.mark.slow
def test_benchmark_smoke_runs_end_to_end(tmp_path):
    pytest.importorskip("minatar")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "continual_minatar.py"), "--smoke",
                          "--methods", "finetune", "agscl", "--runs-dir", str(tmp_path / "runs"),
                          "--out-dir", str(tmp_path / "out")], cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "continual_minatar_smoke.json").read_text())
    assert set(summary["methods"]) == {"finetune", "agscl"}
    assert all(len(m["seeds"]) == 2 for m in summary["methods"].values())
    assert (tmp_path / "out" / "continual_minatar_smoke.png").read_bytes()[:4] == b"\x89PNG"
    assert "accumulated normalized return" in (tmp_path / "out" / "continual_minatar_smoke.md").read_text()
    # a second start skips every finished run and aggregates the same table
    again = subprocess.run([sys.executable, os.path.join(root, "bench", "continual_minatar.py"), "--smoke",
                            "--methods", "finetune", "agscl", "--runs-dir", str(tmp_path / "runs"),
                            "--out-dir", str(tmp_path / "out2")], cwd=root, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "4 runs (4 finished earlier, skipped)" in again.stdout and ": running" not in again.stderr
    assert json.loads((tmp_path / "out2" / "continual_minatar_smoke.json").read_text())["methods"] == summary["methods"]
