"""PackNet (agscl/packnet.py) and the registry-built method flags of both learners.

Each PackNet test checks a property that a wrong implementation breaks: owned weights moved by
Adam, a task's function changed by a later task, a wrong kept count or the wrong weights kept,
a resume that re-prunes or lets pruned weights grow back.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from agscl.packnet import PackNet
from agscl.registry import make_method, method_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_model(seed: int = 0, tasks: int = 2) -> tuple[nn.Sequential, nn.ModuleList]:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU())
    heads = nn.ModuleList(nn.Linear(16, 3) for _ in range(tasks))
    return trunk, heads


def batches(task: int, count: int = 12) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(100 + task)
    out = []
    for _ in range(count):
        x = torch.randn(16, 6, generator=gen)
        y = ((x[:, task] > 0).long() + (x[:, (task + 1) % 6] > 0.5).long())  # a different rule per task
        out.append((x, y))
    return out


def adam(trunk: nn.Module, heads: nn.ModuleList, task: int, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(list(trunk.parameters()) + list(heads[task].parameters()), lr=lr)


def learn_task(method: PackNet, trunk: nn.Module, heads: nn.ModuleList, task: int, lr: float = 0.05,
               steps: int = 30, opt: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
    """A learner's task: train, prune when the retraining phase begins (fresh Adam), retrain, end.
    ``opt``: keep training with this optimizer (its momentum included) instead of a fresh one."""
    method.begin_task(task)
    prune_at = steps - round(method.retrain_fraction * steps) + 1
    if opt is None:
        opt = adam(trunk, heads, task, lr)
    else:
        opt.add_param_group({"params": list(heads[task].parameters())})
    data = batches(task)
    for step in range(1, steps + 1):
        if step == prune_at:
            method.prune(task)
            opt = adam(trunk, heads, task, lr)
        x, y = data[step % len(data)]
        loss = nn.functional.cross_entropy(heads[task](trunk(x)), y) + method.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(lr)
    method.end_task(task, [x for x, _ in data])
    return opt


def weights(trunk: nn.Module) -> list[torch.Tensor]:
    return [p for p in trunk.parameters() if p.dim() >= 2]


def test_weights_owned_by_task0_are_bit_equal_after_task1_with_adam():
    trunk, heads = tiny_model()
    method = make_method("packnet", trunk, heads, num_tasks=2)
    opt = learn_task(method, trunk, heads, 0, steps=60)
    after0 = [p.detach().clone() for p in trunk.parameters()]
    owned0 = [o == 1 for o in method.owner]
    # task 1 starts with task 0's Adam: its momentum alone would move task 0's weights
    learn_task(method, trunk, heads, 1, lr=0.1, opt=opt)
    for w, before, own in zip(weights(trunk), [a for a in after0 if a.dim() >= 2], owned0):
        assert own.any()
        assert torch.equal(w.detach()[own], before[own])  # bit-equal, not close
        assert not torch.equal(w.detach()[~own], before[~own])  # task 1 did learn its own weights
    for b, before in zip([p for p in trunk.parameters() if p.dim() < 2], [a for a in after0 if a.dim() < 2]):
        assert torch.equal(b.detach(), before)  # biases: frozen after the first task


def test_task0_outputs_under_use_task_are_bit_equal_before_and_after_task1():
    trunk, heads = tiny_model()
    method = make_method("packnet", trunk, heads, num_tasks=2)
    learn_task(method, trunk, heads, 0)
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), method.use_task(0):
        out_before = heads[0](trunk(x))
    learn_task(method, trunk, heads, 1, lr=0.1)
    with torch.no_grad():
        with method.use_task(0):
            out_after = heads[0](trunk(x))
        unmasked = heads[0](trunk(x))
    assert torch.equal(out_before, out_after)
    assert not torch.allclose(unmasked, out_before)  # without the mask task 1's weights would leak in
    # use_task restores every weight bit-exactly
    snapshot = [p.detach().clone() for p in trunk.parameters()]
    with method.use_task(0):
        pass
    assert all(torch.equal(p, s) for p, s in zip(trunk.parameters(), snapshot))


@pytest.mark.parametrize("keep", [0.3, 0.0])
def test_pruning_keeps_exactly_the_requested_count_of_largest_free_weights(keep):
    trunk, heads = tiny_model(seed=3, tasks=3)
    method = PackNet(trunk, heads, num_tasks=3, keep=keep)
    for task in range(3):
        method.begin_task(task)
        with torch.no_grad():  # a task's training: new values on the free weights
            for w, owner in zip(weights(trunk), method.owner):
                w.copy_(torch.where(owner == 0, torch.randn_like(w), w))
        sum((w * w).sum() for w in weights(trunk)).backward()  # and a non-zero gradient on every weight
        free_before = [(o == 0).clone() for o in method.owner]
        values_before = [w.detach().clone() for w in weights(trunk)]
        method.prune(task)
        # Continual World's rules: 1 / (tasks left + 1), and the last task keeps all that is free
        fraction = 1.0 if task == 2 else keep if keep else 1.0 / (3 - task)
        for w, owner, free, before in zip(weights(trunk), method.owner, free_before, values_before):
            n_free = int(free.sum())
            expected = int(round(fraction * n_free))
            kept = free & (owner == task + 1)
            assert int(kept.sum()) == expected
            # independent check: the kept ones are the largest magnitudes among the free weights
            mags = np.sort(before[free].abs().numpy())[::-1]
            if 0 < expected < n_free:
                assert before[kept].abs().min().item() >= mags[expected - 1] - 0
                assert before[free & ~kept].abs().max().item() <= mags[expected]
            assert (w.detach()[free & ~kept] == 0).all()  # pruned: exactly 0
            assert torch.equal(w.detach()[~free], before[~free])  # earlier tasks' weights untouched
        method.end_task(task, [])
    if keep == 0.0:  # three equal shares, the last task takes what is left
        stats = method.statistics()
        assert stats["free_fraction"] == 0.0
        assert abs(stats["owned_fraction_task0"] - 1 / 3) < 0.02 and abs(stats["owned_fraction_task1"] - 1 / 3) < 0.02


def test_statistics_free_fraction_and_one_byte_per_weight():
    trunk, heads = tiny_model(tasks=3)
    method = make_method("packnet", trunk, heads, num_tasks=3)
    n = sum(w.numel() for w in weights(trunk))
    assert method.statistics()["free_fraction"] == 1.0 and method.stored_bytes() == n
    free = []
    for task in range(3):
        free_before = [(o == 0).clone() for o in method.owner]
        learn_task(method, trunk, heads, task, steps=10)
        stats = method.statistics()
        free.append(stats["free_fraction"])
        assert stats["stored_bytes"] == n and stats["stored_floats"] == 0
        owned = sum(stats[f"owned_fraction_task{k}"] for k in range(task + 1))
        assert abs(owned + stats["free_fraction"] - 1.0) < 1e-12
        # the task kept 1 / (tasks left + 1) of the free weights it trained (a dead ReLU unit's
        # weights get no gradient and stay free), all of them on the last task
        share = 1.0 / (3 - task)
        expected = sum(round(share * int((fb & t).sum())) for fb, t in zip(free_before, method.trained))
        assert sum(int((o == task + 1).sum()) for o in method.owner) == expected
        assert abs(stats[f"owned_fraction_task{task}"] - expected / n) < 1e-12
    # what stays free after the last task is exactly what it never trained
    assert free[2] * n == sum(int((o == 0).sum()) for o in method.owner)
    assert all(not t[o == 0].any() for t, o in zip(method.trained, method.owner))


def test_resume_in_the_middle_of_retraining_restores_the_owner_map_and_pruned_set():
    trunk, heads = tiny_model()
    method = make_method("packnet", trunk, heads, num_tasks=2)
    method.begin_task(0)
    opt = adam(trunk, heads, 0, 0.05)
    data = batches(0)

    def step(m: PackNet, t: nn.Module, h: nn.ModuleList, o: torch.optim.Optimizer, i: int) -> None:
        x, y = data[i % len(data)]
        loss = nn.functional.cross_entropy(h[0](t(x)), y)
        o.zero_grad()
        loss.backward()
        o.step()
        m.after_step(0.05)

    for i in range(8):
        step(method, trunk, heads, opt, i)
    method.prune(0)
    opt = adam(trunk, heads, 0, 0.05)
    for i in range(3):
        step(method, trunk, heads, opt, i)
    buffer = io.BytesIO()  # a checkpoint in the middle of the retraining phase
    torch.save({"trunk": trunk.state_dict(), "heads": heads.state_dict(), "method": method.state_dict(),
                "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=False)

    trunk2, heads2 = tiny_model(seed=9)  # a fresh process: other initial weights
    method2 = make_method("packnet", trunk2, heads2, num_tasks=2)
    trunk2.load_state_dict(ckpt["trunk"])
    heads2.load_state_dict(ckpt["heads"])
    method2.load_state_dict(ckpt["method"])
    method2.begin_task(0)
    opt2 = adam(trunk2, heads2, 0, 0.05)
    opt2.load_state_dict(ckpt["opt"])
    assert all(torch.equal(a, b) for a, b in zip(method.owner, method2.owner))
    method2.prune(0)  # the learner may call it again after a resume: nothing happens
    assert all(torch.equal(a, b) for a, b in zip(method.owner, method2.owner))
    for i in range(3, 12):
        step(method, trunk, heads, opt, i)
        step(method2, trunk2, heads2, opt2, i)
    pruned = [o == 0 for o in method2.owner]
    for w, mask in zip(weights(trunk2), pruned):
        assert mask.any() and (w.detach()[mask] == 0).all()  # the pruned set stayed exactly 0
    assert all(torch.equal(a, b) for a, b in zip(trunk.parameters(), trunk2.parameters()))
    method.end_task(0, [])
    method2.end_task(0, [])
    assert all(torch.equal(a, b) for a, b in zip(method.owner, method2.owner))


def test_bad_values_name_the_allowed_range():
    trunk, heads = tiny_model()
    with pytest.raises(ValueError, match=r"keep=1\.5 is out of range: allowed keep in \[0, 1\]"):
        make_method("packnet", trunk, heads, num_tasks=2, keep=1.5)
    with pytest.raises(ValueError, match=r"retrain_fraction=1\.0 .*\[0, 1\)"):
        make_method("packnet", trunk, heads, num_tasks=2, retrain_fraction=1.0)
    with pytest.raises(ValueError, match="num_tasks"):
        make_method("packnet", trunk, heads, num_tasks=0)
    bn_trunk = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU())
    with pytest.raises(ValueError, match="BatchNorm"):
        make_method("packnet", bn_trunk, heads, num_tasks=2)


# -- one place to add a method --------------------------------------------------------------------

DUMMY = textwrap.dedent('''
    import sys, runpy
    from agscl.base import ContinualMethod, Hparam
    from agscl import registry

    class Dummy(ContinualMethod):
        name = "dummy_method"
        hparams = (Hparam("strength", 0.5, "dummy's strength knob", low=0.0, high=1.0, rl_flag="dummy_strength"),)

        def __init__(self, trunk, heads, *, strength=0.5):
            self.hparams[0].check(strength)
            super().__init__(trunk, heads)

    registry.REGISTRY["dummy_method"] = (Dummy, {})
    which, argv = sys.argv[1], sys.argv[2:]
    sys.argv = [which] + argv
    if which == "agent":
        runpy.run_path("agents/ppo_continual.py", run_name="__main__")
    else:
        runpy.run_module("supervised.train", run_name="__main__", alter_sys=True)
''')


def _with_dummy(which: str, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
               COLUMNS="200")
    return subprocess.run([sys.executable, "-c", DUMMY, which, *argv], cwd=ROOT, capture_output=True, text=True, env=env)


def test_a_registered_method_appears_in_both_help_pages_with_its_flag():
    agent = _with_dummy("agent", "--help")
    supervised = _with_dummy("supervised", "--help")
    assert agent.returncode == 0 and supervised.returncode == 0, agent.stderr + supervised.stderr
    assert "dummy_method" in agent.stdout and "--dummy-strength" in agent.stdout and "dummy's strength knob" in agent.stdout
    assert "dummy_method" in supervised.stdout and "--strength" in supervised.stdout
    assert "packnet" in agent.stdout and "--retrain-fraction" in agent.stdout and "--keep" in supervised.stdout


def test_a_registered_methods_bad_value_is_one_line_naming_the_range(tmp_path):
    agent = _with_dummy("agent", "--method", "dummy_method", "--dummy-strength", "2", "--runs-dir", str(tmp_path),
                        "--suite", "minatar", "--games", "Breakout")
    supervised = _with_dummy("supervised", "--method", "dummy_method", "--strength", "2", "--runs-dir", str(tmp_path),
                             "--no-progress", "--no-tensorboard")
    for proc in (agent, supervised):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert "strength=2" in lines[0] and "[0, 1]" in lines[0]
    assert os.listdir(tmp_path) == []


def test_learners_choices_come_from_the_registry():
    from agents.ppo_continual import Args
    from supervised import presets
    import typing

    assert typing.get_args(typing.get_type_hints(Args)["method"]) == method_names("rl", composites=True)
    assert "packnet" in method_names("rl") and "hat" not in method_names("rl")
    assert presets.METHOD_NAMES == method_names("supervised") and "packnet" in presets.METHOD_NAMES
    args = Args()  # the flags users have keep their names and defaults
    assert (args.mu, args.agscl_lambda, args.ewc_lambda, args.mas_lambda, args.ewc_gamma) == (0.1, 2100.0, 1e4, 1.0, 1.0)
    assert (args.keep, args.retrain_fraction) == (0.0, 0.2)


# -- through the agent ----------------------------------------------------------------------------

AGENT_TINY = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--steps-per-game", "1280", "--num-envs", "4",
              "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2", "--eval-episodes", "3",
              "--random-episodes", "3", "--eval-envs", "3", "--eval-max-frames", "200", "--importance-obs", "64",
              "--importance-batch", "32", "--seed", "5", "--torch-threads", "1", "--checkpoint-every", "0",
              "--method", "packnet"]


def test_agent_prunes_resumes_mid_retraining_and_keeps_game0_bit_exact(tmp_path, monkeypatch, capsys):
    pytest.importorskip("minatar", reason='needs pip install -e ".[minatar]"')
    from agents import ppo_continual

    # 10 updates a game, retrain_fraction 0.2: pruned at update 9; the run is stopped after it
    original = ppo_continual.Run.stop_if_requested

    def stop_in_retraining(self):
        if self.game == 0 and self.update == 9:
            self.checkpoint(boundary=False)
            raise ppo_continual.Stopped()
        original(self)

    monkeypatch.setattr(ppo_continual.Run, "stop_if_requested", stop_in_retraining)
    assert ppo_continual.main([*AGENT_TINY, "--runs-dir", str(tmp_path), "--run-name", "p"]) == 128
    assert "pruned for Breakout, retraining updates 9..10" in capsys.readouterr().out
    run_dir = tmp_path / "p"
    mid = torch.load(run_dir / "ckpt" / "latest.pt", weights_only=False)
    assert (mid["game"], mid["update"], mid["method"]["pruned_task"]) == (0, 9, 0)
    names, owner_mid = mid["method"]["names"], mid["method"]["owner"]
    monkeypatch.setattr(ppo_continual.Run, "stop_if_requested", original)
    assert ppo_continual.main(["--resume", str(run_dir)]) == 0
    assert "pruned for" not in capsys.readouterr().out.split("resuming")[1].split("game 2/2")[0]  # no second pruning

    g0 = torch.load(run_dir / "ckpt" / "game0.pt", weights_only=False)
    g1 = torch.load(run_dir / "ckpt" / "game1.pt", weights_only=False)
    for name, own_mid, own_end in zip(names, owner_mid, g0["method"]["owner"]):
        assert torch.equal(own_mid, own_end)  # the owner map of the checkpoint, not a new pruning
        assert (g0["agent"][f"trunk.{name}"][own_mid == 0] == 0).all()  # the pruned set stayed exactly 0
        own0 = own_mid == 1
        assert torch.equal(g1["agent"][f"trunk.{name}"][own0], g0["agent"][f"trunk.{name}"][own0])
        assert not torch.equal(g1["agent"][f"trunk.{name}"][~own0], g0["agent"][f"trunk.{name}"][~own0])
    for key, value in g0["agent"].items():
        if key.startswith("heads.0.") or (key.startswith("trunk.") and key.endswith(".bias")):
            assert torch.equal(g1["agent"][key], value), key  # game 0's head and the biases: untouched
    from reporting.results import load_results

    res = load_results(str(run_dir))
    free = [entry["free_fraction"] for entry in res["regularizer"]]
    # two games: each keeps half, then all, of the free weights it trained. Breakout and Asterix
    # fill only the first 4 of the 10 input channels, so the first convolution's weights on the
    # other 6 never train: none is kept by either game, and they stay exactly where pruning put them
    first = names[0]
    assert mid["agent"][f"trunk.{first}"].shape[1] == 10
    trained_mid = mid["method"]["trained"][0]
    assert not trained_mid[:, 4:].any() and trained_mid[:, :4].float().mean() > 0.5
    for ckpt in (g0, g1):
        assert (ckpt["method"]["owner"][0][:, 4:] == 0).all()
    for own_mid, trained in zip(owner_mid, mid["method"]["trained"]):
        assert int((own_mid == 1).sum()) == round(0.5 * int(trained.sum()))
    # the last game keeps every free weight it trained: the rest were free after game 0, untrained in game 1
    untrained = sum(int(((o == 0) & ~t).sum()) for o, t in zip(g0["method"]["owner"], g1["method"]["trained"]))
    total = sum(t.numel() for t in g1["method"]["trained"])
    assert free[0] > 0.5 and abs(free[1] - untrained / total) < 1e-12
