"""``bench/gpu_check.py --smoke``: every step of the GPU check, tiny, on the CPU (issue 18, point 2).

The check itself only means something on a GPU; this test keeps its pipeline working until one
is lent: each section runs and reports, the kill/resume round trip finishes, and the report holds
the machine description the throughput numbers need."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.atari, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_smoke_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {} and report["device"] == "cpu"
    assert set(report["seconds"]) == {"machine", "cuda_tests", "throughput", "parts", "learning", "kill_resume"}
    m = report["machine"]
    assert m["cpu_model"] and m["cpu_flags"] and m["usable_cpus"] >= 1 and m["torch_threads"] >= 1
    assert report["cuda_tests"]["ok"] and "tests/test_cuda.py" in report["cuda_tests"]["files"]
    rows = report["throughput"]["rows"]
    assert {(r["method"], r["num_envs"]) for r in rows} == {("finetune", 4), ("agscl", 4)}
    assert all(r["steps_per_s"] > 0 for r in rows)
    assert {"inference_4_plain", "update_8_fast", "agscl_prox_step"} <= set(report["parts"]["networks"]["nature_cnn"])
    learn = report["learning"]
    assert learn["steps"] > 0 and learn["random_mean"] is not None and learn["published"]["mean"] == 211.24
    kr = report["kill_resume"]
    assert kr["ok"] and kr["exit_code_of_killed"] == -9
    assert kr["starts"] == [["start", 0], ["resume", kr["killed_at_global_step"]]]
    assert kr["progress_at_kill"]["games_done"] == 1 and kr["progress_after"]["status"] == "finished"
    assert report["fig7"]["gpu_hours_total_training_only"] > 0
    assert "GPU check on" in proc.stdout and "kill_resume" in proc.stdout  # the printed table
