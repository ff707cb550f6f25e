"""The sweep end to end on split_digits: through Ray, killed and re-run, without Ray, bad input;
the RL table's bootstrap intervals on hand-made results."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sweep.aggregate import aggregate_rl, format_rl_table, report_rl, rl_run_metrics
from sweep.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--benchmark", "split_digits", "--epochs", "1", "--no-progress", "--no-tensorboard"]
GRID_2X2 = ["--trainer", "supervised", "--methods", "finetune", "agscl", "--seeds", "0", "1", "--no-progress"]

ray = pytest.importorskip("ray", reason='the sweep extra is not installed (pip install -e ".[sweep]")')


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (extra_path, ROOT, env.get("PYTHONPATH")) if p)
    return env


def _sweep(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[subprocess.Popen, str, str]:
    """Run the sweep CLI; (process, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "sweep", *argv], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc, out, err


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _launcher_pids(sweep_dir: Path) -> set[int]:
    pids = set()
    for log in (sweep_dir / "logs").glob("*.log"):
        pids |= {int(p) for p in re.findall(r"^=== attempt \d+ .* launcher [^:]+:(\d+):", log.read_text(), re.M)}
    return pids


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory):
    """finetune and agscl x seeds 0 and 1, one epoch per task, through a local Ray instance."""
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "ray"
    return (sweep_dir, *_sweep(["--engine", "ray", *GRID_2X2, "--dir", str(sweep_dir), "--", *DIGITS], _env()))


NAMES = {"finetune_seed0", "finetune_seed1", "agscl_seed0", "agscl_seed1"}


def test_ray_sweep_2x2_on_split_digits(ray_sweep):
    sweep_dir, proc, out, err = ray_sweep
    assert proc.returncode == 0, err[-2000:]
    assert "engine ray" in out
    for name in NAMES:
        results = _results(sweep_dir / name)
        assert results["finished"] and results["tasks_done"] == 5
        assert results["config"]["method"] == name.split("_")[0] and results["config"]["seed"] == int(name[-1])
        assert results["schedule"]["epochs"] == 1
        assert re.search(rf"\] {name}: running \(attempt 1, fresh\)", out)
        assert re.search(rf"\] {name}: finished \(", out)
    # measured against the fine-tuning run of its own seed
    for seed in (0, 1):
        agscl = _results(sweep_dir / f"agscl_seed{seed}")
        assert Path(agscl["reference"]) == sweep_dir / f"finetune_seed{seed}" / "results.json"
        assert agscl["plasticity"] is not None
    # the trials ran in Ray workers, not in the sweep's own process
    pids = _launcher_pids(sweep_dir)
    assert pids and proc.pid not in pids
    state = json.loads((sweep_dir / "sweep.json").read_text())
    assert state["engine"] == "ray" and {t["name"]: t["state"] for t in state["trials"]} == dict.fromkeys(NAMES, "finished")
    summary = (sweep_dir / "report" / "summary.txt").read_text()
    assert re.search(r"split_digits\s+agscl\s+2\s+5", summary) and re.search(r"split_digits\s+finetune\s+2\s+5", summary)
    assert summary.strip() in out
    assert (sweep_dir / "report" / "average_accuracy.png").stat().st_size > 0


def test_sequential_fallback_without_ray_writes_the_same_output(ray_sweep, tmp_path):
    ray_dir = ray_sweep[0]
    fake = tmp_path / "no_ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('simulated: ray is not installed')\n")
    sweep_dir = tmp_path / "sequential"
    grid = [*GRID_2X2[:GRID_2X2.index("--seeds")], "--seeds", "1", "--no-progress"]  # seed 1 of the same grid
    proc, out, err = _sweep([*grid, "--dir", str(sweep_dir), "--", *DIGITS], _env(fake))
    assert proc.returncode == 0, err[-2000:]
    assert "engine sequential" in out
    assert _launcher_pids(sweep_dir) == {proc.pid}  # every trial launched by the sweep process itself
    names = ["finetune_seed1", "agscl_seed1"]
    assert sorted(p.name for p in sweep_dir.iterdir() if (p / "results.json").is_file()) == sorted(names)
    for name in names:
        ours, theirs = _results(sweep_dir / name), _results(ray_dir / name)
        assert ours["accuracy"] == theirs["accuracy"]  # same runs, bit for bit
        assert ours["plasticity"] == theirs["plasticity"] is not None
        assert re.search(rf"\] {name}: finished \(", out)
    summary = (sweep_dir / "report" / "summary.txt").read_text()
    assert re.search(r"split_digits\s+agscl\s+1\s+5", summary) and summary.strip() in out
    ours = {t["name"]: t for t in json.loads((sweep_dir / "sweep.json").read_text())["trials"]}
    theirs = {t["name"]: t for t in json.loads((ray_dir / "sweep.json").read_text())["trials"]}
    for name in names:
        assert (ours[name]["flags"], ours[name]["state"]) == (theirs[name]["flags"], theirs[name]["state"])


def test_search_through_tune_ranks_configurations_by_the_stated_objective(ray_sweep):
    sweep_dir = ray_sweep[0]  # its finished fine-tuning run of seed 0 is the reference: skipped, not re-run
    stamp = (sweep_dir / "finetune_seed0" / "results.json").stat().st_mtime_ns
    proc, out, err = _sweep(["--trainer", "supervised", "--methods", "agscl", "--seeds", "0", "--search", "grid",
                   "--grid", "agscl.mu=0.5,5", "--objective", "stability_at_plasticity", "--min-plasticity", "0.97",
                   "--dir", str(sweep_dir), "--no-progress", "--", *DIGITS], _env())
    assert proc.returncode == 0, err[-2000:]
    assert "finetune_seed0: skipped (finished earlier)" in out
    assert (sweep_dir / "finetune_seed0" / "results.json").stat().st_mtime_ns == stamp
    assert re.search(r"\] mu=0.5: finished \(objective", out) and re.search(r"\] mu=5: finished \(objective", out)
    search = json.loads((sweep_dir / "search.json").read_text())
    rows = search["rows"]
    assert sorted(r["config"]["mu"] for r in rows) == [0.5, 5]
    for row in rows:  # the objective is recomputed here from the run's own results file
        results = _results(sweep_dir / f"agscl_mu{row['config']['mu']:g}_seed0")
        assert results["hparams"]["mu"] == row["config"]["mu"]
        p, s = results["plasticity"], results["stability"]
        assert row["objective"] == pytest.approx(s if p >= 0.97 else p - 1)
    assert [r["objective"] for r in rows] == sorted((r["objective"] for r in rows), reverse=True)
    assert search["best"] == rows[0]["config"]
    assert proc.pid not in _launcher_pids(sweep_dir)  # the configurations ran in Tune's workers


def _trainer_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and "sweep._child" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_killed_sweep_skips_finished_trials_and_resumes_the_interrupted_one(tmp_path):
    sweep_dir = tmp_path / "killed"
    # AGS-CL's tasks take seconds, longer than a killed Ray worker takes to die (and its trainer with it);
    # no reference: a fine-tuning run of another schedule cannot serve as one (the trainer refuses it)
    argv = ["--engine", "ray", "--trainer", "supervised", "--methods", "finetune", "agscl", "--seeds", "0",
            "--grid", "finetune.epochs=1", "--grid", "agscl.epochs=60", "--dir", str(sweep_dir), "--no-progress",
            "--no-report", "--no-reference", "--", "--benchmark", "split_digits", "--num-tasks", "3", "--no-progress", "--no-tensorboard"]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sweep", *argv], env=_env(), cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finetune, agscl = sweep_dir / "finetune_epochs1_seed0", sweep_dir / "agscl_epochs60_seed0"
    deadline = time.monotonic() + 240
    try:
        while True:  # kill once fine-tuning is done and AGS-CL has finished its first task only
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-2000:]
            partial = (agscl / "results.json").is_file() and _results(agscl)
            if partial and partial["tasks_done"] >= 1 and (agscl / "checkpoint.pt").is_file():
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not partial["finished"] and partial["tasks_done"] < 3
    assert _results(finetune)["finished"]
    # the trainer of the killed sweep dies with it (no orphan keeps writing)
    deadline = time.monotonic() + 30
    while _trainer_processes(str(sweep_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _trainer_processes(str(sweep_dir))
    finetune_stamp = (finetune / "results.json").stat().st_mtime_ns
    first_task = partial["per_task"][0]

    proc, out, err = _sweep(argv, _env())
    assert proc.returncode == 0, err[-2000:]
    assert re.search(r"\] finetune_epochs1_seed0: skipped \(finished earlier\)", out)
    assert re.search(r"\] agscl_epochs60_seed0: running \(attempt 1, resumed from its checkpoint\)", out)
    assert (finetune / "results.json").stat().st_mtime_ns == finetune_stamp  # not run again
    final = _results(agscl)
    assert final["finished"] and final["tasks_done"] == 3
    assert final["config"]["resume"] is True  # the trainer continued its checkpoint
    assert final["per_task"][0] == first_task  # including the wall time of the task done before the kill
    headers = re.findall(r"^=== attempt .*$", (sweep_dir / "logs" / "agscl_epochs60_seed0.log").read_text(), re.M)
    assert len(headers) == 2 and "--resume" not in headers[0] and headers[1].endswith("--resume")


@pytest.mark.parametrize("argv, message", [
    (["--trainer", "chess", "--methods", "agscl"], "invalid choice: 'chess'"),
    (["--trainer", "supervised", "--methods", "agscl", "nope"], "unknown supervised method 'nope'"),
    (["--trainer", "supervised", "--methods", "agscl", "--grid", "mu"], "expected KEY=V1,V2"),
    (["--trainer", "supervised", "--methods", "agscl", "--", "--seed", "3"], "--seed is set by the sweep itself"),
    (["--trainer", "supervised", "--methods", "agscl", "--seeds", "1", "1"], "must be distinct"),
    (["--trainer", "supervised", "--methods", "agscl", "--engine", "warp"], "invalid choice: 'warp'"),
    (["--config", "/nonexistent/sweep.toml"], "cannot read"),
    (["--trainer", "rl", "--methods", "mas", "--variant", "mas=ewc --ewc-lambda 1"], "may not take another method's name"),
    (["--trainer", "rl", "--methods", "strong", "--variant", "strong=chess --mu 3"], "unknown rl method 'chess'"),
    (["--trainer", "rl", "--methods", "x", "--variant", "x=agscl --seed 3"], "--seed is set by the sweep itself"),
    (["--trainer", "rl", "--methods", "ewc", "--variant", "=ewc"], "expected NAME=METHOD"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, tmp_path):
    assert main(["--dir", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sweep: error: ") and message in err
    assert not (tmp_path / "s").exists()


def test_a_trial_refusing_its_flags_fails_alone_with_the_trainers_line(tmp_path):
    """A trainer's exit code 2 is that trial's failure: reported with the trainer's own line, not
    retried, its dependents blocked, and the sweep ends with exit code 1 after the rest (before:
    the whole sweep stopped with exit code 2). The flags pass the trainer's checks that the sweep
    runs before any trial (a flag, a range); the data folder is looked at by the trainer only."""
    bad = tmp_path / "bad.toml"
    bad.write_text('trainer = "supervised"\nmethods = ["finetune", "agscl"]\n'
                   f'flags = {{benchmark = "split_cifar100", data_dir = "{tmp_path / "no_data"}"}}\n')
    proc, out, err = _sweep(["--config", str(bad), "--engine", "sequential", "--no-progress", "--dir", str(tmp_path / "s")], _env())
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert re.search(r"finetune_seed0: failed \(its trainer refused its input \(exit code 2, not retried\): .*CIFAR-100 not found", out)
    assert "agscl_seed0: blocked (its reference finetune_seed0 failed)" in out
    log = (tmp_path / "s" / "logs" / "finetune_seed0.log").read_text()
    assert log.count("=== attempt") == 1  # bad input is never retried
    state = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert {t["name"]: t["state"] for t in state["trials"]} == {"finetune_seed0": "failed", "agscl_seed0": "blocked"}


def test_one_trial_failing_never_stops_the_others(monkeypatch, tmp_path):
    """Both engines settle every outcome through one function: a trial's exit code 2 (the case of
    a reference the trainer refused) or a crash is recorded, and every other trial still runs."""
    from sweep import engine
    from sweep.launch import Outcome
    from sweep.spec import Spec

    ran: list[str] = []

    def fake_run_trial(trial, options, sink=None):
        ran.append(trial.name)
        if trial.name == "ewc_seed1":
            return Outcome(trial.name, "usage", 2, 1, 0.1, "ppo_continual: error: --reference-run: bad")
        if trial.name == "mas_seed1":
            return Outcome(trial.name, "failed", 1, 3, 0.1, "crashed")
        Path(trial.run_dir).mkdir(parents=True, exist_ok=True)
        return Outcome(trial.name, "finished", 0, 1, 0.1)

    monkeypatch.setattr(engine, "run_trial", fake_run_trial)
    spec = Spec("rl", ["finetune", "ewc", "mas", "agscl"], [1, 2], flags=["--suite", "minatar"])
    result = engine.run_sweep(spec, tmp_path / "s", engine.EngineOptions("sequential", progress=False))
    assert sorted(ran) == sorted(t.name for t in spec.trials(tmp_path / "s"))  # all 8 ran
    states = {n: o.state for n, o in result.outcomes.items()}
    assert states.pop("ewc_seed1") == "failed" and states.pop("mas_seed1") == "failed"
    assert set(states.values()) == {"finished"} and len(states) == 6
    assert "exit code 2" in result.outcomes["ewc_seed1"].error and "--reference-run: bad" in result.outcomes["ewc_seed1"].error
    assert not result.ok


def test_a_failed_configuration_never_stops_a_sequential_grid_search(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from sweep import search
    from sweep.engine import EngineOptions
    from sweep.spec import Spec

    monkeypatch.setattr(search, "run_sweep", lambda *a, **k: SimpleNamespace(ok=True))

    def evaluate(config, *args):
        if config["mu"] == 2.0:
            raise RuntimeError("trial agscl_mu2_seed1 failed: exit code 1")
        return {"objective": config["mu"], "plasticity": 1.0, "stability": 1.0}

    monkeypatch.setattr(search, "evaluate_config", evaluate)
    spec = Spec("rl", ["finetune", "agscl"], [1], method_grid={"agscl": {"mu": [1.0, 2.0, 4.0]}})
    rows, text = search.run_search(spec, tmp_path / "s", search.SearchOptions(objective="accumulated_normalized_return"),
                                   EngineOptions("sequential", progress=False))
    assert [r["config"]["mu"] for r in rows] == [4.0, 1.0, 2.0]  # every configuration evaluated, the failed one last
    assert rows[-1]["objective"] is None and "exit code 1" in rows[-1]["error"]
    assert "mu=2" in text.splitlines()[-1] and "n/a" in text.splitlines()[-1]


def test_variants_are_named_flag_sets_run_and_labelled_like_methods(tmp_path):
    """A TOML variant and a command-line one expand to trials of their method with their flags,
    named and labelled by the variant, measured against the plain fine-tuning trial."""
    from sweep.spec import build_spec, load_toml

    config = tmp_path / "v.toml"
    config.write_text('trainer = "rl"\nmethods = ["finetune", "agscl", "agscl_no_reinit"]\nseeds = [4]\n'
                      'flags = ["--suite", "minatar"]\n[variants.agscl_no_reinit]\nmethod = "agscl"\n'
                      'flags = {zero_init = false, rand_init = false}\n[grid.agscl_no_reinit]\nmu = [2.0]\n')
    spec = build_spec(load_toml(config), None, ["finetune", "agscl", "agscl_no_reinit", "strong_ewc"], None, [], [],
                      ["strong_ewc=ewc --ewc-lambda '1e5'"])
    trials = {t.name: t for t in spec.trials(tmp_path / "s")}
    assert set(trials) == {"finetune_seed4", "agscl_seed4", "agscl_no_reinit_mu2_seed4", "strong_ewc_seed4"}
    ablation, strong = trials["agscl_no_reinit_mu2_seed4"], trials["strong_ewc_seed4"]
    assert ablation.method == "agscl" and ablation.label == "agscl_no_reinit mu=2"
    assert ablation.flags == ("--suite", "minatar", "--no-zero-init", "--no-rand-init", "--method", "agscl",
                              "--seed", "4", "--mu", "2.0")
    assert strong.method == "ewc" and strong.label == "strong_ewc"
    assert strong.flags[-6:] == ("--ewc-lambda", "1e5", "--method", "ewc", "--seed", "4")
    assert trials["agscl_seed4"].variant is None and trials["agscl_seed4"].label == "agscl"
    assert {t.reference for n, t in trials.items() if n != "finetune_seed4"} == {"finetune_seed4"}


RANDOM = {"A": 2.0, "B": 4.0}


def _rl_results(path: Path, method: str, seed: int, scores: list[list[float | None]], reference: Path | None) -> Path:
    """A finished two-game run as the agent writes it (format 2, random-policy scores), with a
    fine-tuning reference of best and right-after-learning scores A 10, B 20."""
    games = ["A", "B"]
    ref = None if reference is None else {"run": str(reference), "max_return": {"A": 10.0, "B": 20.0},
                                          "diag_return": {"A": 10.0, "B": 20.0}, "random_return": RANDOM}
    timeline = []
    for i, row in enumerate(scores):
        entry = {"global_step": 100 * (i + 1), "game": i, "boundary": True,
                 "scores": {g: {"mean": row[j]} for j, g in enumerate(games) if row[j] is not None}}
        if ref is not None:
            entry["accumulated_normalized"] = sum((row[j] - RANDOM[g]) / (ref["max_return"][g] - RANDOM[g])
                                                  for j, g in enumerate(games) if row[j] is not None)
        timeline.append(entry)
    data = {"format": 2, "games": games, "score_matrix": scores, "timeline": timeline, "steps_per_game": 100,
            "config": {"method": method, "seed": seed, "run_name": path.name}, "reference": ref,
            "random": {g: {"mean": r} for g, r in RANDOM.items()}, "progress": {"status": "finished"}}
    path.mkdir()
    (path / "results.json").write_text(json.dumps(data))
    return path


def test_rl_table_metrics_and_bootstrap_intervals(tmp_path):
    ft = _rl_results(tmp_path / "ft", "finetune", 0, [[10.0, None], [4.0, 20.0]], None)
    runs = [_rl_results(tmp_path / f"ags{s}", "agscl", s, [[8.0, None], [8.0 - s, 10.0]], ft) for s in range(4)]
    m = rl_run_metrics(json.loads((runs[1] / "results.json").read_text()))
    # every number on scores shifted by the random policy (A 2, B 4)
    assert m["accumulated_normalized_return"] == pytest.approx((7 - 2) / (10 - 2) + (10 - 4) / (20 - 4))
    assert m["average_return"] == pytest.approx((7 + 10) / 2)
    assert m["plasticity"] == pytest.approx(((8 - 2) / (10 - 2) + (10 - 4) / (20 - 4)) / 2)  # against fine-tuning's diagonal
    assert m["stability"] == pytest.approx(((7 - 2) / (8 - 2) + 1) / 2)
    assert m["forgetting"] == pytest.approx((8 - 7) / (10 - 2))
    assert rl_run_metrics(json.loads((ft / "results.json").read_text()))["stability"] == pytest.approx(((4 - 2) / (10 - 2) + 1) / 2)

    rows = {r["label"]: r for r in aggregate_rl({"agscl": runs, "finetune": [ft]})}
    mean, low, high = rows["agscl"]["accumulated_normalized_return"]
    values = np.array([(6 - s) / 8 + 6 / 16 for s in range(4)])
    assert mean == pytest.approx(values.mean())
    assert values.min() <= low < mean < high <= values.max()  # a real interval inside the data's range
    assert rows["agscl"]["plasticity"] == pytest.approx((0.5625, 0.5625, 0.5625))  # same for every seed: zero width
    assert rows["agscl"]["seeds"] == [0, 1, 2, 3]
    assert np.isnan(rows["finetune"]["stability"][1])  # one seed: no interval
    table = format_rl_table(list(rows.values()))
    assert f"{mean:.3f} [{low:.3f}, {high:.3f}]" in table and "| finetune | 1 | 2 |" in table
    # the sweep's report: the grid's fine-tuning run is the reference, as in the MinAtar benchmark
    text = report_rl({"agscl": runs, "finetune": [ft]}, tmp_path / "report")
    assert "| agscl | 4 |" in text and (tmp_path / "report" / "continual_plot.png").exists()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["methods"]["agscl"]["metrics"]["S"][0] == pytest.approx(np.mean([((6 - s) / 6 + 1) / 2 for s in range(4)]))

def test_a_refused_cluster_address_names_the_token_setting(monkeypatch):
    """Ray >= 2.59 starts `ray start --head` with token authentication; a client of a remote
    address sends no token without RAY_AUTH_MODE=token, and the error says what to set."""
    from sweep.engine import EngineOptions, init_ray

    calls = []

    def refuse(**kwargs):
        calls.append(kwargs["address"])
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.7:6379\nmore")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(RuntimeError) as caught:
        init_ray(EngineOptions(address="10.0.0.7:6379"))
    assert calls == ["10.0.0.7:6379"]  # a cluster is not retried like a local start
    message = str(caught.value)
    assert "could not start Ray (10.0.0.7:6379): Failed to connect" in message and "RAY_AUTH_MODE=token" in message
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(RuntimeError) as caught:
        init_ray(EngineOptions(address="10.0.0.7:6379"))
    assert "RAY_AUTH_MODE" not in str(caught.value)
