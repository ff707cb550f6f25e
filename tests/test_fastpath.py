"""The fast path (agents/fastpath.py): AGS-CL stays exact under bf16 autocast, importances stay
fp32, every flag trains finitely on MinAtar, the plain path is bit-reproducible, split envs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from agents.fastpath import SplitEnv, duration, progress_line
from agscl import AGSCL
from agscl.ewc import diagonal_fisher
from agscl.mas import mas_importance

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def trunk_and_heads() -> tuple[nn.Sequential, list[nn.ModuleList]]:
    trunk = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 12), nn.ReLU())
    heads = [nn.ModuleList([nn.Linear(12, 3), nn.Linear(12, 1)]) for _ in range(2)]
    return trunk, heads


def agscl_after_one_task(lam: float) -> tuple[nn.Sequential, list[nn.ModuleList], AGSCL, torch.Tensor]:
    """AGS-CL after task 0 with some unimportant nodes in every layer (so masks exist), in task 1."""
    torch.manual_seed(0)
    trunk, heads = trunk_and_heads()
    with torch.no_grad():
        for layer, nodes in ((trunk[0], [1, 5]), (trunk[3], [0, 7, 9])):
            layer.weight[nodes] = 0
            layer.bias[nodes] = -1
    x = torch.randn(64, 2, 6, 6)
    method = AGSCL(trunk, heads, mu=0.5, lam=lam, rho=1.0, seed=0)  # unimportant rows re-drawn: non-zero
    method.begin_task(0)
    method.end_task(0, [x])
    method.begin_task(1)
    return trunk, heads, method, x


def bf16_adam_steps(trunk: nn.Module, head: nn.ModuleList, x: torch.Tensor, steps: int = 3) -> None:
    """What the agent does: trunk forward and backward under bf16 autocast, fp32 master weights."""
    params = list(trunk.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(steps):
        with torch.autocast(**BF16):
            features = trunk(x)
        loss = head[0](features.float()).square().mean() + head[1](features.float()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_prox_and_masks_are_exact_and_fp32_inside_autocast():
    """Called inside a bf16 autocast region, the prox step gives the fp64 closed form (a prox run
    in bf16 would be off by ~1e-3), frozen rows equal their anchor bit for bit, masked weights are
    exactly 0, and Omega, anchors and weights stay fp32."""
    trunk, heads, method, x = agscl_after_one_task(lam=1e6)
    bf16_adam_steps(trunk, heads[1], x)
    with torch.autocast(**BF16):
        method.apply_masks()
    before = [(layer.module.weight.detach().double().clone(), layer.module.bias.detach().double().clone())
              for layer in method.layers]
    twin = copy.deepcopy((trunk, method))
    alpha = 0.05
    with torch.autocast(**BF16):
        method.end_epoch(alpha)
    twin[1].end_epoch(alpha)  # the same step outside autocast
    for a, b in zip(trunk.parameters(), twin[0].parameters()):
        assert torch.equal(a, b)
    assert any(bool(m.any()) for m in method.fixed_zero if m is not None)
    for index, layer in enumerate(method.layers):
        w, b = layer.module.weight.detach(), layer.module.bias.detach()
        assert w.dtype == b.dtype == method.omega[index].dtype == method.anchor_w[index].dtype == torch.float32
        important = method.omega[index] > 0
        assert bool(important.any()) and bool((~important).any())
        # important nodes: lam * Omega is huge, so they are back exactly at their anchor
        assert torch.equal(w[important], method.anchor_w[index][important])
        assert torch.equal(b[important], method.anchor_b[index][important])
        # unimportant nodes: group soft threshold, against the fp64 closed form
        w0, b0 = before[index]
        rows = torch.cat([w0.flatten(1), b0[:, None]], dim=1)[~important]
        factor = (1 - alpha * method.mu / rows.norm(dim=1)).clamp_min(0)
        expected = rows * factor[:, None]
        got = torch.cat([w.flatten(1), b[:, None]], dim=1)[~important].double()
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
        if method.fixed_zero[index] is not None:
            assert bool((w[method.fixed_zero[index]] == 0).all())
    for (task, position), mask in method.head_fixed_zero.items():
        assert bool((heads[task][position].weight[mask] == 0).all())


def test_importances_are_computed_in_fp32_inside_autocast():
    """AGS-CL's Omega, EWC's Fisher and MAS's importance are bit-identical inside and outside a
    bf16 autocast region (a bf16 forward would change them)."""
    trunk, heads, method, x = agscl_after_one_task(lam=1.0)
    names = [n for n, _ in trunk.named_parameters()]
    with torch.autocast(**BF16):
        inside = method.mean_activations([x])
        torch.manual_seed(1)
        fisher_in = diagonal_fisher(trunk, heads[0][0], names, [x])
        mas_in = mas_importance(trunk, heads[0][0], names, [x])
    outside = method.mean_activations([x])
    torch.manual_seed(1)
    fisher_out = diagonal_fisher(trunk, heads[0][0], names, [x])
    mas_out = mas_importance(trunk, heads[0][0], names, [x])
    for a, b in zip(inside + fisher_in + mas_in, outside + fisher_out + mas_out):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    with torch.autocast(**BF16):  # the check above can fail: autocast does change this trunk's output
        low = trunk(x)
    assert low.dtype == torch.bfloat16 and not torch.equal(low.float(), trunk(x))


# -- the agent on MinAtar ----------------------------------------------------------------------
minatar = pytest.importorskip("minatar", reason='the MinAtar suite needs pip install -e ".[minatar]"')
from agents import ppo_continual  # noqa: E402

FLAGS = ("bf16", "channels-last", "overlap-env", "fewer-syncs")
ON = {f: [f"--{f}"] for f in FLAGS} | {"bf16": ["--bf16", "on"]}
OFF = {f: [f"--no-{f}"] for f in FLAGS} | {"bf16": ["--bf16", "off"]}
PLAIN = [a for f in FLAGS for a in OFF[f]]
FAST = [a for f in FLAGS for a in ON[f]]  # bf16 forced on, whatever this CPU
TINY = ["--suite", "minatar", "--steps-per-game", "384", "--num-envs", "4", "--num-steps", "32",
        "--num-minibatches", "2", "--update-epochs", "2", "--eval-every", "0", "--eval-episodes", "2",
        "--random-episodes", "2", "--eval-envs", "2", "--importance-obs", "64", "--checkpoint-every", "0",
        "--seed", "5"]


def run(tmp_path, name: str, *extra: str) -> dict:
    torch.set_num_threads(1)
    rc = ppo_continual.main([*TINY, "--runs-dir", str(tmp_path), "--run-name", name, *extra])
    assert rc == 0
    return torch.load(tmp_path / name / "ckpt" / "latest.pt", weights_only=True)


@pytest.mark.parametrize("flag", ["all", *FLAGS])
def test_each_flag_alone_and_all_train_finitely(tmp_path, capsys, flag):
    extra = [a for f in FLAGS for a in (ON[f] if flag in ("all", f) else OFF[f])]
    ckpt = run(tmp_path, flag, "--games", "Breakout", "--method", "agscl", *extra)
    out = capsys.readouterr().out
    expected = [f for f in FLAGS if flag in ("all", f)]
    assert f"fast path: {', '.join(expected)}" in out
    assert "ETA game" in out and "sequence" in out
    assert ckpt["global_step"] == 384
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in ckpt["agent"].values())


@pytest.mark.parametrize("path", [PLAIN, FAST], ids=["plain", "fast"])
def test_same_seed_gives_bit_identical_training(tmp_path, path):
    first = run(tmp_path, "a", "--games", "Breakout", "--method", "finetune", *path)
    second = run(tmp_path, "b", "--games", "Breakout", "--method", "finetune", *path)
    for key, value in first["agent"].items():
        assert torch.equal(value, second["agent"][key]), key


def test_agscl_freezes_and_masks_exactly_in_a_bf16_agent(tmp_path):
    """Two games on the full fast path with a huge lambda: every important node of game 1 ends
    game 2 bit-equal to its end-of-game-1 value, and every zero-fixed weight is exactly 0."""
    run(tmp_path, "ags", "--games", "Breakout", "Asterix", "--method", "agscl", "--agscl-lambda", "1e9", *FAST)
    after1 = torch.load(tmp_path / "ags" / "ckpt" / "game0.pt", weights_only=True)
    after2 = torch.load(tmp_path / "ags" / "ckpt" / "game1.pt", weights_only=True)
    layers = [k[: -len(".weight")] for k in after1["agent"] if k.startswith("trunk.") and k.endswith(".weight")]
    frozen = 0
    for index, prefix in enumerate(layers):
        important = after1["method"]["omega"][index] > 0
        frozen += int(important.sum())
        for suffix in (".weight", ".bias"):
            assert torch.equal(after1["agent"][prefix + suffix][important], after2["agent"][prefix + suffix][important])
        mask = after2["method"]["fixed_zero"][index]
        if mask is not None:
            assert bool((after2["agent"][prefix + ".weight"][mask] == 0).all())
    assert frozen > 10
    for key, mask in after2["method"]["head_fixed_zero"].items():
        task, position = key.split(":")
        assert bool((after2["agent"][f"heads.{task}.{position}.weight"][mask] == 0).all())


# -- pieces --------------------------------------------------------------------------------------
@pytest.mark.atari
def test_split_env_one_part_is_the_plain_env_and_halves_step_separately():
    from envs.atari import make_atari

    actions = np.random.default_rng(0).integers(0, 18, size=(6, 4))
    plain = make_atari("Boxing", 4, seed=3)
    one = SplitEnv(lambda n, seed: make_atari("Boxing", n, seed=seed), 4, 3, parts=1)
    two = SplitEnv(lambda n, seed: make_atari("Boxing", n, seed=seed), 4, 3, parts=2)
    try:
        assert np.array_equal(plain.reset(), one.reset()) and two.reset().shape == (4, 4, 84, 84)
        assert two.parts == [slice(0, 2), slice(2, 4)]
        for a in actions:
            one.send(0, a)
            for k, part in enumerate(two.parts):
                two.send(k, a[part])
            halves = [two.recv(k) for k in range(2)]
            assert all(h[0].shape == (2, 4, 84, 84) for h in halves)
            assert np.array_equal(plain.step(a)[0], one.recv(0)[0])
        assert two.step(actions[0])[0].shape == (4, 4, 84, 84)
    finally:
        for env in (plain, one, two):
            env.close()


def test_progress_line_gives_steps_per_second_and_both_etas():
    assert progress_line(1000.0, 500_000, 8_000_000) == "SPS=1000 ETA game 8m20s sequence 2h13m"
    assert [duration(s) for s in (5, 61, 3 * 3600 + 300, 2.6 * 86_400, float("inf"))] == ["5s", "1m01s", "3h05m", "2d14h", "?"]


def test_fused_penalty_trains_like_the_penalty_in_the_loss(tmp_path):
    """EWC over two games with the penalty's gradient added after backward (default) and through
    the loss (``--no-fused-penalty``): game 1 (no penalty yet) is bit-equal, game 2 ends within
    float rounding, and the penalty that both log is the same and positive."""
    ewc = ["--games", "Breakout", "Asterix", "--method", "ewc", "--ewc-lambda", "1e4", *PLAIN]
    fused = run(tmp_path, "fused", *ewc)
    autograd = run(tmp_path, "autograd", *ewc, "--no-fused-penalty")
    game0 = [torch.load(tmp_path / n / "ckpt" / "game0.pt", weights_only=True)["agent"] for n in ("fused", "autograd")]
    moved = 0.0
    for key, value in fused["agent"].items():
        torch.testing.assert_close(value, autograd["agent"][key], rtol=1e-4, atol=1e-5)
        if key in game0[0]:  # the second game's head is new in game 2
            assert torch.equal(game0[0][key], game0[1][key]), key
            moved = max(moved, float((value - game0[0][key]).abs().max()))
    assert moved > 1e-3  # game 2 did train: the comparison above is not between untouched weights
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    penalties = []
    for name in ("fused", "autograd"):
        events = EventAccumulator(str(tmp_path / name)).Reload()
        penalties.append([e.value for e in events.Scalars("losses/penalty")])
    assert penalties[0][-1] > 0 and penalties[0] == pytest.approx(penalties[1], rel=1e-3, abs=1e-9)


def test_compiled_trunk_sees_in_place_weight_edits_and_keeps_the_state_dict():
    """``--compile`` runs the trunk through torch.compile: its output equals the eager trunk's,
    also after the in-place edits AGS-CL makes (a zeroed row), and the agent's parameters and
    state_dict keys are unchanged (checkpoints load either way)."""
    from types import SimpleNamespace

    from agents.fastpath import FastPath
    from agents.network import Agent

    torch.manual_seed(0)
    agent = Agent((16,), 128, "minatar")
    agent.add_head(3)
    keys = list(agent.state_dict())
    flags = SimpleNamespace(bf16="off", channels_last=False, overlap_env=False, fewer_syncs=False, num_envs=4, compile=True)
    fast = FastPath(flags, torch.device("cpu"))
    fast.apply(agent)
    assert "compile" in fast.describe() and agent.trunk_fn is not None
    x = torch.randint(0, 2, (8, 10, 10, 10), dtype=torch.uint8)
    eager = agent.trunk(x.float())
    torch.testing.assert_close(agent.features(x), eager)
    with torch.no_grad():
        agent.trunk[0].weight[3].zero_()
        agent.trunk[0].bias[3] = -1.0
    edited = agent.trunk(x.float())
    assert not torch.allclose(edited, eager)
    torch.testing.assert_close(agent.features(x), edited)
    torch.testing.assert_close(agent.features(x[:5]), agent.trunk(x[:5].float()))  # another batch size
    assert list(agent.state_dict()) == keys
