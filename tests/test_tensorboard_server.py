"""Checked as a user would: a tiny `make demo` (two short MinAtar runs side by side, then
reporting.normalize and Figure 7), then the real TensorBoard server on it, asked through its HTTP
data API what the "continual" page and the Images tab would show.

Runs this short never beat the random policy beyond the evaluations' noise (the noise rule of
``reporting.results.gain_over_random``), so nothing of them can be normalized: what they show is that
such a game gets no normalized return at all (null never becomes a number), raw returns, the
videos and Figure 7. Beside them, in the same log directory, ``written/finetune`` and
``written/agscl`` are finished runs whose results files the test writes in the agent's format,
with per-episode returns clearly beyond noise on two games and within it on a third, normalized
by the user's command (``python -m reporting.normalize RUN... --reference FT_RUN``): their numbers
are checked against a hand computation made here from the episode returns."""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from results_files import write_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMES = ("Breakout", "SpaceInvaders")
TINY = ["--games", *GAMES, "--steps-per-game", "2048", "--num-envs", "4", "--num-steps", "128", "--eval-episodes", "4",
        "--eval-every", "1024", "--eval-max-frames", "200", "--importance-obs", "256", "--seed", "1"]

pytestmark = pytest.mark.slow

REAL = ("finetune", "agscl")
WRITTEN = ("written/finetune", "written/agscl")
WRITTEN_GAMES = ("Breakout", "SpaceInvaders", "Freeway")


def around(m: int) -> list[int]:
    """Eight evaluation games averaging ``m`` (standard error 0.27): far from random when m >= 3."""
    return [m - 1, m, m + 1, m, m - 1, m + 1, m, m]


#: Freeway: one point in eight games against a random policy that never scores: a gain of 0.125
#: with a standard error of 0.125, within 2 standard errors, so never normalizable.
ONE_POINT = [0, 1, 0, 0, 0, 0, 0, 0]
RANDOM = {"Breakout": [0, 1, 0, 1, 0, 0, 1, 1], "SpaceInvaders": [2, 3, 4, 3, 2, 4, 3, 3], "Freeway": [0] * 8}


def written_evals(b: list[int], s: list[int]) -> list:
    """Six evaluations (two per game, the second at its end) with Breakout scores ``b`` and
    SpaceInvaders scores ``s`` (once learned); Freeway always ONE_POINT."""
    B, S, F = WRITTEN_GAMES
    return [(1000, 0, False, {B: around(b[0])}), (2000, 0, True, {B: around(b[1])}),
            (3000, 1, False, {B: around(b[2]), S: around(s[0])}), (4000, 1, True, {B: around(b[3]), S: around(s[1])}),
            (5000, 2, False, {B: around(b[4]), S: around(s[2]), F: ONE_POINT}),
            (6000, 2, True, {B: around(b[5]), S: around(s[3]), F: ONE_POINT})]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "demo"
    proc = subprocess.run([sys.executable, "-m", "agents.demo", *TINY, "--out-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # the written pair, normalized by the user's command
    ft = write_run(out, WRITTEN[0], "finetune", written_evals([4, 9, 6, 5, 4, 3], [5, 11, 8, 7]),
                   games=WRITTEN_GAMES, random=RANDOM)
    ags = write_run(out, WRITTEN[1], "agscl", written_evals([3, 7, 7, 6, 6, 6], [4, 9, 9, 8]),
                    games=WRITTEN_GAMES, random=RANDOM)
    proc = subprocess.run([sys.executable, "-m", "reporting.normalize", ft, ags, "--reference", ft], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, path: str, **query: str) -> bytes:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def tensorboard(demo_dir):
    """The `tensorboard` package's server on 127.0.0.1 and a free port; always stopped."""
    port = _free_port()
    log = open(demo_dir.parent / "tensorboard.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(demo_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--reload_interval", "1"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:  # until the server answers and has read every run's scalars and the figure
            try:
                tags = json.loads(_get(base, "/data/plugin/scalars/tags"))
                images = json.loads(_get(base, "/data/plugin/images/tags"))
                if all("eval/accumulated_normalized_return" in tags.get(r, {}) for r in REAL + WRITTEN) and "." in images:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (demo_dir.parent / "tensorboard.log").read_text()[-2000:]
            assert time.time() < deadline, "TensorBoard did not serve the runs within 90 s"
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# A hand computation from the episode returns, independent of reporting.results: an evaluation's
# mean and standard error, the noise rule (a gain over random beyond 2 standard errors of the
# difference), a fine-tuning run's best evaluation (highest mean, first on ties) and the ratios.

def _mean(stats: dict) -> float:
    return statistics.fmean(stats["returns"])


def _se(stats: dict) -> float:
    return statistics.stdev(stats["returns"]) / math.sqrt(len(stats["returns"]))


def _gain(top: dict, random: dict) -> float | None:
    """``top``'s gain over the random policy, None when within 2 standard errors of noise."""
    gain = _mean(top) - _mean(random)
    return gain if gain > 0 and gain > 2 * math.hypot(_se(top), _se(random)) else None


def _load(demo_dir, run: str) -> dict:
    return json.loads((demo_dir / run / "results.json").read_text())


def _best(results: dict) -> dict:
    """Per game, the reference's best evaluation over its whole timeline."""
    best: dict = {}
    for entry in results["timeline"]:
        for game, stats in entry["scores"].items():
            if game not in best or _mean(stats) > _mean(best[game]):
                best[game] = stats
    return best


def _expected_normalized(results: dict, reference: dict) -> list[dict[str, float]]:
    """Per evaluation of ``results``' timeline, the normalized return of every game where it is
    defined: (mean - R) / (best - R), R the run's random score, best the reference's."""
    best, out = _best(reference), []
    for entry in results["timeline"]:
        row = {}
        for game, stats in entry["scores"].items():
            gain = _gain(best[game], results["random"][game])
            if gain is not None:
                row[game] = (_mean(stats) - _mean(results["random"][game])) / gain
        out.append(row)
    return out


def _expected_p(results: dict, reference: dict) -> dict[str, float]:
    """P_j = (A[j,j] - R_j) / (A_FT[j,j] - R_j) where the fine-tuning run's gain is beyond noise."""
    diag = lambda res: {e["game_name"]: e["scores"][e["game_name"]] for e in res["timeline"] if e["boundary"]}  # noqa: E731
    mine, ft, out = diag(results), diag(reference), {}
    for game, stats in mine.items():
        gain = _gain(ft[game], results["random"][game])
        if gain is not None:
            out[game] = (_mean(stats) - _mean(results["random"][game])) / gain
    return out


def _scalars(base: str, run: str, tag: str) -> list[tuple[int, float]]:
    return [(p[1], p[2]) for p in json.loads(_get(base, "/data/plugin/scalars/scalars", run=run, tag=tag))]


def test_both_runs_serve_normalized_returns_and_the_figure(tensorboard, demo_dir):
    """The written pair, normalized by reporting.normalize, serves every game's normalized return
    beyond noise (one point per evaluation), the accumulated normalized return, P, mean P and
    the HParams metrics, all equal to the hand computation; Figure 7 is the PNG, byte for byte."""
    tags = json.loads(_get(tensorboard, "/data/plugin/scalars/tags"))
    reference = _load(demo_dir, WRITTEN[0])
    for run in WRITTEN:
        results = _load(demo_dir, run)
        expected = _expected_normalized(results, reference)
        # the data as designed: Breakout and SpaceInvaders beyond noise, Freeway within it
        assert set().union(*expected) == {"Breakout", "SpaceInvaders"}
        for game in ("Breakout", "SpaceInvaders"):
            got = _scalars(tensorboard, run, f"eval/{game}/normalized_return")
            want = [(e["global_step"], row[game]) for e, row in zip(results["timeline"], expected) if game in row]
            assert [step for step, _ in got] == [step for step, _ in want]  # one point per evaluation, none doubled
            assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5)
        assert "eval/Freeway/normalized_return" not in tags[run]  # within noise: null, never a number
        acc = _scalars(tensorboard, run, "eval/accumulated_normalized_return")
        assert [step for step, _ in acc] == [e["global_step"] for e in results["timeline"]]
        assert [v for _, v in acc] == pytest.approx([sum(row.values()) for row in expected], rel=1e-5)
        assert _scalars(tensorboard, run, "hparam/accumulated_normalized_return") == [
            (results["progress"]["global_step"], pytest.approx(sum(expected[-1].values()), rel=1e-5))]
        p = _expected_p(results, reference)
        assert set(p) == {"Breakout", "SpaceInvaders"}
        boundaries = [e for e in results["timeline"] if e["boundary"]]
        for game, value in p.items():  # at every end of game from the game's own on
            first = [e["game_name"] for e in boundaries].index(game)
            assert _scalars(tensorboard, run, f"metrics/{game}/P") == [
                (e["global_step"], pytest.approx(value, rel=1e-5)) for e in boundaries[first:]]
        assert "metrics/Freeway/P" not in tags[run]
        learned = [[e["game_name"] for e in boundaries[: i + 1]] for i in range(len(boundaries))]
        assert _scalars(tensorboard, run, "metrics/P_mean") == [  # the mean over the games learned so far
            (e["global_step"], pytest.approx(statistics.fmean(p[g] for g in games if g in p), rel=1e-5))
            for e, games in zip(boundaries, learned)]
        assert _scalars(tensorboard, run, "hparam/P_mean") == [(6000, pytest.approx(statistics.fmean(p.values()), rel=1e-5))]
    # the fine-tuning run is normalized by its own best: 1 at its best evaluation of each game
    ft_breakout = dict(_scalars(tensorboard, WRITTEN[0], "eval/Breakout/normalized_return"))
    assert ft_breakout[2000] == pytest.approx(1.0)
    # Figure 7 in the Images tab of the demo's directory: the PNG plot_continual wrote, byte for byte
    images = json.loads(_get(tensorboard, "/data/plugin/images/tags"))
    assert "figure7/continual_plot" in images["."]
    (entry,) = json.loads(_get(tensorboard, "/data/plugin/images/images", run=".", tag="figure7/continual_plot"))
    png = _get(tensorboard, "/data/plugin/images/individualImage?" + entry["query"])
    assert png == (demo_dir / "continual_plot.png").read_bytes()


def test_the_tiny_real_runs_serve_no_number_for_a_game_within_noise(tensorboard, demo_dir):
    """The demo's own two runs: a game whose fine-tuning best is within noise of random has no
    normalized return and no P at all; a game beyond it (none, at this size, on most machines)
    has the hand-computed one at every evaluation."""
    tags = json.loads(_get(tensorboard, "/data/plugin/scalars/tags"))
    reference = _load(demo_dir, "finetune")
    for run in REAL:
        results = _load(demo_dir, run)
        expected = _expected_normalized(results, reference)
        p = _expected_p(results, reference)
        for game in GAMES:
            want = [(e["global_step"], row[game]) for e, row in zip(results["timeline"], expected) if game in row]
            if not want:
                assert f"eval/{game}/normalized_return" not in tags[run], (run, game)
                assert f"metrics/{game}/P" not in tags[run], (run, game)
                continue
            got = _scalars(tensorboard, run, f"eval/{game}/normalized_return")
            assert [step for step, _ in got] == [step for step, _ in want]
            assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5)
            assert (f"metrics/{game}/P" in tags[run]) == (game in p)
        acc = _scalars(tensorboard, run, "eval/accumulated_normalized_return")
        assert [step for step, _ in acc] == [e["global_step"] for e in results["timeline"]]
        assert [v for _, v in acc] == pytest.approx([sum(row.values()) for row in expected], rel=1e-5)
        assert "hparam/accumulated_normalized_return" in tags[run]
        assert ("hparam/P_mean" in tags[run]) == bool(p)


def test_gameplay_videos_at_each_boundary(tensorboard, demo_dir):
    """--capture-video: after game 1 one video (game 1), after game 2 two (games 1 and 2), as
    files and in TensorBoard, one step per boundary."""
    from PIL import Image

    from reporting.results import load_results

    results = load_results(str(demo_dir / "agscl"))
    names = sorted(os.listdir(demo_dir / "agscl" / "videos"))
    assert names == sorted([f"after1-{GAMES[0]}_{GAMES[0]}.gif", f"after2-{GAMES[1]}_{GAMES[0]}.gif",
                            f"after2-{GAMES[1]}_{GAMES[1]}.gif"])
    for record in results["videos"]:
        with Image.open(demo_dir / "agscl" / record["path"]) as gif:
            # Pillow merges identical consecutive frames into one longer frame
            assert gif.format == "GIF" and 2 <= gif.n_frames <= record["frames"]
    boundaries = [e["global_step"] for e in results["timeline"] if e["boundary"]]
    images = json.loads(_get(tensorboard, "/data/plugin/images/tags"))["agscl"]
    for j, game in enumerate(GAMES):
        assert f"videos/{game}" in images
        entries = json.loads(_get(tensorboard, "/data/plugin/images/images", run="agscl", tag=f"videos/{game}"))
        assert [e["step"] for e in entries] == boundaries[j:]
        data = _get(tensorboard, "/data/plugin/images/individualImage?" + entries[-1]["query"])
        assert data == (demo_dir / "agscl" / "videos" / f"after2-{GAMES[1]}_{game}.gif").read_bytes()


def _s_defined(results: dict) -> set[str]:
    """The games whose S, (A[T,j] - R_j) / max_{j<=i<=T} (A[i,j] - R_j), the agent could log
    at some end of game: those whose best end-of-game score so far beats random beyond noise."""
    games, out, best = results["games"], set(), {}
    for entry in (e for e in results["timeline"] if e["boundary"]):
        for game, stats in entry["scores"].items():
            if game not in best or _mean(stats) > _mean(best[game]):
                best[game] = stats
            if _gain(best[game], results["random"][game]) is not None:
                out.add(game)
    assert out <= set(games)
    return out


def test_the_custom_scalars_layout_matches_the_tags(tensorboard, demo_dir):
    """Every chart of the "continual" page is filled by the runs that should fill it: the charts
    reporting.normalize fills by the written pair, the raw returns by the real runs (the agent logs
    them live), and S per game by every run whose S is defined. S needs no reference, so the agent
    logs it live and reporting.normalize does not write it again (its points would be doubled): the
    tiny real runs never beat random beyond noise, so their S, and with it the chart, is empty,
    and must be."""
    import re

    layout = json.loads(_get(tensorboard, "/data/plugin/custom_scalars/layout"))
    tags = json.loads(_get(tensorboard, "/data/plugin/scalars/tags"))
    (category,) = [c for c in layout["category"] if c["title"] == "continual"]
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
    s_runs = [run for run in REAL if _s_defined(_load(demo_dir, run))]
    must_fill = {"normalized return, every game": WRITTEN, "accumulated normalized return": REAL + WRITTEN,
                 "P per game": WRITTEN, "mean P and S": WRITTEN, "return, every game": REAL, "S per game": s_runs}
    assert set(charts) == set(must_fill)
    for title, patterns in charts.items():
        filled = {run for run in REAL + WRITTEN if any(re.search(p, t) for p in patterns for t in tags[run])}
        assert set(must_fill[title]) <= filled, (title, filled)
    s_patterns = charts["S per game"]
    for run in REAL:
        games = {t.split("/")[1] for t in tags[run] if any(re.search(p, t) for p in s_patterns)}
        assert games == _s_defined(_load(demo_dir, run)), run  # S logged exactly where defined
