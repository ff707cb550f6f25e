"""What only a CUDA GPU can check (``pytest -m cuda``; skipped without one, run by
``bench/gpu_check.py``). The CPU-run tests of the resume, the flags and the re-initialization
also run on the GPU when one is present (the agent picks CUDA by itself)."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_rand_init_on_cuda_draws_what_the_cpu_draws_and_leaves_the_cuda_generator_alone():
    from agents.network import layer_init
    from agscl import AGSCL

    torch.manual_seed(0)
    trunk = nn.Sequential(layer_init(nn.Linear(6, 16)), nn.ReLU(), layer_init(nn.Linear(16, 8)), nn.ReLU())
    with torch.no_grad():
        trunk[0].weight[:8] = 0
        trunk[0].bias[:8] = 0
    gpu_trunk = copy.deepcopy(trunk).cuda()
    inputs = torch.rand(32, 6) + 0.1
    for t, x in ((trunk, inputs), (gpu_trunk, inputs.cuda())):
        method = AGSCL(t, [nn.Linear(8, 2).to(x.device)], mu=0.0, lam=1.0, rho=0.5, zero_init=False, seed=5,
                       init_fn=layer_init)
        cuda_state = torch.cuda.get_rng_state_all()
        method.end_task(0, [x])
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_state))
    assert torch.equal(gpu_trunk[0].weight.cpu(), trunk[0].weight)


def test_agent_trains_evaluates_and_checkpoints_on_cuda(tmp_path):
    pytest.importorskip("minatar")
    from agents import config, ppo_continual

    argv = ["--suite", "minatar", "--games", "Breakout", "Asterix", "--steps-per-game", "256", "--num-envs", "4",
            "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2", "--eval-episodes", "2",
            "--random-episodes", "2", "--eval-envs", "2", "--eval-max-frames", "100", "--importance-obs", "64",
            "--method", "agscl", "--no-optimizer-per-game", "--bootstrap-time-limits", "--norm-adv-scope", "batch",
            "--train-max-frames", "20", "--runs-dir", str(tmp_path), "--run-name", "gpu"]
    setup = config.prepare(ppo_continual.Args, argv)
    assert setup.device.type == "cuda"
    assert ppo_continual.Run(setup).run() == 0
    ckpt = torch.load(os.path.join(tmp_path, "gpu", "ckpt", "latest.pt"), weights_only=True)
    assert "cuda" in ckpt["rng"] and ckpt["optimizer"] is not None and ckpt["game"] == 2
