"""A fine-tuning reference that cannot normalize some games is accepted by the agent: those games'
normalized returns stay null in results.json and absent from TensorBoard, and one line says so."""

from __future__ import annotations

import json
import math

import pytest

from agents import ppo_continual
from reporting.results import gain_over_random, load_results

pytest.importorskip("minatar")

TINY = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--steps-per-game", "256", "--num-envs", "4",
        "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1", "--eval-episodes", "4",
        "--random-episodes", "4", "--eval-envs", "4", "--eval-max-frames", "200", "--importance-obs", "64",
        "--importance-batch", "32", "--seed", "3", "--torch-threads", "1", "--eval-every", "128"]


def scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_agent_accepts_a_reference_that_cannot_normalize_one_game(tmp_path, capsys):
    assert ppo_continual.main([*TINY, "--method", "finetune", "--runs-dir", str(tmp_path), "--run-name", "ft"]) == 0
    # the fine-tuning run as a reference: Breakout far above its random policy, Asterix below it
    # (as the seed-12 run: 0.83 on Asterix against a random 0.87)
    res = load_results(str(tmp_path / "ft"))
    best = {g: max(e["scores"][g]["mean"] for e in res["timeline"] if g in e["scores"]) for g in res["games"]}
    res["random"]["Breakout"] = {"mean": best["Breakout"] - 50.0}
    res["random"]["Asterix"] = {"mean": best["Asterix"] + 0.04}
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    (ref_dir / "results.json").write_text(json.dumps(res))
    capsys.readouterr()

    rc = ppo_continual.main([*TINY, "--method", "ewc", "--runs-dir", str(tmp_path), "--run-name", "ewc",
                             "--reference-run", str(ref_dir)])
    out = capsys.readouterr().out
    assert rc == 0
    notes = [line for line in out.splitlines() if "never above the random policy beyond noise" in line]
    assert len(notes) == 1 and "Asterix" in notes[0] and "Breakout" not in notes[0]
    run = load_results(str(tmp_path / "ewc"))
    assert run["reference"]["undefined"] == ["Asterix"] and run["progress"]["status"] == "finished"
    tags = scalars(str(tmp_path / "ewc"))
    assert "eval/Asterix/normalized_return" not in tags
    for entry in run["timeline"]:
        assert entry["normalized"].get("Asterix", None) is None  # null in results.json, never a number
        breakout = entry["normalized"]["Breakout"]
        # Breakout: the reference's best against the reference's random score, one scale for every run
        ref_random = {"mean": run["reference"]["random_return"]["Breakout"], "se": run["reference"]["random_se"]["Breakout"]}
        gain = gain_over_random({"mean": best["Breakout"], "se": run["reference"]["max_se"]["Breakout"]}, ref_random)
        assert ref_random["mean"] == best["Breakout"] - 50.0 and gain == pytest.approx(50.0)
        expected = (entry["scores"]["Breakout"]["mean"] - ref_random["mean"]) / gain
        assert breakout == pytest.approx(expected)
        assert entry["accumulated_normalized"] == pytest.approx(breakout or 0.0)
    assert run["metrics"]["per_game"]["Asterix"]["P"] is None
