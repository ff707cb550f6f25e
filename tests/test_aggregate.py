"""Seeds x methods aggregation (reporting/aggregate.py) on results files written by hand, and the
MinAtar benchmark's smoke version end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from reporting import aggregate, metrics

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
    bench = [sys.executable, os.path.join(root, "bench", "continual_minatar.py"), "--smoke", "--trunk", "wide",
             "--methods", "finetune", "agscl", "--runs-dir", str(tmp_path / "runs")]
    out = subprocess.run([*bench, "--out-dir", str(tmp_path / "out")], cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "continual_minatar_wide_smoke.json").read_text())
    assert set(summary["methods"]) == {"finetune", "agscl"}
    assert all(len(m["seeds"]) == 2 for m in summary["methods"].values())
    assert summary["settings"]["trunk"] == "wide"
    assert (tmp_path / "out" / "continual_minatar_wide_smoke.png").read_bytes()[:4] == b"\x89PNG"
    assert "accumulated normalized return" in (tmp_path / "out" / "continual_minatar_wide_smoke.md").read_text()
    # --trunk wide trained the doubled trunk: 32 conv channels, 256 fc units in every run's config
    configs = [json.loads(p.read_text())["config"] for p in (tmp_path / "runs").glob("*/results.json")]
    assert len(configs) == 4 and all((c["width"], c["hidden"]) == (2, 256) for c in configs)
    # a second start skips every finished run and aggregates the same table
    again = subprocess.run([*bench, "--out-dir", str(tmp_path / "out2")], cwd=root, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "4 runs (4 finished earlier, skipped)" in again.stdout and ": running" not in again.stderr
    assert json.loads((tmp_path / "out2" / "continual_minatar_wide_smoke.json").read_text())["methods"] == summary["methods"]


# ---------------------------------------------------------------------------------------------
# one definition of fine-tuning's best score (issue 18, 3a) and the seed counts (3b)
# ---------------------------------------------------------------------------------------------
def write_results(root, name: str, method: str, seed: int, games: list[str], matrix, random: dict,
                  mid: dict | None = None, returns: dict | None = None, regularizer: list | None = None,
                  reference: dict | None = None) -> str:
    """A finished run: one evaluation at each game's end (the score matrix rows), plus an optional
    mid-game evaluation ``mid`` ({game: mean}) during the first game; ``returns`` gives the episode
    returns of chosen end-of-game evaluations {(i, game): [...]} and random policies {game: [...]}."""
    returns = returns or {}
    timeline = []
    if mid:
        timeline.append({"global_step": 50, "game": 0, "boundary": False, "scores": {g: {"mean": v} for g, v in mid.items()}})
    for i, row in enumerate(matrix):
        scores = {}
        for j, g in enumerate(games[: i + 1]):
            scores[g] = {"mean": row[j]}
            if (i, g) in returns:
                scores[g] = {"mean": float(np.mean(returns[(i, g)])), "returns": returns[(i, g)]}
        timeline.append({"global_step": 100 * (i + 1), "game": i, "boundary": True, "scores": scores})
    rand = {g: ({"mean": float(np.mean(returns[g])), "returns": returns[g]} if g in returns else {"mean": r})
            for g, r in random.items()}
    results = {"format": 2, "games": games, "config": {"method": method, "seed": seed}, "steps_per_game": 100,
               "score_matrix": [[scores_or_none for scores_or_none in row] for row in matrix], "timeline": timeline,
               "random": rand, "progress": {"status": "finished"}, "regularizer": regularizer or [],
               "reference": reference}
    path = root / name
    path.mkdir()
    (path / "results.json").write_text(json.dumps(results))
    return str(path)


def test_fine_tuning_best_is_the_best_evaluation_of_the_whole_timeline_everywhere(tmp_path):
    """A mid-game evaluation above every end-of-game score: the aggregate, the agent's
    --reference-run and plot_continual all normalize by it (before: the aggregate took the best
    end-of-game score, 9, a smaller denominator than TensorBoard's and the plots' 13)."""
    from reporting import plot_continual
    from reporting.results import load_results, reference_scores

    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[9.0, None], [5.0, 8.0]], RANDOM, mid={"A": 13.0})
    ags = write_results(tmp_path, "ags", "agscl", 0, GAMES, [[7.0, None], [7.0, 4.0]], RANDOM)
    runs, summary = aggregate.aggregate([ft, ags])
    assert summary["reference"]["max_return"] == pytest.approx([13.0, 8.0])
    # A: (7 - 1) / (13 - 1); B: (4 + 2) / (8 + 2)
    assert runs[1].values["accumulated_normalized"] == pytest.approx(6 / 12 + 6 / 10)
    assert reference_scores(load_results(ft), GAMES, ft)["max_return"] == {"A": 13.0, "B": 8.0}  # the agent's
    plotted = plot_continual.summarize("ags", load_results(ags), load_results(ft), ft)
    assert plotted.accumulated[-1] == pytest.approx(runs[1].values["accumulated_normalized"])  # the plot's


def test_table_prints_how_many_seeds_a_cell_is_over_where_it_differs(tmp_path):
    """Seed 2 of agscl never rises above random on B (S undefined): its S cell says n=2 of 3 seeds;
    cells defined on every seed say nothing (before: only the seeds column, 3)."""
    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[11.0, None], [3.0, 8.0]], RANDOM)
    ags = [write_results(tmp_path, f"ags{s}", "agscl", s, GAMES, [[6.0, None], [5.0 + s, -2.0 if s == 2 else 2.0]], RANDOM)
           for s in range(3)]
    runs, summary = aggregate.aggregate([ft, *ags])
    m = summary["methods"]["agscl"]
    assert m["defined"]["S"] == 3 and m["per_game_defined"]["S"] == [3, 2]
    table = aggregate.markdown(summary)
    row = next(line for line in table.splitlines() if line.startswith("| agscl | "))
    assert "(n=" not in row  # the mean S over games is defined on every seed
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method | A final | A S |"))
    per_game_row = next(line for line in lines[header:] if line.startswith("| agscl | "))  # the per-game final / S table
    s_b = per_game_row.split(" | ")[-1]
    assert s_b.endswith("(n=2) |") and s_b.startswith("1.00 [1.00, 1.00]")  # seeds 0 and 1 keep all of B
    # the sweep's fallback table counts the same way
    from sweep.aggregate import format_rl_table

    row = {"label": "x", "seeds": [0, 1, 2], "games_done": 2, "defined": {"stability": 2},
           **{k: (0.5, 0.4, 0.6) for k in ("accumulated_normalized_return", "average_return", "plasticity", "stability", "forgetting")}}
    line = format_rl_table([row]).splitlines()[-1]
    assert line.count("(n=2)") == 1 and "0.500 [0.400, 0.600] (n=2)" in line


# ---------------------------------------------------------------------------------------------
# the 5-game benchmark's aggregation (issue 16, point 3), against hand computations
# ---------------------------------------------------------------------------------------------
G3 = ["A", "B", "C"]
R3 = {"A": 0.0, "B": 1.0, "C": 2.0}


def test_accumulated_normalized_return_after_each_game_against_hand_computation(tmp_path):
    ft = [write_results(tmp_path, f"ft{s}", "finetune", s, G3, m, R3) for s, m in enumerate([
        [[10.0, None, None], [4.0, 21.0, None], [2.0, 11.0, 42.0]],
        [[6.0, None, None], [2.0, 11.0, None], [1.0, 6.0, 22.0]]])]
    ags = write_results(tmp_path, "ags", "agscl", 0, G3, [[8.0, None, None], [6.0, 9.0, None], [4.0, 7.0, 12.0]], R3)
    runs, summary = aggregate.aggregate([*ft, ags])
    # reference best per game, mean over the two seeds: A (10+6)/2 = 8, B (21+11)/2 = 16, C (42+22)/2 = 32
    best = {"A": 8.0, "B": 16.0, "C": 32.0}
    n = {g: lambda v, g=g: (v - R3[g]) / (best[g] - R3[g]) for g in G3}
    after = [n["A"](8.0), n["A"](6.0) + n["B"](9.0), n["A"](4.0) + n["B"](7.0) + n["C"](12.0)]
    assert runs[-1].per_game["after_game"].tolist() == pytest.approx(after)
    assert runs[-1].values["accumulated_normalized"] == pytest.approx(after[-1])
    # the fine-tuning seeds' curves, and the method's mean over them with a bootstrap band
    ft_after = [[n["A"](10.0), n["A"](4.0) + n["B"](21.0), n["A"](2.0) + n["B"](11.0) + n["C"](42.0)],
                [n["A"](6.0), n["A"](2.0) + n["B"](11.0), n["A"](1.0) + n["B"](6.0) + n["C"](22.0)]]
    curve = summary["methods"]["finetune"]["per_game"]["after_game"]
    for i in range(3):
        mean, lo, hi = curve[i]
        assert mean == pytest.approx(np.mean([ft_after[0][i], ft_after[1][i]]))
        assert min(ft_after[0][i], ft_after[1][i]) == pytest.approx(lo) and max(ft_after[0][i], ft_after[1][i]) == pytest.approx(hi)
    table = aggregate.markdown(summary)
    assert "| method | after A | after B | after C |" in table
    assert f"| agscl | {after[0]:.2f} [{after[0]:.2f}, {after[0]:.2f}] | {after[1]:.2f}" in table
    paths = aggregate.write_report(runs, summary, str(tmp_path / "out"), "bench")
    assert all(os.path.getsize(p) > 0 for p in paths) and paths[-1].endswith("_after_games.png")
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["methods"]["agscl"]["per_game"]["after_game"][2][0] == pytest.approx(after[2])


def test_probability_of_improvement_against_hand_computation_and_rliable():
    rliable_metrics = pytest.importorskip("rliable.metrics")
    x = np.array([[3.0, 1.0], [5.0, 2.0]])  # 2 runs x 2 games
    y = np.array([[4.0, 2.0], [2.0, 0.0], [1.0, 2.0]])  # 3 runs
    # game 0: pairs x>y: 3>2, 3>1, 5>4, 5>2, 5>1 = 5 of 6; game 1: 1>0, 2>0 = 2, ties 2=2 twice = 1 -> 3 of 6
    assert aggregate.probability_of_improvement(x, y) == pytest.approx((5 / 6 + 3 / 6) / 2)
    assert aggregate.probability_of_improvement(x, x) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 4, size=(3, 5)).astype(float), rng.integers(0, 4, size=(4, 5)).astype(float)
        assert aggregate.probability_of_improvement(a, b) == pytest.approx(rliable_metrics.probability_of_improvement(a, b))


def test_probability_of_improvement_of_a_grid_with_rliable_stratified_bootstrap(tmp_path):
    pytest.importorskip("rliable.library")
    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[11.0, None], [1.0, 8.0]], RANDOM)
    ags = [write_results(tmp_path, f"a{s}", "agscl", s, GAMES, [[9.0, None], [8.0 - s, 6.0]], RANDOM) for s in range(3)]
    ewc = [write_results(tmp_path, f"e{s}", "ewc", s, GAMES, [[9.0, None], [6.0 - s, 6.0 + s]], RANDOM) for s in range(3)]
    runs, summary = aggregate.aggregate([ft, *ags, *ewc], reps=300)
    poi = summary["probability_of_improvement"]
    assert set(poi) == {"finetune", "ewc"}
    # final normalized scores, shifted and scaled alike for both methods, so compare the raw ones:
    # A: agscl 7, 6, 5 against ewc 5, 4, 3 (8 wins and one tie of 9 pairs); B: each agscl 6 against
    # ewc 6, 7, 8 (one tie each: 3 ties of 9 pairs)
    xa, ya = np.array([7.0, 6.0, 5.0]), np.array([5.0, 4.0, 3.0])
    pa = ((xa[:, None] > ya[None]).sum() + 0.5 * (xa[:, None] == ya[None]).sum()) / 9
    xb, yb = np.array([6.0, 6.0, 6.0]), np.array([6.0, 7.0, 8.0])
    pb = ((xb[:, None] > yb[None]).sum() + 0.5 * (xb[:, None] == yb[None]).sum()) / 9
    mean, lo, hi = poi["ewc"]["probability"]
    assert mean == pytest.approx((pa + pb) / 2)
    assert 0.0 <= lo <= mean <= hi <= 1.0 and lo < hi
    assert mean == pytest.approx((8.5 / 9 + 1.5 / 9) / 2)  # the same count written out
    # fine-tuning (A 1, B 8): every agscl run is above it on A, below it on B
    assert poi["finetune"]["probability"][0] == pytest.approx(0.5)
    assert poi["ewc"]["runs"] == [3, 3] and poi["ewc"]["games"] == GAMES
    assert "P(agscl > method)" in aggregate.markdown(summary)


def test_against_reports_each_methods_probability_of_improving_on_a_label(tmp_path):
    pytest.importorskip("rliable.library")
    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[11.0, None], [1.0, 8.0]], RANDOM)
    ags = [write_results(tmp_path, f"a{s}", "agscl", s, GAMES, [[9.0, None], [8.0 - s, 6.0]], RANDOM) for s in range(3)]
    ewc = [write_results(tmp_path, f"e{s}", "ewc", s, GAMES, [[9.0, None], [6.0 - s, 6.0 + s]], RANDOM) for s in range(3)]
    _, summary = aggregate.aggregate([ft, *ags, *ewc], reps=200, against=["agscl", "ewc"])
    forward, over = summary["probability_of_improvement"], summary["probability_over"]
    assert set(over) == {"agscl", "ewc"} and set(over["agscl"]) == {"finetune", "ewc"}
    # ties count half, so per game P(X > Y) + P(Y > X) = 1: the reverse of the hand count above
    assert over["agscl"]["ewc"]["probability"][0] == pytest.approx(1 - (8.5 / 9 + 1.5 / 9) / 2)
    assert over["agscl"]["ewc"]["probability"][0] == pytest.approx(1 - forward["ewc"]["probability"][0])
    assert over["ewc"]["agscl"]["probability"][0] == pytest.approx(forward["ewc"]["probability"][0])
    assert over["agscl"]["ewc"]["runs"] == [3, 3] and over["agscl"]["finetune"]["runs"] == [1, 3]
    table = aggregate.markdown(summary)
    assert "| method | P(method > agscl) |" in table and "| method | P(method > ewc) |" in table
    with pytest.raises(ValueError, match="--against 'packnet' is not a label of these runs: choose from finetune, agscl$"):
        aggregate.aggregate([ft, *ags], reps=10, against=["packnet"])


def test_reference_label_normalizes_a_two_trunk_grid_by_one_trunks_fine_tuning(tmp_path):
    narrow = write_results(tmp_path, "ft1", "finetune", 1, GAMES, [[11.0, None], [3.0, 8.0]], RANDOM)
    wide = write_results(tmp_path, "ft2", "finetune", 1, GAMES, [[21.0, None], [5.0, 14.0]], RANDOM)
    labels = ["finetune", "finetune_wide"]
    _, pooled = aggregate.aggregate([narrow, wide], labels, reps=10)
    assert pooled["reference"]["max_return"] == pytest.approx([16.0, 11.0])  # both trunks' runs pooled
    _, summary = aggregate.aggregate([narrow, wide], labels, reps=10, reference="finetune")
    assert summary["reference"]["max_return"] == pytest.approx([11.0, 8.0]) and summary["reference"]["label"] == "finetune"
    # the wide run on the narrow run's scale: (5 - 1) / (11 - 1) + (14 + 2) / (8 + 2), above the 2 of the reference itself
    wide_final = summary["methods"]["finetune_wide"]["metrics"]["accumulated_normalized"][0]
    assert wide_final == pytest.approx(4 / 10 + 16 / 10)
    assert summary["methods"]["finetune"]["metrics"]["accumulated_normalized"][0] == pytest.approx(2 / 10 + 1.0)
    assert "the runs labelled finetune (seeds 1" in summary["reference"]["note"]
    with pytest.raises(ValueError, match="--reference 'finetune_narrow' is not a label of these runs: choose from finetune, finetune_wide"):
        aggregate.aggregate([narrow, wide], labels, reps=10, reference="finetune_narrow")


def test_capacity_left_and_dormant_units_per_game_and_n_a_for_older_runs(tmp_path):
    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[11.0, None], [3.0, 8.0]], RANDOM,
                       regularizer=[{"game": 0, "dormant_fraction": 0.25}, {"game": 1, "dormant_fraction": 0.5}])
    ags = [write_results(tmp_path, f"a{s}", "agscl", s, GAMES, [[9.0, None], [8.0, 6.0]], RANDOM,
                         regularizer=[{"game": 0, "sparsity": 0.5 - 0.1 * s, "dormant_fraction": 0.1 * s},
                                      {"game": 1, "sparsity": 0.2, "dormant_fraction": 0.0}]) for s in range(2)]
    old = write_results(tmp_path, "ewc_old", "ewc", 0, GAMES, [[9.0, None], [8.0, 6.0]], RANDOM)  # no regularizer stats
    runs, summary = aggregate.aggregate([ft, *ags, old])
    m = summary["methods"]["agscl"]["per_game"]
    assert m["free_nodes"][0][0] == pytest.approx((0.5 + 0.4) / 2) and m["free_nodes"][1][0] == pytest.approx(0.2)
    assert m["dormant"][0][0] == pytest.approx(0.05) and m["dormant"][1][0] == pytest.approx(0.0)
    assert summary["methods"]["finetune"]["per_game"]["dormant"][1][0] == pytest.approx(0.5)
    assert np.isnan(summary["methods"]["ewc"]["per_game"]["dormant"][0][0])
    table = aggregate.markdown(summary)
    assert "| ewc | dormant trunk units | n/a | n/a |" in table
    assert "| agscl | AGS-CL free nodes (G0 / G) | 0.45 [0.40, 0.50] | 0.20 [0.20, 0.20] |" in table
    assert "free weights" not in table  # no PackNet run here
    json.dumps(aggregate.jsonable(summary), allow_nan=False)


def test_a_compositions_prefixed_statistics_fill_the_capacity_table(tmp_path):
    """agscl+redo logs AGS-CL's sparsity as ``agscl/sparsity``: its free nodes still show."""
    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[11.0, None], [3.0, 8.0]], RANDOM)
    both = write_results(tmp_path, "ar", "agscl+redo", 0, GAMES, [[9.0, None], [8.0, 6.0]], RANDOM,
                         regularizer=[{"game": 0, "agscl/sparsity": 0.3, "redo/recycled_units": 4.0},
                                      {"game": 1, "agscl/sparsity": 0.1, "redo/recycled_units": 6.0}])
    _, summary = aggregate.aggregate([ft, both])
    free = summary["methods"]["agscl+redo"]["per_game"]["free_nodes"]
    assert free[0][0] == pytest.approx(0.3) and free[1][0] == pytest.approx(0.1)


def test_plasticity_metrics_join_the_capacity_table_per_layer_and_n_a_for_older_runs(tmp_path):
    def entry(game: int, srank: float, scale: float) -> dict:
        return {"game": game, "dormant_fraction": 0.1, "srank": srank, "weight_magnitude/conv1": 0.1 * scale,
                "weight_magnitude/fc1": 0.02 * scale, "grad_norm/conv1": 0.5 * scale, "grad_norm/fc1": 0.25 * scale}

    ft = [write_results(tmp_path, f"ft{s}", "finetune", s, GAMES, [[11.0, None], [3.0, 8.0]], RANDOM,
                        regularizer=[entry(0, 60.0 + 2 * s, 1.0), entry(1, 50.0, 2.0)]) for s in range(2)]
    old = write_results(tmp_path, "ewc_old", "ewc", 0, GAMES, [[9.0, None], [8.0, 6.0]], RANDOM,
                        regularizer=[{"game": 0, "dormant_fraction": 0.2}, {"game": 1, "dormant_fraction": 0.3}])
    runs, summary = aggregate.aggregate([*ft, old])
    m = summary["methods"]["finetune"]["per_game"]
    assert m["srank"][0][0] == pytest.approx(61.0) and m["srank"][1][0] == pytest.approx(50.0)
    assert m["weight_magnitude/fc1"][1][0] == pytest.approx(0.04) and m["grad_norm/conv1"][0][0] == pytest.approx(0.5)
    assert np.isnan(summary["methods"]["ewc"]["per_game"]["srank"][0][0])
    table = aggregate.markdown(summary)
    assert "| finetune | effective rank of the features (srank, delta 0.01) | 61.0 [60.0, 62.0] | 50.0 [50.0, 50.0] |" in table
    assert "| finetune | mean abs weight, fc1 | 0.020 [0.020, 0.020] | 0.040 [0.040, 0.040] |" in table
    assert "| finetune | gradient norm (last update, before clipping), conv1 | 0.500 [0.500, 0.500] | 1.000 [1.000, 1.000] |" in table
    for what in ("effective rank of the features (srank, delta 0.01)", "mean abs weight, conv1", "mean abs weight, fc1",
                 "gradient norm (last update, before clipping), conv1", "gradient norm (last update, before clipping), fc1"):
        assert f"| ewc | {what} | n/a | n/a |" in table
    json.dumps(aggregate.jsonable(summary), allow_nan=False)
    # runs that record none of them: one row per measure, n/a
    runs, summary = aggregate.aggregate([old, write_results(tmp_path, "ft_old", "finetune", 0, GAMES,
                                                            [[11.0, None], [3.0, 8.0]], RANDOM)])
    table = aggregate.markdown(summary)
    assert "| ewc | mean abs weight, per layer | n/a | n/a |" in table and "| finetune | srank" not in table
    assert "| finetune | effective rank of the features (srank, delta 0.01) | n/a | n/a |" in table


# ---------------------------------------------------------------------------------------------
# a gain over random within noise gives null, through one function (issue 16, point 5)
# ---------------------------------------------------------------------------------------------
def test_gain_over_random_is_null_within_two_standard_errors_by_hand():
    from reporting.results import NOISE_Z, gain_over_random, shifted_ratio, standard_error

    best = {"mean": 0.53, "returns": [0.0, 1.0, 1.0, 0.0, 1.0, 0.18]}
    rand = {"mean": 0.5, "returns": [0.0, 1.0, 0.0, 1.0, 0.5, 0.5]}
    se = lambda r: np.std(r, ddof=1) / np.sqrt(len(r))  # noqa: E731
    assert standard_error(best) == pytest.approx(se(best["returns"]))
    assert standard_error({"mean": 1.0, "std": np.std([1.0, 3.0]), "episodes": 2}) == pytest.approx(se([1.0, 3.0]))
    assert NOISE_Z == 2.0 and 0.03 < 2 * np.hypot(se(best["returns"]), se(rand["returns"]))
    assert np.isnan(gain_over_random(best, rand)) and np.isnan(shifted_ratio(0.2, best, rand))
    far = {"mean": 9.0, "returns": [9.0, 8.0, 10.0, 9.0]}  # gain 8.5, noise about 2 * 0.45
    assert gain_over_random(far, rand) == pytest.approx(8.5)
    assert shifted_ratio(4.75, far, rand) == pytest.approx(0.5)
    assert gain_over_random(3.0, 2.0) == 1.0 and np.isnan(gain_over_random(2.0, 2.0))  # bare numbers: no noise known


def test_a_ratio_within_noise_is_null_in_agent_aggregate_and_sweep_table_alike(tmp_path):
    """The issue's case: the reference beats random on B by 0.03 within noise (and the run's own
    random score is higher still). B's normalized return and P are null in the agent's numbers
    (reporting.results), the aggregate and the sweep's fallback table; A is a number in all three."""
    from reporting.results import continual_metrics, load_results, normalized, reference_scores
    from sweep.aggregate import rl_run_metrics

    noisy = [0.0, 1.0, 1.0, 0.0, 1.0, 0.18]
    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[11.0, None], [3.0, 0.53]], {"A": 1.0, "B": 0.5},
                       returns={(1, "B"): noisy, "B": [0.0, 1.0, 0.0, 1.0, 0.5, 0.5]})
    ref = reference_scores(load_results(ft), GAMES, ft)
    assert ref["undefined"] == ["B"]
    ags = write_results(tmp_path, "ags", "agscl", 0, GAMES, [[6.0, None], [6.0, 0.6]], {"A": 1.0, "B": 0.5},
                        returns={"B": [1.0, 0.5, 1.0, 0.5, 1.0, 1.22]}, reference={"run": ft, **ref})
    res = load_results(ags)
    norm, acc = normalized(res["timeline"][-1]["scores"], ref, res["random"])  # what the agent logs
    assert norm["A"] == pytest.approx(0.5) and np.isnan(norm["B"]) and acc == pytest.approx(0.5)
    metrics = continual_metrics(res)  # what the agent writes at each game's end
    assert metrics["per_game"]["B"]["P"] is None and metrics["per_game"]["A"]["P"] == pytest.approx(0.5)
    runs, summary = aggregate.aggregate([ft, ags])
    assert np.isnan(runs[1].per_game["final_normalized"][1]) and np.isnan(runs[1].per_game["P"][1])
    assert runs[1].values["accumulated_normalized"] == pytest.approx(0.5) and runs[1].undefined == ["B"]
    assert summary["methods"]["agscl"]["per_game"]["P"][1][0] != summary["methods"]["agscl"]["per_game"]["P"][1][0]  # NaN
    assert json.loads(json.dumps(aggregate.jsonable(summary)))["methods"]["agscl"]["per_game"]["P"][1] == [None] * 3
    assert "- ags: B" in aggregate.markdown(summary)
    table = rl_run_metrics(res)  # the sweep's fallback table
    assert table["plasticity"] == pytest.approx(0.5) and table["accumulated_normalized_return"] == pytest.approx(0.5)


def test_cli_reads_a_sweep_directory_leaves_out_unfinished_runs_and_refuses_bad_input(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    write_results(sweep, "finetune_seed1", "finetune", 1, GAMES, [[11.0, None], [3.0, 8.0]], RANDOM)
    write_results(sweep, "strong_seed1", "agscl", 1, GAMES, [[9.0, None], [8.0, 6.0]], RANDOM)
    write_results(sweep, "strong_seed2", "agscl", 2, GAMES, [[9.0, None], [None, None]], RANDOM)  # interrupted
    trials = [{"name": n, "label": lab} for n, lab in
              (("finetune_seed1", "finetune"), ("strong_seed1", "agscl mu=4"), ("strong_seed2", "agscl mu=4"))]
    (sweep / "sweep.json").write_text(json.dumps({"trials": trials}))
    out = tmp_path / "out"
    assert aggregate.main(["--sweep-dir", str(sweep), "--out-dir", str(out), "--name", "five", "--improver", "agscl mu=4",
                           "--reps", "50"]) == 0
    captured = capsys.readouterr()
    assert "left out" in captured.err and "strong_seed2 has finished 1 of 2 games" in captured.err
    summary = json.loads((out / "five.json").read_text())
    assert summary["methods"]["agscl mu=4"]["seeds"] == [1]
    assert set(summary["probability_of_improvement"]) == {"finetune"}
    assert sorted(p.name for p in out.iterdir()) == ["five.json", "five.md", "five.png", "five_after_games.png"]
    assert "| agscl mu=4 | 1 |" in captured.out
    assert aggregate.main(["--sweep-dir", str(tmp_path / "nowhere"), "--out-dir", str(out)]) == 2
    assert aggregate.main([str(sweep / "finetune_seed1"), "--labels", "a", "b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "not a sweep's state file" in err and "--labels has 2 entries for 1 runs" in err


def test_timeline_ticks_are_compact_step_counts():
    """Figure 7's step axis: 900000 as '900k', not a seven-digit label that runs into the next one."""
    from reporting.plot_continual import compact_steps

    assert [compact_steps(v) for v in (0, 512, 300_000, 900_000, 1_500_000, 80_000_000, 2.5e9)] == [
        "0", "512", "300k", "900k", "1.5M", "80M", "2.5G"]


def test_the_table_says_which_reference_normalized_it(tmp_path):
    ft = [write_run(tmp_path, f"ft{s}", "finetune", s, [[6.0, None], [5.0, 4.0]]) for s in (1, 2)]
    ags = write_run(tmp_path, "ags", "agscl", 1, [[6.0, None], [6.0, 2.0]])
    _, summary = aggregate.aggregate([*ft, ags], reps=50)
    text = aggregate.markdown(summary)
    assert "best and R from this grid's fine-tuning runs (seeds 1, 2:" in text
    assert summary["reference"]["random_return"] == pytest.approx([1.0, -2.0])


def test_figure_7a_marks_each_game_where_its_budget_begins(tmp_path, monkeypatch):
    """Per-game budgets (the five-game grid: Asterix 5x longer): the game boundaries are the
    cumulative budgets, not the first game's budget times the game index (issue 25, item 8)."""
    import matplotlib.axes

    path = write_run(tmp_path, "ft", "finetune", 1, [[6.0, None], [5.0, 4.0]])
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    results.update(games=GAMES, steps_per_game=100, game_steps=[100, 500])
    (tmp_path / "ft" / "results.json").write_text(json.dumps(results))
    run = aggregate.read_run(path)
    assert aggregate.game_boundaries(run) == [100]
    three = dataclasses.replace(run, games=["A", "B", "C"], game_steps=[300, 1500, 300])
    assert aggregate.game_boundaries(three) == [300, 1800]
    legacy = dataclasses.replace(run, games=["A", "B", "C"], game_steps=[])
    assert aggregate.game_boundaries(legacy) == [100, 200]
    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", lambda self, x=0, **kw: drawn.append(x))
    runs, summary = aggregate.aggregate([path], reps=10)
    runs[0].game_steps = [300, 1500]
    aggregate.draw(runs, summary, str(tmp_path / "fig.png"))
    assert drawn == [300]


def test_figures_give_every_label_its_own_color_beyond_ten():
    assert aggregate.label_colors(3) == ["C0", "C1", "C2"]
    for n in (11, 20):
        colors = [tuple(c) for c in aggregate.label_colors(n)]
        assert len(set(colors)) == n  # matplotlib's ten-color cycle would repeat C0 at the eleventh


def test_cli_checks_named_labels_before_any_bootstrap(tmp_path, capsys, monkeypatch):
    """--against, --reference and an explicit --improver are checked before the bootstrap runs; a
    label whose runs were all left out says so; --reference reaches the reference through the CLI."""
    ft = write_results(tmp_path, "ft", "finetune", 1, GAMES, [[11.0, None], [3.0, 8.0]], RANDOM)
    wide = write_results(tmp_path, "ftw", "finetune", 1, GAMES, [[21.0, None], [5.0, 14.0]], RANDOM)
    ags = write_results(tmp_path, "ags", "agscl", 1, GAMES, [[9.0, None], [8.0, 6.0]], RANDOM)
    late = write_results(tmp_path, "late", "ewc", 1, GAMES, [[9.0, None], [None, None]], RANDOM)  # unfinished

    def no_bootstrap(*args, **kwargs):
        raise AssertionError("the bootstrap ran before the labels were checked")

    monkeypatch.setattr(aggregate, "_pair_probability", no_bootstrap)
    out = str(tmp_path / "out")
    base = [ft, wide, ags, late, "--labels", "finetune", "finetune_wide", "agscl", "ewc", "--out-dir", out, "--reps", "10"]
    assert aggregate.main([*base, "--against", "packnet"]) == 2
    assert aggregate.main([*base, "--improver", "agscl_mu4"]) == 2
    assert aggregate.main([*base, "--reference", "finetune_narrow"]) == 2
    assert aggregate.main([*base, "--against", "ewc"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == ["aggregate: error: --against 'packnet' is not a label of these runs: choose from finetune, finetune_wide, agscl",
                   "aggregate: error: --improver 'agscl_mu4' is not a label of these runs: choose from finetune, finetune_wide, agscl",
                   "aggregate: error: --reference 'finetune_narrow' is not a label of these runs: choose from finetune, finetune_wide, agscl",
                   "aggregate: error: every run labelled 'ewc' was left out (not finished): no table against it"]
    assert not os.path.exists(out)
    monkeypatch.undo()
    assert aggregate.main([ft, wide, "--labels", "finetune", "finetune_wide", "--reference", "finetune", "--out-dir", out,
                           "--reps", "10"]) == 0
    summary = json.loads((tmp_path / "out" / "continual.json").read_text())
    assert summary["reference"]["label"] == "finetune" and summary["reference"]["max_return"] == pytest.approx([11.0, 8.0])


def test_probability_intervals_are_the_same_every_time_and_leave_numpys_generator_alone(tmp_path):
    """rliable's two-sample bootstrap ignores random_state (it draws from np.random): the aggregate
    seeds numpy's global generator for the call and restores it."""
    pytest.importorskip("rliable.library")
    ft = write_results(tmp_path, "ft", "finetune", 0, GAMES, [[11.0, None], [1.0, 8.0]], RANDOM)
    ags = [write_results(tmp_path, f"a{s}", "agscl", s, GAMES, [[9.0, None], [8.0 - s, 6.0 + s]], RANDOM) for s in range(3)]
    ewc = [write_results(tmp_path, f"e{s}", "ewc", s, GAMES, [[9.0, None], [6.0 - s, 5.0 + 2 * s]], RANDOM) for s in range(3)]
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    first = aggregate.aggregate([ft, *ags, *ewc], reps=300)[1]["probability_of_improvement"]["ewc"]["probability"]
    assert np.random.random() == expected_next  # the caller's stream is where it was
    np.random.seed(7)  # another global state: the table must not depend on it
    second = aggregate.aggregate([ft, *ags, *ewc], reps=300)[1]["probability_of_improvement"]["ewc"]["probability"]
    assert first == second and first[1] < first[2]
