"""Everyday reliability of the agent on short MinAtar runs: stop and resume from any point,
validated results files, clean atomic writes, provenance, guards, and TensorBoard."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time

import pytest

pytest.importorskip("minatar", reason='needs pip install -e ".[minatar]"')

from agents import ppo_continual  # noqa: E402
from reporting import plot_continual  # noqa: E402
from reporting.results import load_results, results_problem, write_json_atomic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two games of 6 updates each; no step-based checkpoint inside a game and none on the clock,
# so the first checkpoint is the end of game 1.
SHORT = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--steps-per-game", "768", "--num-envs", "4",
         "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2", "--eval-episodes", "2",
         "--random-episodes", "2", "--eval-envs", "2", "--eval-max-frames", "200", "--eval-every", "256",
         "--importance-obs", "64", "--importance-batch", "32", "--checkpoint-every", "0", "--checkpoint-minutes", "0",
         "--seed", "2", "--torch-threads", "1"]


def start(run_dir, *extra: str) -> subprocess.Popen:
    """The agent in its own process group (so signals reach it, not pytest), output to a log."""
    log = open(str(run_dir) + ".log", "ab")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    args = list(extra) if "--resume" in extra else [*SHORT, "--runs-dir", os.path.dirname(run_dir),
                                                   "--run-name", os.path.basename(run_dir), *extra]
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)


def wait_for(predicate, proc, timeout=180.0) -> None:
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, "the run ended before the point we wanted to stop it at"
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def updates_logged(run_dir) -> int:
    try:
        return open(str(run_dir) + ".log").read().count(" update=")
    except OSError:
        return 0


def assert_complete(run_dir) -> dict:
    res = load_results(str(run_dir))  # validates the whole structure
    assert res["progress"]["status"] == "finished"
    steps = [e["global_step"] for e in res["timeline"]]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps  # no duplicate evaluations
    assert all(v is not None for i, row in enumerate(res["score_matrix"]) for v in row[: i + 1])
    return res


def test_sigkill_before_the_first_checkpoint_then_resume_completes(tmp_path):
    run_dir = tmp_path / "killed"
    proc = start(run_dir)
    target = random.Random(os.getpid()).randint(1, 5)  # an update of game 1, before any checkpoint
    wait_for(lambda: updates_logged(run_dir) >= target, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "ckpt" / "latest.pt").exists()
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--resume", str(run_dir)],
                             cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "restarting it from its stored config" in resumed.stdout
    res = assert_complete(run_dir)
    assert [v["kind"] for v in res["versions"]] == ["restart"]  # the killed start's results were cleared
    assert res["timeline"][0]["global_step"] == 256


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_checkpoints_marks_interrupted_and_resumes(tmp_path, signum):
    run_dir = tmp_path / "stopped"
    proc = start(run_dir)
    wait_for(lambda: updates_logged(run_dir) >= 2, proc)
    os.killpg(proc.pid, signum)
    assert proc.wait(timeout=120) == 128 + signum
    res = load_results(str(run_dir))
    assert res["progress"]["status"] == "interrupted"
    assert (run_dir / "ckpt" / "latest.pt").exists()
    log = open(str(run_dir) + ".log").read()
    assert f"stopped by {signal.Signals(signum).name}" in log and f"--resume {run_dir}" in log
    proc = start(run_dir, "--resume", str(run_dir))
    assert proc.wait(timeout=300) == 0
    res = assert_complete(run_dir)
    assert [v["kind"] for v in res["versions"]] == ["start", "resume"]
    assert res["versions"][1]["global_step"] > 0


def test_clock_checkpoints_come_without_step_checkpoints(tmp_path, capsys):
    args = [*SHORT, "--checkpoint-minutes", "1e-9", "--games", "Breakout", "--runs-dir", str(tmp_path), "--run-name", "clock"]
    assert ppo_continual.main(args) == 0
    out = capsys.readouterr().out
    in_game = out[: out.index("end of Breakout")]
    assert in_game.count("ckpt/latest.pt") == 5  # after each of updates 1..5 (the 6th ends the game)


def test_malformed_results_are_one_line_errors_in_plot_and_reference(tmp_path, capsys):
    assert ppo_continual.main([*SHORT, "--method", "finetune", "--runs-dir", str(tmp_path), "--run-name", "ft"]) == 0
    res = load_results(str(tmp_path / "ft"))
    assert results_problem(res) is None and res["format"] == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    broken = dict(res, timeline=[{k: v for k, v in e.items() if k != "scores"} for e in res["timeline"]])
    (bad / "results.json").write_text(json.dumps(broken))
    capsys.readouterr()
    assert plot_continual.main([str(bad), "--reference", str(tmp_path / "ft"), "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "timeline entry 0 lacks" in err, err
    rc = ppo_continual.main([*SHORT, "--runs-dir", str(tmp_path), "--run-name", "x", "--reference-run", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "timeline entry 0 lacks" in err
    # the reference must be a fine-tuning run over the same games
    ags = dict(res, config=dict(res["config"], method="agscl"))
    (bad / "results.json").write_text(json.dumps(ags))
    rc = ppo_continual.main([*SHORT, "--runs-dir", str(tmp_path), "--run-name", "y", "--reference-run", str(bad)])
    assert rc == 2 and "must be a fine-tuning run" in capsys.readouterr().err
    rc = ppo_continual.main([*SHORT, "--games", "Breakout", "--runs-dir", str(tmp_path), "--run-name", "z",
                             "--reference-run", str(tmp_path / "ft")])
    assert rc == 2 and "not this run's Breakout" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))


def test_sequence_and_games_together_are_refused(tmp_path, capsys):
    rc = ppo_continual.main(["--suite", "minatar", "--sequence", "all", "--games", "Breakout", "--runs-dir", str(tmp_path)])
    assert rc == 2 and "both given" in capsys.readouterr().err


def test_writes_are_0644_and_killed_temps_are_removed(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(str(path), {"a": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    run_dir = tmp_path / "run"
    (run_dir / "ckpt").mkdir(parents=True)
    (run_dir / "ckpt" / "latest.pt.tmp4242").write_bytes(b"half")
    (run_dir / "results.json.tmp17").write_text("{")
    args = [*SHORT, "--games", "Breakout", "--runs-dir", str(tmp_path), "--run-name", "run"]
    assert ppo_continual.main(args) == 0  # an empty leftover directory is reused
    left = [n for n in os.listdir(run_dir) + os.listdir(run_dir / "ckpt") if ".tmp" in n]
    assert left == []


def test_logging_regularizer_once_per_step_importance_cap_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = [*SHORT, "--method", "agscl", "--importance-obs", "100000", "--runs-dir", str(tmp_path), "--run-name", "tb"]
    assert ppo_continual.main(args) == 0
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("regularizer/sparsity")]
    assert len(steps) == len(set(steps)), steps  # never two values at one step
    assert "custom_scalars" in acc.Tags().get("tensors", []) or acc.PluginTagToContent("custom_scalars")
    assert acc.PluginTagToContent("hparams")  # the HParams session of the finished run
    res = load_results(str(tmp_path / "tb"))
    # HParams metrics are logged exactly when defined (a gain over random within noise is null, never NaN)
    s_mean = (res.get("metrics") or {}).get("S_mean")
    assert ("hparam/S_mean" in set(acc.Tags()["scalars"])) == (s_mean is not None), s_mean
    assert len(res["regularizer"]) == 2


def test_importance_is_capped_at_the_games_steps(tmp_path, capsys):
    args = [*SHORT, "--games", "Breakout", "--method", "agscl", "--importance-obs", "100000", "--runs-dir", str(tmp_path),
            "--run-name", "cap"]
    assert ppo_continual.main(args) == 0
    assert "importance from 768 observations" in capsys.readouterr().out
