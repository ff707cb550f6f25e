"""``--track`` (cleanrl's flag): Weights & Biases, tested offline (``WANDB_MODE=offline``: no
network here). The offline run must hold the config and the TensorBoard scalars it mirrors."""

from __future__ import annotations

import glob
import os

import pytest

from agents import ppo_continual, tracking

TINY = ["--suite", "minatar", "--games", "Breakout", "--steps-per-game", "256", "--num-envs", "4",
        "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1", "--eval-episodes", "2",
        "--random-episodes", "2", "--eval-envs", "2", "--eval-max-frames", "200", "--importance-obs", "64",
        "--importance-batch", "32", "--seed", "5", "--torch-threads", "1", "--method", "finetune"]


@pytest.mark.slow
def test_track_offline_keeps_the_config_and_the_tensorboard_scalars(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("minatar")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rc = ppo_continual.main([*TINY, "--track", "--wandb-project-name", "test-agscl", "--runs-dir", str(tmp_path),
                             "--run-name", "tracked"])
    assert rc == 0
    (run,) = glob.glob(str(tmp_path / "tracked" / "wandb" / "offline-run-*"))
    assert os.path.basename(run).endswith("-tracked")  # the W&B id is the run directory's name (resume continues it)
    (log,) = glob.glob(os.path.join(run, "run-*.wandb"))
    data = open(log, "rb").read()  # W&B's record log: protobuf records, strings stored as they are
    assert b"test-agscl" in data  # the project
    assert b'"finetune"' in data and b"wandb_project_name" in data and b"learning_rate" in data  # the Args as config
    # mirrored from the run's TensorBoard events: tags written well before the end (W&B tails event
    # files on a timer, so the very last events may reach it only when it is synced)
    for tag in (b"charts/learning_rate", b"eval/Breakout/random_return", b"losses/value_loss"):
        assert tag in data, tag


def test_track_without_wandb_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tracking, "available", lambda: False)
    assert ppo_continual.main([*TINY, "--track", "--runs-dir", str(tmp_path), "--run-name", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['ppo_continual: error: --track needs Weights & Biases, the optional extra: pip install -e ".[track]"']
    assert not (tmp_path / "x").exists()
