"""Every bad input of every entry point is one line on stderr and exit code 2, before any work
starts, never a traceback (issue 30); and the faults that are not bad input (a truncated results
file, a diverging run, a report into a folder that does not exist yet) end in a repaired state."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import pytest
import torch

pytest.importorskip("minatar", reason='needs pip install -e ".[minatar]"')

from agents import demo, ppo_continual  # noqa: E402
from agents.config import parse_args  # noqa: E402
from common.runio import write_json_atomic, write_text_atomic  # noqa: E402
from reporting import aggregate, drift, normalize, plot_continual  # noqa: E402
from reporting.results import load_results  # noqa: E402
from supervised import train as supervised_train  # noqa: E402
from sweep import cli as sweep_cli  # noqa: E402

from results_files import write_run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A one-game MinAtar run of two updates: about a second in process.
TINY = ["--suite", "minatar", "--games", "Breakout", "--steps-per-game", "64", "--num-envs", "2", "--num-steps", "32",
        "--num-minibatches", "1", "--update-epochs", "2", "--eval-episodes", "1", "--random-episodes", "1", "--eval-envs", "1",
        "--eval-max-frames", "50", "--importance-obs", "16", "--importance-batch", "16", "--eval-every", "0",
        "--checkpoint-every", "0", "--checkpoint-minutes", "0", "--torch-threads", "1", "--method", "finetune"]


def _gpu_check():
    """bench/gpu_check.py as a module (loaded once)."""
    name = "gpu_check_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", "gpu_check.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclass looks its module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run, trained once: its directory."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("finished")
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        assert ppo_continual.main([*TINY, "--runs-dir", str(root), "--run-name", "ft"]) == 0
    torch.set_num_threads(threads)
    return root / "ft"


def _file(path, data: bytes = b"") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _folder(path) -> str:
    path.mkdir(parents=True)
    return str(path)


def _finetune_run(tmp_path, name: str = "ft_run") -> str:
    return write_run(tmp_path, name, "finetune", [(100, 0, True, {"A": 5.0}), (200, 1, True, {"A": 4.0, "B": 3.0})])


def _normalize_blocked(t) -> list[str]:
    run = _finetune_run(t)
    _folder(t / "ft_run" / normalize.EVENT_FILE)  # where its event file goes: the write would fail
    return [run]


def _supervised_resume(t, data: bytes) -> list[str]:
    _file(t / "split_digits_finetune_seed0" / "checkpoint.pt", data)
    return ["--runs-dir", str(t), "--method", "finetune", "--resume"]


# (name, entry point, argv from tmp_path, text the one line must hold)
CASES = [
    # 1. an empty checkpoint: the agent's resume and reporting.drift
    ("agent resume, empty latest.pt", ppo_continual.main,
     lambda t: ["--resume", os.path.dirname(os.path.dirname(_file(t / "run" / "ckpt" / "latest.pt")))],
     "latest.pt is corrupt or not a checkpoint (EOFError)"),
    ("drift, empty game0.pt", drift.main, lambda t: [os.path.dirname(os.path.dirname(_file(t / "run" / "ckpt" / "game0.pt")))],
     "game0.pt is corrupt or not a checkpoint (EOFError)"),
    # 3. unwritable outputs
    ("agent --runs-dir a file", ppo_continual.main, lambda t: [*TINY, "--runs-dir", _file(t / "f")], "f is a file, not a directory"),
    ("agent --runs-dir under a file", ppo_continual.main, lambda t: [*TINY, "--runs-dir", _file(t / "f") + "/sub"],
     "f is a file, not a directory"),
    ("normalize, event file place taken by a folder", normalize.main, _normalize_blocked,
     "cannot be written: it is a directory"),
    ("aggregate --out-dir a file", aggregate.main, lambda t: [_finetune_run(t), "--out-dir", _file(t / "f")],
     "--out-dir " + "{t}/f cannot be written: {t}/f is a file, not a directory"),
    ("aggregate --against an unknown label", aggregate.main,
     lambda t: [_finetune_run(t), "--against", "packnet", "--out-dir", str(t / "out")],
     "--against 'packnet' is not a label of these runs: choose from finetune"),
    ("plot_continual --out a folder", plot_continual.main,
     lambda t: [_finetune_run(t), "--out", _folder(t / "plot.png")],
     "plot.png cannot be written: it is a directory"),
    ("supervised --runs-dir a file", supervised_train.main, lambda t: ["--runs-dir", _file(t / "f")],
     "{t}/f is a file, not a directory"),
    # 5. drift without a run
    ("drift, no run", drift.main, lambda t: [], "no run given"),
    # 6, 7 and sweep --dir: checked before any trial starts
    ("sweep misspelt grid key", sweep_cli.main,
     lambda t: ["--trainer", "rl", "--methods", "finetune", "agscl", "--grid", "agscl.muu=1,2", "--dir", str(t / "s")],
     "--grid agscl.muu: the rl trainer has no flag --muu (did you mean --mu?)"),
    ("sweep bad grid value", sweep_cli.main,
     lambda t: ["--trainer", "rl", "--methods", "finetune", "agscl", "--grid", "agscl.mu=abc", "--dir", str(t / "s")],
     "Error parsing --mu: could not convert string to float: 'abc'"),
    ("sweep grid value out of range", sweep_cli.main,
     lambda t: ["--trainer", "rl", "--methods", "agscl", "--grid", "agscl.mu=-1", "--dir", str(t / "s")],
     "--mu=-1.0 is out of range"),
    ("sweep grid of a method not run", sweep_cli.main,
     lambda t: ["--trainer", "rl", "--methods", "finetune", "agscl", "--grid", "ewc.ewc_lambda=1,2", "--dir", str(t / "s")],
     "ewc is not in --methods (finetune agscl)"),
    ("sweep grid flag no method takes", sweep_cli.main,
     lambda t: ["--trainer", "rl", "--methods", "finetune", "agscl", "--grid", "ewc_lambda=1,2", "--dir", str(t / "s")],
     "none of the methods (finetune, agscl) takes --ewc-lambda"),
    ("sweep --dir a file", sweep_cli.main, lambda t: ["--trainer", "rl", "--methods", "finetune", "--dir", _file(t / "f")],
     "--dir {t}/f cannot be written: {t}/f is a file, not a directory"),
    # 8. a damaged supervised checkpoint
    ("supervised resume, empty checkpoint", supervised_train.main, lambda t: _supervised_resume(t, b""),
     "checkpoint.pt is corrupt or not a checkpoint (EOFError"),
    ("supervised resume, random bytes", supervised_train.main, lambda t: _supervised_resume(t, os.urandom(1000)),
     "checkpoint.pt is corrupt or not a checkpoint"),
    # 9. the GPU check's report
    ("gpu_check --out a folder", lambda argv: _gpu_check().main(argv),
     lambda t: ["--smoke", "--out", str(t)], "--out {t} cannot be written: it is a directory"),
    # 11. the demo: its games before anything is created
    ("demo misspelt game", demo.main, lambda t: ["--games", "Brekout", "Freeway", "--out-dir", str(t / "demo")],
     "unknown MinAtar game 'Brekout'"),
    # smaller: tyro's boxes, an existing folder without a run
    ("agent unknown method", ppo_continual.main, lambda t: ["--method", "agsl", "--runs-dir", str(t)],
     "--method 'agsl' is not valid: choose one of finetune, ewc, online_ewc, mas, agscl, packnet"),
    ("agent flag value tyro rejects", ppo_continual.main, lambda t: ["--num-envs", "abc", "--runs-dir", str(t)],
     "Error parsing --num-envs: invalid literal for int() with base 10: 'abc'"),
    ("agent --run-name of a folder without a run", ppo_continual.main,
     lambda t: [*TINY, "--runs-dir", os.path.dirname(os.path.dirname(_file(t / "mine" / "notes.txt"))), "--run-name", "mine"],
     "{t}/mine exists and holds no run but other files (notes.txt)"),
    ("supervised unknown option", supervised_train.main, lambda t: ["--epochs", "x"], "Error parsing --epochs"),
]


@pytest.mark.parametrize("name, entry, make_argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(name, entry, make_argv, message, tmp_path, capsys, monkeypatch, keep_torch_threads):
    def no_trials(*args, **kwargs):
        raise AssertionError("the sweep started its trials")

    monkeypatch.setattr(sweep_cli, "run_sweep", no_trials)  # a regression fails here, not hours later
    argv = make_argv(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert entry(argv) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert message.format(t=tmp_path) in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_the_agents_process_gives_one_line_without_traceback(tmp_path):
    """As a user runs it: the empty checkpoint (before: a traceback ending in IndexError)."""
    run = tmp_path / "run"
    _file(run / "ckpt" / "latest.pt")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--resume", str(run)],
                          cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"ppo_continual: error: {run}/ckpt/latest.pt is corrupt or not a checkpoint (EOFError)"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the file-in-the-way cases cover it")
def test_read_only_outputs_are_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert ppo_continual.main([*TINY, "--runs-dir", str(ro)]) == 2
        assert "is not writable (permission denied)" in capsys.readouterr().err
        run = _finetune_run(tmp_path, "ft_ro")
        os.chmod(run, 0o555)
        assert normalize.main([run]) == 2
        assert "is not writable (permission denied)" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)
        os.chmod(tmp_path / "ft_ro", 0o755)


def test_output_dir_problem_names_the_blocker_and_creates_nothing(tmp_path, monkeypatch):
    from common.runio import check_output_dir, output_dir_problem

    _file(tmp_path / "f")
    assert output_dir_problem(tmp_path / "new" / "deeper") is None and not (tmp_path / "new").exists()
    assert output_dir_problem(tmp_path / "f" / "x" / "y") == f"{tmp_path}/f is a file, not a directory"
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only folder looks like to a non-root user
    with pytest.raises(ValueError, match=r"--out-dir .* cannot be written: .* is (not writable|on a read-only)"):
        check_output_dir(tmp_path / "new", "--out-dir")


def test_atomic_writers_create_missing_folders(tmp_path):
    """(9) A fresh clone has no runs/bench/: the atomic writers create the folders they write into."""
    write_json_atomic(tmp_path / "a" / "b" / "r.json", {"x": 1})
    write_text_atomic(str(tmp_path / "c" / "d" / "t.md"), "t")
    assert json.loads((tmp_path / "a" / "b" / "r.json").read_text()) == {"x": 1}
    assert (tmp_path / "c" / "d" / "t.md").read_text() == "t"


def test_gpu_check_report_into_a_new_folder_and_no_scratch_left(tmp_path, monkeypatch, capsys, keep_torch_threads):
    """(9) The report lands in folders that do not exist yet, and the check's scratch folder in the
    system's temp directory is removed at the end."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "runs" / "bench" / "gpu_check.json"
    assert _gpu_check().main(["--smoke", "--sections", "machine", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["machine"]["cpu_model"]
    assert list(scratch.iterdir()) == []


def test_truncated_results_of_a_finished_run_are_rebuilt_from_its_checkpoint(finished, capsys):
    """(2) Before: "already finished" and the broken file left as it was."""
    path = finished / "results.json"
    good = json.loads(path.read_text())
    path.write_text(path.read_text()[:300])
    assert ppo_continual.main(["--resume", str(finished)]) == 0
    assert "results.json rebuilt from its checkpoint" in capsys.readouterr().out
    assert load_results(str(finished)) == good
    stamp = path.stat().st_mtime_ns
    assert ppo_continual.main(["--resume", str(finished)]) == 0  # a sound file is left as it is
    assert path.stat().st_mtime_ns == stamp and "rebuilt" not in capsys.readouterr().out


def test_a_run_diverging_before_its_first_checkpoint_advises_a_smaller_learning_rate(tmp_path, capsys, keep_torch_threads):
    """(4) Before: "continue from it with --resume", which diverges the same way."""
    rc = ppo_continual.main([*TINY, "--learning-rate", "1e8", "--no-anneal-lr", "--runs-dir", str(tmp_path), "--run-name", "nan"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "no checkpoint was written before it: start again with a smaller --learning-rate (this run's: 1e+08)" in err
    assert "--resume" not in err


def test_a_method_flag_the_method_does_not_take_is_warned_about(capsys):
    args = parse_args(ppo_continual.Args, ["--method", "finetune", "--mu", "5", "--no-rand-init"])
    err = capsys.readouterr().err.strip().splitlines()
    assert args.method == "finetune" and err == [
        "ppo_continual: warning: --mu is ignored: --method finetune does not take it (it is a flag of agscl)",
        "ppo_continual: warning: --no-rand-init is ignored: --method finetune does not take it (it is a flag of agscl)"]
    parse_args(ppo_continual.Args, ["--method", "agscl", "--mu", "5"])
    assert capsys.readouterr().err == ""


def test_demo_prints_its_childs_own_error_line(tmp_path, monkeypatch, capsys):
    """(11) A training that fails after launch is reported with its own last line, not only its exit code."""
    popen = subprocess.Popen
    child = "import sys; print('run ...'); print('ppo_continual: error: the child says why', file=sys.stderr); sys.exit(2)"
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, **kw: popen([sys.executable, "-c", child], **kw))
    monkeypatch.setattr(demo, "METHODS", ("finetune",))
    rc = demo.main(["--out-dir", str(tmp_path / "demo"), "--no-capture-video"])
    err = capsys.readouterr().err
    assert rc == 1 and "finetune (exit 2: ppo_continual: error: the child says why; log " in err, err
