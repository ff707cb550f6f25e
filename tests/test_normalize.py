"""reporting.normalize: normalized returns, P and HParams metrics written after the fact into a run's
TensorBoard, checked against numbers computed by hand and read back with TensorBoard's own reader."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from reporting import normalize
from reporting.tensorboard_layout import hparams_of, write_hparams
from results_files import write_run

FT_EVALS = [(50, 0, False, {"A": 5.0}), (100, 0, True, {"A": 11.0}),
            (150, 1, False, {"A": 4.0, "B": 0.0}), (200, 1, True, {"A": 3.0, "B": 8.0})]
AGS_EVALS = [(50, 0, False, {"A": 4.0}), (100, 0, True, {"A": 6.0}),
             (150, 1, False, {"A": 6.0, "B": 1.0}), (200, 1, True, {"A": 5.0, "B": 2.0})]


def scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run directory as TensorBoard's own reader sees it."""
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_written_numbers_match_a_hand_computation(tmp_path):
    ft = write_run(tmp_path, "ft", "finetune", FT_EVALS)
    ags = write_run(tmp_path, "ags", "agscl", AGS_EVALS)
    assert normalize.main([ft, ags, "--reference", ft]) == 0
    # by hand: the reference's best is A 11, B 8; random A 1, B -2, so A -> (s - 1) / 10, B -> (s + 2) / 10
    got = scalars(ags)
    assert got["eval/A/normalized_return"] == [(50, 0.3), (100, 0.5), (150, 0.5), (200, 0.4)]
    assert got["eval/B/normalized_return"] == [(150, 0.3), (200, 0.4)]
    assert got["eval/accumulated_normalized_return"] == [(50, 0.3), (100, 0.5), (150, 0.8), (200, 0.8)]
    # P_j = (A[j,j] - R_j) / (A_FT[j,j] - R_j): A (6 - 1) / (11 - 1), B (2 + 2) / (8 + 2)
    assert got["metrics/A/P"] == [(100, 0.5), (200, 0.5)]
    assert got["metrics/B/P"] == [(200, 0.4)]
    assert got["metrics/P_mean"] == [(100, 0.5), (200, 0.45)]
    assert got["hparam/accumulated_normalized_return"] == [(200, 0.8)]
    assert got["hparam/P_mean"] == [(200, 0.45)]
    # the fine-tuning run is normalized by its own best (the same numbers here: it is the reference)
    mine = scalars(ft)
    assert mine["eval/accumulated_normalized_return"] == [(50, 0.4), (100, 1.0), (150, 0.5), (200, 1.2)]
    assert mine["metrics/P_mean"] == [(100, 1.0), (200, 1.0)]


def test_a_finetune_run_is_normalized_by_its_own_best_whatever_the_reference(tmp_path):
    other_ft = write_run(tmp_path, "ft2", "finetune", [(100, 0, True, {"A": 21.0}), (200, 1, True, {"A": 1.0, "B": 18.0})])
    ft = write_run(tmp_path, "ft", "finetune", FT_EVALS)
    normalize.normalize_runs([ft], other_ft)
    assert scalars(ft)["eval/A/normalized_return"][1] == (100, 1.0)


def test_running_twice_gives_the_same_tensorboard(tmp_path):
    ft = write_run(tmp_path, "ft", "finetune", FT_EVALS)
    ags = write_run(tmp_path, "ags", "agscl", AGS_EVALS)
    normalize.normalize_runs([ft, ags], ft)
    first = scalars(ags)
    normalize.normalize_runs([ft, ags], ft)
    assert scalars(ags) == first  # not doubled points
    assert [f for f in os.listdir(ags) if "tfevents" in f] == [normalize.EVENT_FILE]
    assert not [f for f in os.listdir(ags) if ".tmp" in f]


def test_a_run_normalized_live_is_left_as_it_is(tmp_path):
    ft = write_run(tmp_path, "ft", "finetune", FT_EVALS)
    live = write_run(tmp_path, "live", "agscl", AGS_EVALS, reference={"run": ft, "max_return": {"A": 11.0, "B": 8.0}})
    (line,) = normalize.normalize_runs([live], ft)
    assert "left as it is" in line
    assert not os.path.exists(os.path.join(live, normalize.EVENT_FILE))


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    ft = write_run(tmp_path, "ft", "finetune", FT_EVALS)
    ags = write_run(tmp_path, "ags", "agscl", AGS_EVALS)
    for argv, words in (([ags], "give --reference"), ([ags, "--reference", ags], "not a fine-tuning run"),
                        ([str(tmp_path / "nope"), "--reference", ft], "does not exist")):
        assert normalize.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert not os.path.exists(os.path.join(ags, normalize.EVENT_FILE))


def test_a_figure_goes_into_the_images_tab_byte_for_byte(tmp_path):
    png = tmp_path / "fig.png"
    rgb = np.zeros((30, 40, 3), dtype=np.uint8)
    rgb[5:10, 7:20] = (200, 30, 60)
    Image.fromarray(rgb).save(png)
    for _ in range(2):
        normalize.add_figure(str(tmp_path), str(png))
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    (image,) = acc.Images(normalize.FIGURE_TAG)  # replaced, not added twice
    assert image.encoded_image_string == png.read_bytes()
    assert (image.width, image.height) == (40, 30)


@dataclasses.dataclass
class _Args:
    method: str = "finetune"
    lr: float = 0.1
    games: tuple = ("A", "B")


def test_live_hparams_declare_every_metric_but_log_no_nan(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    results = {"timeline": [{"global_step": 200}], "metrics": {"S_mean": 0.75}, "progress": {"global_step": 200}}
    with SummaryWriter(str(tmp_path)) as writer:
        write_hparams(writer, hparams_of(_Args()), results)
    got = scalars(str(tmp_path))
    assert got == {"hparam/S_mean": [(200, 0.75)]}  # undefined ones are left to reporting.normalize
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert "_hparams_/experiment" in acc.summary_metadata  # the session and its metric columns are declared


def test_a_sweep_normalizes_each_run_by_the_finetune_run_of_its_seed(tmp_path):
    from types import SimpleNamespace

    from sweep.aggregate import normalize_rl

    ft1 = write_run(tmp_path, "ft1", "finetune", FT_EVALS)
    ft2 = write_run(tmp_path, "ft2", "finetune", [(100, 0, True, {"A": 21.0}), (200, 1, True, {"A": 1.0, "B": 18.0})])
    ags1 = write_run(tmp_path, "ags1", "agscl", AGS_EVALS)
    ags2 = write_run(tmp_path, "ags2", "agscl", AGS_EVALS)
    lone = write_run(tmp_path, "lone", "ewc", AGS_EVALS)  # seed 3 has no fine-tuning run: one line, no stop
    trial = lambda name, method, seed, run: SimpleNamespace(name=name, method=method, seed=seed, run_dir=run, reference=None)  # noqa: E731
    lines = normalize_rl([trial("ft1", "finetune", 1, ft1), trial("ags1", "agscl", 1, ags1),
                          trial("ft2", "finetune", 2, ft2), trial("ags2", "agscl", 2, ags2), trial("lone", "ewc", 3, lone)])
    assert "not normalized" in lines[-1] and not os.path.exists(os.path.join(lone, normalize.EVENT_FILE))
    assert scalars(ags1)["eval/A/normalized_return"][1] == (100, 0.5)  # (6 - 1) / (11 - 1)
    assert scalars(ags2)["eval/A/normalized_return"][1] == (100, 0.25)  # (6 - 1) / (21 - 1)


# ---------------------------------------------------------------------------------------------
# one noise rule, one scale per game (issue 25, item 1)
# ---------------------------------------------------------------------------------------------
def test_normalize_applies_the_random_scores_noise_like_the_live_agent(tmp_path):
    """The reference's best A is 1.9 over a random score of 1 with 10 episodes each: beyond the
    noise of the best alone, within the noise of best and random together. The agent (and the
    aggregate) count both; normalize used the bare random mean and gave A a number."""
    from reporting.results import normalized, reference_scores, load_results

    best_returns = [1.9 + d for d in (-0.3, 0.3) * 5]  # mean 1.9, se 0.1
    random_returns = [1.0 + d for d in (-1.5, 1.5) * 5]  # mean 1.0, se 0.5: gain 0.9 < 2 * hypot(0.1, 0.5)
    evals = [(100, 0, True, {"A": best_returns}), (200, 1, True, {"A": best_returns, "B": 8.0})]
    ft = write_run(tmp_path, "ft", "finetune", evals, random={"A": random_returns, "B": -2.0})
    ags = write_run(tmp_path, "ags", "agscl", AGS_EVALS, random={"A": random_returns, "B": -2.0})
    assert normalize.main([ags, "--reference", ft]) == 0
    got = scalars(ags)
    assert "eval/A/normalized_return" not in got  # undefined: within noise, as the live agent says
    ref = reference_scores(load_results(ft), ["A", "B"], ft)
    assert ref["undefined"] == ["A"]
    live = normalized(load_results(ags)["timeline"][-1]["scores"], ref, load_results(ags)["random"])
    assert np.isnan(live[0]["A"]) and got["eval/accumulated_normalized_return"][-1] == (200, round(live[1], 6))
    # the TensorBoard says which reference normalized it, and which game it could not
    acc = EventAccumulator(ags, size_guidance={"tensors": 0})
    acc.Reload()
    (text,) = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("normalization/text_summary")]
    assert f"the fine-tuning run {ft}" in text and "undefined (its best within noise of R): A" in text


def test_a_games_normalized_return_is_defined_by_the_reference_for_every_seed(tmp_path):
    """Two seeds whose own random scores differ: each game is shifted and scaled by the
    reference's random score, so both seeds sum the same games on the same scale (with each
    seed's own random score, seed 2's A would be undefined: its random 10.5 is above the best)."""
    from reporting.results import load_results, normalized, reference_scores, run_ratios, boundary_evaluations

    ft = write_run(tmp_path, "ft", "finetune", FT_EVALS)  # best A 11, B 8; random A 1, B -2
    runs = [write_run(tmp_path, f"s{k}", "agscl", AGS_EVALS, random={"A": r, "B": -2.0}) for k, r in ((1, 1.0), (2, 10.5))]
    ref = reference_scores(load_results(ft), ["A", "B"], ft)
    for run in runs:
        res = load_results(run)
        norm, acc = normalized(res["timeline"][-1]["scores"], ref, res["random"])
        assert norm == pytest.approx({"A": (5 - 1) / 10, "B": (2 + 2) / 10}) and acc == pytest.approx(0.8)
        ratios = run_ratios(boundary_evaluations(res), [res["random"][g] for g in "AB"],
                            [{"mean": 11.0}, {"mean": 8.0}], None, [{"mean": 1.0}, {"mean": -2.0}])
        assert ratios["accumulated"][-1] == pytest.approx(0.8)
        # S compares the run with itself: its own random score
        own = res["random"]["A"]["mean"]
        assert ratios["S"][0] == pytest.approx((5 - own) / (6 - own)) if own < 6 else np.isnan(ratios["S"][0])


def test_an_unfinished_run_is_normalized_over_the_games_it_played(tmp_path):
    """Half of a three-game run (issue 25, item 7): the padding rows of its score matrix must
    span all its games, not the ones it has played (the mismatch crashed continual_metrics)."""
    ft = write_run(tmp_path, "ft", "finetune", [(100, 0, True, {"A": 11.0}), (200, 1, True, {"A": 3.0, "B": 8.0}),
                                                (300, 2, True, {"A": 3.0, "B": 4.0, "C": 5.0})],
                   games=("A", "B", "C"), random={"A": 1.0, "B": -2.0, "C": 0.0})
    half = write_run(tmp_path, "half", "agscl", [(50, 0, False, {"A": 4.0}), (100, 0, True, {"A": 6.0}),
                                                 (150, 1, False, {"A": 6.0, "B": 1.0})],
                     games=("A", "B", "C"), random={"A": 1.0, "B": -2.0, "C": 0.0})
    assert normalize.main([half, "--reference", ft]) == 0
    got = scalars(half)
    assert got["eval/accumulated_normalized_return"] == [(50, 0.3), (100, 0.5), (150, 0.8)]
    assert got["metrics/A/P"] == [(100, 0.5)]


def test_hparams_show_the_runs_own_method_flags_only():
    """A fine-tuning run's HParams had every method's flags (agscl_lambda 100); an AGS-CL run's
    has AGS-CL's, and no other method's (issue 25, item 11)."""
    from agents.config import parse_args
    from agents.methods_cli import run_hparams
    from agents.ppo_continual import Args

    ft = run_hparams(parse_args(Args, ["--suite", "minatar", "--method", "finetune"]))
    ags = run_hparams(parse_args(Args, ["--suite", "minatar", "--method", "agscl"]))
    assert ft["method"] == "finetune" and "learning_rate" in ft
    assert not {"agscl_lambda", "mu", "ewc_lambda", "keep"} & set(ft)
    assert {"agscl_lambda", "mu", "rho", "eta"} <= set(ags) and not {"ewc_lambda", "keep"} & set(ags)
