"""Dormant units: the fraction of trunk units that never fire, against a hand count."""

from __future__ import annotations

import torch
import torch.nn as nn

from agents.evaluation import dormant_fraction


def test_dormant_fraction_counts_units_that_never_fire() -> None:
    conv = nn.Conv2d(1, 3, 1)
    linear = nn.Linear(3 * 2 * 2, 4)
    trunk = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), linear, nn.ReLU())
    with torch.no_grad():
        # conv channel c outputs w_c * x + b_c on positive inputs
        conv.weight[:] = torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1)
        conv.bias[:] = torch.tensor([0.0, 0.0, -1.0])
        # channel 0 fires, channel 1 never (negative), channel 2 never (bias -1)
        linear.weight.zero_()
        linear.bias[:] = torch.tensor([1.0, -1.0, 0.0, 2.0])  # units 1 and 2 never fire
    x = torch.rand(5, 1, 2, 2) + 0.1
    batches = [x[:2], x[2:]]
    # hand count: conv 2 of 3 dormant, linear 2 of 4 dormant -> 4 of 7
    assert dormant_fraction(trunk, batches) == 4 / 7


def test_a_unit_firing_on_one_input_of_one_batch_is_not_dormant() -> None:
    linear = nn.Linear(1, 2)
    trunk = nn.Sequential(linear, nn.ReLU())
    with torch.no_grad():
        linear.weight[:] = torch.tensor([[1.0], [0.0]])
        linear.bias[:] = torch.tensor([0.0, -1.0])  # unit 1 never fires
    batches = [torch.tensor([[-1.0], [-2.0]]), torch.tensor([[3.0]])]  # unit 0 fires only on the last input
    assert dormant_fraction(trunk, batches) == 1 / 2
