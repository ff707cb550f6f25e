"""``--steps-per-game`` with one value per game: each game gets its own budget, its own lr schedule
and its own dormant-unit count in the results."""

from __future__ import annotations

import pytest

pytest.importorskip("minatar", reason='the MinAtar suite needs pip install -e ".[minatar]"')

from agents import ppo_continual  # noqa: E402
from agents.config import game_budgets  # noqa: E402
from reporting.results import load_results  # noqa: E402

TINY = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--num-envs", "4",
        "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1", "--eval-episodes", "2",
        "--random-episodes", "2", "--eval-envs", "2", "--eval-max-frames", "100", "--importance-obs", "64",
        "--importance-batch", "32", "--seed", "3", "--torch-threads", "1", "--eval-every", "0", "--method", "finetune"]


def test_game_budgets_expand_one_value_and_reject_a_wrong_count() -> None:
    assert game_budgets((300,), 3) == [300, 300, 300]
    assert game_budgets(300, 2) == [300, 300]  # a config stored by an older version
    assert game_budgets((100, 200), 2) == [100, 200]
    assert game_budgets((100, 200), 3) is None


def test_each_game_runs_its_own_budget(tmp_path) -> None:
    rc = ppo_continual.main([*TINY, "--steps-per-game", "128", "384", "--runs-dir", str(tmp_path), "--run-name", "r"])
    assert rc == 0
    results = load_results(str(tmp_path / "r"))
    assert results["game_steps"] == [128, 384]
    assert [info["steps"] for info in results["games_info"]] == [128, 384]
    assert [info["updates"] for info in results["games_info"]] == [1, 3]
    assert results["progress"]["global_step"] == 512
    for entry in results["regularizer"]:
        assert 0.0 <= entry["dormant_fraction"] <= 1.0


def test_a_budget_list_of_the_wrong_length_is_one_line(tmp_path, capsys) -> None:
    rc = ppo_continual.main([*TINY, "--steps-per-game", "128", "128", "128", "--runs-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "--steps-per-game" in err and "one per game (2)" in err and len(err.splitlines()) == 1
