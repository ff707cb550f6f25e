"""reporting.drift: the trunk's relative change per game, from end-of-game checkpoints, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agents.rundir import CHECKPOINT_FORMAT
from reporting import drift


def _checkpoint(path, trunk0: torch.Tensor, trunk3: torch.Tensor, head: torch.Tensor, method: dict | None = None,
                name: str = "ewc") -> None:
    state = {"trunk.0.weight": trunk0, "trunk.0.bias": torch.ones(trunk0.shape[0]) * 5, "trunk.3.weight": trunk3,
             "heads.0.0.weight": head}
    # a whole checkpoint of agents/ppo_continual.py (the keys agents.rundir.load_checkpoint requires)
    torch.save({"format": CHECKPOINT_FORMAT, "agent": state, "games": ["A", "B", "C"], "config": {"method": name},
                "action_counts": [2, 2, 2], "game": 0, "update": 0, "global_step": 0, "method": method or {}, "results": {}}, path)


def test_drift_per_layer_and_game_against_hand_computation(tmp_path, capsys):
    run = tmp_path / "ewc_seed1"
    (run / "ckpt").mkdir(parents=True)
    w0 = torch.tensor([[3.0, 4.0]])  # norm 5
    v0 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # norm 1
    _checkpoint(run / "ckpt" / "game0.pt", w0, v0, torch.zeros(2, 2))
    # game B: the first layer moves by (0, 5) (norm 5, relative 1), the second not at all; heads and biases ignored
    _checkpoint(run / "ckpt" / "game1.pt", w0 + torch.tensor([[0.0, 5.0]]), v0, torch.full((2, 2), 9.0))
    # game C: from (3, 9) (norm sqrt 90), back to (3, 4): change 5; the second layer doubles: relative 1
    _checkpoint(run / "ckpt" / "game2.pt", w0, 2 * v0, torch.zeros(2, 2))
    got = drift.run_drift(str(run))
    assert got["layers"] == ["trunk.0.weight", "trunk.3.weight"] and got["method"] == "ewc"
    assert [r["game"] for r in got["rows"]] == ["B", "C"]
    assert got["rows"][0]["drift"] == {"trunk.0.weight": 1.0, "trunk.3.weight": 0.0}
    assert math.isclose(got["rows"][1]["drift"]["trunk.0.weight"], 5 / math.sqrt(90), rel_tol=1e-6)
    assert math.isclose(got["rows"][1]["drift"]["trunk.3.weight"], 1.0, rel_tol=1e-6)
    assert drift.main([str(run), "--out", str(tmp_path / "d.md")]) == 0
    out = capsys.readouterr().out
    assert "| ewc_seed1 | 1.000 / 0.000 | 0.527 / 1.000 |" in out
    assert (tmp_path / "d.md").read_text().strip() == out.strip()


def test_a_run_stops_at_its_last_checkpoint_and_bad_input_is_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    (run / "ckpt").mkdir(parents=True)
    _checkpoint(run / "ckpt" / "game0.pt", torch.ones(1, 2), torch.ones(1, 1), torch.zeros(1))
    _checkpoint(run / "ckpt" / "game1.pt", torch.ones(1, 2) * 2, torch.ones(1, 1), torch.zeros(1))
    assert len(drift.run_drift(str(run))["rows"]) == 1  # game2.pt missing: the run is read up to game B
    assert drift.main([str(tmp_path / "nope")]) == 2
    assert drift.main([str(tmp_path)]) == 2  # a directory without checkpoints
    (run / "ckpt" / "game1.pt").write_bytes(b"not a checkpoint")
    assert drift.main([str(run)]) == 2  # a corrupt checkpoint: named in one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert err[:2] == [f"drift: error: {tmp_path / 'nope'}: no such run directory",
                       f"drift: error: {tmp_path} has no end-of-game checkpoint ({tmp_path}/ckpt/game0.pt): give a run "
                       "directory written by agents/ppo_continual.py that finished at least one game"]
    assert len(err) == 3 and err[2].startswith(f"drift: error: {run / 'ckpt' / 'game1.pt'} is corrupt or not a checkpoint")


def test_drift_reads_the_agents_own_checkpoints(tmp_path):
    """reporting.drift reads checkpoints without the agent's loader: it accepts what the agent
    accepts and names a file without agent weights."""
    from agents.rundir import load_checkpoint

    _checkpoint(tmp_path / "game0.pt", torch.ones(1, 2), torch.ones(2, 2), torch.zeros(2, 2))
    ours, agents = drift.read_checkpoint(str(tmp_path / "game0.pt")), load_checkpoint(str(tmp_path / "game0.pt"))
    assert ours.keys() == agents.keys() and torch.equal(ours["agent"]["trunk.0.weight"], agents["agent"]["trunk.0.weight"])
    torch.save({"format": CHECKPOINT_FORMAT, "games": ["A"]}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare.pt is corrupt or not a checkpoint of agents/ppo_continual.py \(no agent weights\)"):
        drift.read_checkpoint(str(tmp_path / "bare.pt"))


def test_agscl_runs_get_their_important_nodes_per_layer_after_each_game(tmp_path, capsys):
    """Omega > 0 counted per layer, read from AGS-CL's own state and from a composition's
    stability part; other methods get no second table."""
    plain, composed, other = tmp_path / "agscl_seed1", tmp_path / "agscl_redo_seed1", tmp_path / "ewc_seed1"
    for run in (plain, composed, other):
        (run / "ckpt").mkdir(parents=True)
    omegas = [[torch.tensor([0.0, 0.3]), torch.tensor([0.0, 0.0, 1e-9])],  # after A: 1 of 2, 1 of 3
              [torch.tensor([0.2, 0.3]), torch.tensor([0.5, 0.0, 2.0])]]   # after B: 2 of 2, 2 of 3
    for g, omega in enumerate(omegas):
        w = torch.ones(2, 2) * (g + 1)
        _checkpoint(plain / "ckpt" / f"game{g}.pt", w, torch.ones(3, 2), torch.zeros(1), {"omega": omega}, "agscl")
        _checkpoint(composed / "ckpt" / f"game{g}.pt", w, torch.ones(3, 2), torch.zeros(1),
                    {"stability": {"omega": omega}, "plasticity": {"steps": 3}}, "agscl+redo")
        _checkpoint(other / "ckpt" / f"game{g}.pt", w, torch.ones(3, 2), torch.zeros(1), {"fisher": [torch.ones(2)]})
    assert drift.run_drift(str(plain))["important"] == [[(1, 2), (1, 3)], [(2, 2), (2, 3)]]
    assert drift.run_drift(str(composed))["important"] == drift.run_drift(str(plain))["important"]
    assert drift.run_drift(str(other))["important"] is None
    assert drift.main([str(other)]) == 0 and "important nodes" not in capsys.readouterr().out
    assert drift.main([str(plain), str(other), str(composed)]) == 0
    out = capsys.readouterr().out
    assert "| agscl_seed1 | 1 of 2 / 1 of 3 | 2 of 2 / 2 of 3 |" in out
    assert "| agscl_redo_seed1 | 1 of 2 / 1 of 3 | 2 of 2 / 2 of 3 |" in out
    held = out[out.index("important nodes"):]
    assert "| ewc_seed1 |" in out and "ewc_seed1" not in held  # EWC's row is in the drift table only


def test_a_layernorm_gain_is_not_a_layer_and_differing_layers_are_named(tmp_path, capsys):
    """--layer-norm adds 1-D trunk.<i>.weight gains: left out like biases; a grid whose runs name
    their layers differently says which names go with which runs."""
    plain, normed = tmp_path / "plain", tmp_path / "normed"
    for run in (plain, normed):
        (run / "ckpt").mkdir(parents=True)
    for g in range(2):
        _checkpoint(plain / "ckpt" / f"game{g}.pt", torch.ones(2, 2) * (g + 1), torch.ones(3, 2), torch.zeros(1))
        state = {"trunk.0.weight": torch.ones(2, 2) * (g + 1), "trunk.1.weight": torch.ones(2) * (5 * g + 1),
                 "trunk.4.weight": torch.ones(3, 2), "heads.0.0.weight": torch.zeros(1)}
        torch.save({"agent": state, "games": ["A", "B"], "config": {"method": "shrink_perturb"}, "method": {}},
                   normed / "ckpt" / f"game{g}.pt")
    got = drift.run_drift(str(normed))
    assert got["layers"] == ["trunk.0.weight", "trunk.4.weight"]
    assert got["rows"][0]["drift"] == {"trunk.0.weight": 1.0, "trunk.4.weight": 0.0}  # the gain's 5x change is not there
    assert drift.main([str(plain), str(normed)]) == 0
    out = capsys.readouterr().out
    assert "per layer: trunk.0.weight, trunk.3.weight; trunk.0.weight, trunk.4.weight in normed)" in out
    assert "| normed | 1.000 / 0.000 |" in out
