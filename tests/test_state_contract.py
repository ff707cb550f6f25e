"""The method protocol's state contract (agscl/base.py, "State"), for every registered method and
composition: ``state_dict`` writes exactly the base keys and the class's ``state_keys``, and a method
restored from its state continues bit for bit as the original did, resumed at a task boundary and,
for the methods the agent drives, mid-task (where the agent calls ``begin_task`` again). A new method
that keeps state without checkpointing it fails here. The learner below calls the optional hooks
(``set_epoch_length``, ``prune``, ``use_task``, ``parameters``) on every method, as both learners do."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import supervised  # noqa: F401  (registers hat)
from agscl.base import ContinualMethod, retrain_start
from agscl.registry import make_method, method_class, method_hparams, method_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE_KEYS = {"name", "task", "tasks_learned"}
TASKS, STEPS = 3, 6
SMALL = {"redo_interval": 2}  # hyperparameters that make a method act within a few steps


def build(name: str, seed: int = 0) -> tuple[nn.Module, nn.ModuleList, ContinualMethod]:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU())
    heads = nn.ModuleList(nn.Linear(8, 3) for _ in range(TASKS))
    hparams = {h.name: SMALL.get(h.name, h.default) for h in method_hparams(name)}
    return trunk, heads, make_method(name, trunk, heads, num_tasks=TASKS, seed=1, **hparams)


class Learner:
    """A minimal learner of the protocol: Adam over trunk, heads and the method's parameters, a fresh
    one at pruning, evaluation under ``use_task``."""

    def __init__(self, trunk: nn.Module, heads: nn.ModuleList, method: ContinualMethod) -> None:
        self.trunk, self.heads, self.method = trunk, heads, method
        self.optimizer = self.fresh()

    def fresh(self) -> torch.optim.Optimizer:
        params = list(self.trunk.parameters()) + list(self.heads.parameters()) + list(self.method.parameters())
        optimizer = torch.optim.Adam(params, lr=0.01)
        self.method.attach_optimizer(optimizer)
        return optimizer

    def steps(self, task: int, first: int, last: int, data: torch.Tensor) -> None:
        self.method.set_epoch_length(STEPS)
        prune_at = retrain_start(self.method, STEPS)
        for step in range(first, last):
            if step + 1 == prune_at:
                self.method.prune(task)
                self.optimizer = self.fresh()
            x = data[task, step]
            loss = F.cross_entropy(self.heads[task](self.trunk(x)), x[:, :3].argmax(1)) + self.method.penalty()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.method.after_step(0.01)
        self.method.end_epoch(0.01)

    def end(self, task: int, data: torch.Tensor) -> None:
        self.method.end_task(task, [data[task, 0], data[task, 1]])

    def outputs(self, data: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            out = []
            for task in range(TASKS):
                with self.method.use_task(task):
                    out.append(self.heads[task](self.trunk(data[task, 0])))
            return out

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({"trunk": self.trunk.state_dict(), "heads": self.heads.state_dict(),
                              "optimizer": self.optimizer.state_dict(), "method": self.method.state_dict()})


def restore(name: str, saved: dict[str, Any]) -> Learner:
    trunk, heads, method = build(name, seed=9)  # other initial weights: everything must come from the state
    trunk.load_state_dict(saved["trunk"])
    heads.load_state_dict(saved["heads"])
    method.load_state_dict(copy.deepcopy(saved["method"]))
    learner = Learner(trunk, heads, method)
    learner.optimizer.load_state_dict(saved["optimizer"])
    return learner


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def finish(learner: Learner, data: torch.Tensor, first: int) -> tuple[list[torch.Tensor], dict[str, Any]]:
    torch.manual_seed(7)  # importance draws (EWC's sampled labels) from the same global stream
    learner.steps(1, first, STEPS, data)
    learner.end(1, data)
    learner.method.begin_task(2)
    learner.steps(2, 0, STEPS, data)
    learner.end(2, data)
    params = [p.detach().clone() for p in list(learner.trunk.parameters()) + list(learner.heads.parameters())]
    return params + learner.outputs(data), learner.method.state_dict()


@pytest.mark.parametrize("name", method_names(composites=True))
def test_state_dict_writes_its_state_keys_and_a_restored_method_continues_identically(name):
    data = torch.randn(TASKS, STEPS, 16, 6, generator=torch.Generator().manual_seed(3))
    cls = method_class(name)
    learner = Learner(*build(name))
    learner.method.begin_task(0)
    learner.steps(0, 0, STEPS, data)
    learner.end(0, data)
    assert set(learner.method.state_dict()) == BASE_KEYS | set(cls.state_keys), f"{name}: state_keys and state_dict differ"
    at_boundary = learner.snapshot()
    learner.method.begin_task(1)
    learner.steps(1, 0, 2, data)
    mid_task = learner.snapshot()
    reference = finish(learner, data, 2)

    resumed = [("boundary", restore(name, at_boundary), 0)]
    if "rl" in cls.learners:  # the agent checkpoints within a game and calls begin_task again on resume
        resumed.append(("mid-task", restore(name, mid_task), 2))
    for (label, other, first), saved in zip(resumed, (at_boundary, mid_task)):
        assert same(other.method.state_dict(), saved["method"]), f"{name} ({label}): the state does not round-trip"
        other.method.begin_task(1)
        if first == 0:
            other.steps(1, 0, 2, data)
        result = finish(other, data, 2)
        assert all(torch.equal(a, b) for a, b in zip(reference[0], result[0])), f"{name} ({label}): weights differ"
        assert same(reference[1], result[1]), f"{name} ({label}): method states differ"
