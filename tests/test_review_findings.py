"""Findings 3c, 3d and 3e of issue 18's review, each with a test that failed before its fix."""

from __future__ import annotations

import copy
import os
import signal

import pytest
import torch
from torch import nn

from agscl import AGSCL


# -- 3d: (I.2) draws from a private generator and touches no global one -----------------------
def _method_with_silent_nodes(seed: int) -> tuple[nn.Sequential, AGSCL]:
    from agents.network import layer_init

    torch.manual_seed(0)
    trunk = nn.Sequential(layer_init(nn.Linear(6, 16)), nn.ReLU(), layer_init(nn.Linear(16, 8)), nn.ReLU())
    method = AGSCL(trunk, [nn.Linear(8, 2)], mu=0.0, lam=1.0, rho=0.5, zero_init=False, seed=seed, init_fn=layer_init)
    with torch.no_grad():
        trunk[0].weight[:8] = 0
        trunk[0].bias[:8] = 0
    return trunk, method


def test_rand_init_leaves_every_global_generator_alone_and_draws_the_same(monkeypatch):
    inputs = [torch.rand(32, 6) + 0.1]
    trunk, method = _method_with_silent_nodes(seed=5)
    device_seeds: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: device_seeds.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: device_seeds.append(seed))
    before = trunk[0].weight.detach().clone()
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    method.end_task(0, inputs)
    assert device_seeds == []  # no device generator was (re)seeded
    assert torch.equal(torch.get_rng_state(), cpu)
    if cuda is not None:
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda))

    # the draw is the documented one: rows chosen with probability rho from the method's
    # generator, values from a copy of the layer initialized after seeding the CPU generator
    # with the generator's next 62-bit draw (what the code did before the fix, on the CPU)
    gen = torch.Generator().manual_seed(5)
    unimportant = torch.arange(16) < 8
    chosen = unimportant & (torch.rand(16, generator=gen) < 0.5)
    reference = nn.Linear(6, 16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
        nn.init.orthogonal_(reference.weight, 2**0.5)
    assert chosen.any()
    assert torch.equal(trunk[0].weight[chosen], reference.weight[chosen])
    assert torch.equal(trunk[0].weight[~chosen], before[~chosen])

    # and the global generators' state has no say in it
    monkeypatch.undo()
    trunk2, method2 = _method_with_silent_nodes(seed=5)
    torch.manual_seed(1234)
    method2.end_task(0, inputs)
    assert torch.equal(trunk2[0].weight, trunk[0].weight)


# -- 3c: training and evaluation games have their own length caps -----------------------------
pytest.importorskip("minatar", reason='the MinAtar suite needs pip install -e ".[minatar]"')

from agents import config, ppo_continual  # noqa: E402
from agents.runtime import rng_state  # noqa: E402

TINY = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--steps-per-game", "256", "--num-envs", "4",
        "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2", "--eval-every", "0",
        "--eval-episodes", "1", "--random-episodes", "1", "--eval-envs", "1", "--eval-max-frames", "30",
        "--importance-obs", "32", "--importance-batch", "32", "--seed", "11", "--torch-threads", "1"]


def test_eval_cap_and_train_cap_are_separate(tmp_path):
    setup = config.prepare(ppo_continual.Args, [*TINY, "--train-max-frames", "500", "--eval-max-frames", "40",
                                                       "--runs-dir", str(tmp_path), "--run-name", "caps"])
    run = ppo_continual.Run(setup)
    with run.make_env("Breakout", 1, 0, train=True) as env:
        assert env.max_episode_steps == 500
    with run.eval_env("Breakout", 0, 1) as env:
        assert env.max_episode_steps == 40
    default = config.parse_args(ppo_continual.Args, ["--suite", "minatar", "--eval-max-frames", "40"])
    assert default.train_max_frames == 10_000  # --eval-max-frames alone leaves training games alone


# -- 3e: what --resume restores is bit-equal to what was written at the stop ------------------
def _equal(a, b) -> bool:
    """Deep equality with bit-equal tensors."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("per_game", [True, False])
def test_resume_restores_network_optimizer_method_and_rng_bit_equal(tmp_path, monkeypatch, per_game):
    """Stopped (as by SIGTERM) right after a mid-game checkpoint of game 2: the resumed run holds
    exactly the states that were in memory at the stop, which are exactly those in the file."""
    at_stop: dict = {}
    original = ppo_continual.Run.checkpoint

    def checkpoint_then_stop(self, boundary):
        original(self, boundary)
        if not boundary and self.game == 1 and not at_stop:
            at_stop.update(agent=copy.deepcopy(self.agent.state_dict()), method=copy.deepcopy(self.method.state_dict()),
                           optimizer=copy.deepcopy(self.optimizer.state_dict()), rng=rng_state())
            self.stop.signum = signal.SIGTERM

    monkeypatch.setattr(ppo_continual.Run, "checkpoint", checkpoint_then_stop)
    flags = [] if per_game else ["--no-optimizer-per-game"]
    argv = [*TINY, "--method", "agscl", "--checkpoint-every", "128", *flags, "--runs-dir", str(tmp_path), "--run-name", "r"]
    assert ppo_continual.main(argv) == 128 + signal.SIGTERM
    monkeypatch.setattr(ppo_continual.Run, "checkpoint", original)
    written = torch.load(os.path.join(tmp_path, "r", "ckpt", "latest.pt"), weights_only=True)
    assert written["game"] == 1 and written["update"] == 1  # mid game 2
    assert _equal(written["agent"], at_stop["agent"]) and _equal(written["method"], at_stop["method"])
    assert _equal(written["optimizer"], at_stop["optimizer"]) and _equal(written["rng"], at_stop["rng"])

    torch.manual_seed(999)  # whatever the process did meanwhile
    setup = config.prepare(ppo_continual.Args, ["--resume", os.path.join(tmp_path, "r")])
    run = ppo_continual.Run(setup)
    assert _equal(run.agent.state_dict(), at_stop["agent"])
    assert _equal(run.method.state_dict(), at_stop["method"])
    assert _equal(run.optimizer.state_dict(), at_stop["optimizer"])
    assert _equal(rng_state(), at_stop["rng"])
    if not per_game:  # the sequence's Adam: trunk + both heads, moments from game 1 included
        assert len(run.optimizer.param_groups) == 3
    assert run.run() == 0  # and it finishes
