"""The rule by which a device trains within its RAM: micro-batches first, then no momentum."""

import math

import pytest
import torch
from torch import nn

from fedrlprune.devices import Budget
from fedrlprune.training_plan import TrainingFootprint, fit_training, halvings, plan_training

SHAPE = (1, 12, 12)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 144, 10),
    )  # fmt: skip


def test_halvings_go_down_to_one_sample() -> None:
    assert halvings(32) == [32, 16, 8, 4, 2, 1]
    assert halvings(5) == [5, 3, 2, 1]


def test_the_configured_step_when_it_fits() -> None:
    plan = plan_training(net(), SHAPE, 32, 0.9, math.inf)
    assert (plan.micro_batch, plan.momentum, plan.fits) == (32, 0.9, True)
    params = sum(p.numel() * 4 for p in net().parameters())
    assert plan.memory.gradients == plan.memory.optimizer == params


def test_micro_batches_before_momentum_goes_and_nothing_hidden_when_nothing_fits() -> None:
    model = net()
    full = plan_training(model, SHAPE, 32, 0.9, math.inf).memory
    # room for momentum and a quarter of the batch's activations: micro-batches, momentum kept
    limit = full.weights + full.gradients + full.optimizer + full.activations / 3
    plan = plan_training(model, SHAPE, 32, 0.9, limit)
    assert plan.fits and plan.momentum == 0.9 and plan.micro_batch < 32
    assert plan.memory.total <= limit
    # no room for momentum even at one sample: momentum-free, one sample at a time
    one = plan_training(model, SHAPE, 1, 0.0, math.inf).memory
    limit = one.total + full.optimizer // 2
    plan = plan_training(model, SHAPE, 32, 0.9, limit)
    assert plan.fits and plan.momentum == 0.0 and plan.micro_batch in (1, 2)
    nothing = fit_training(model, SHAPE, 32, 0.9, full.weights)
    assert not nothing.fits and (nothing.micro_batch, nothing.momentum) == (32, 0.9)


def test_a_core_is_trained_only_where_it_fits() -> None:
    model = net()
    with_core = plan_training(model, SHAPE, 8, 0.0, math.inf, core=True).memory
    without = plan_training(model, SHAPE, 8, 0.0, math.inf).memory
    assert with_core.activations > without.activations
    assert fit_training(model, SHAPE, 8, 0.0, with_core.total, core=True).core
    assert not fit_training(model, SHAPE, 8, 0.0, without.total, core=True).core


def test_measuring_leaves_the_model_as_it_was() -> None:
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan_training(model, SHAPE, 4, 0.9, math.inf)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_the_footprint_ratio_is_the_worst_limit() -> None:
    plan = plan_training(net(), SHAPE, 4, 0.0, math.inf)
    fp = TrainingFootprint(params=50, flops=300, plan=plan)
    ratios = fp.ratios(Budget(600, 100, 2 * plan.memory.total))
    assert ratios == pytest.approx({"params": 0.5, "flops": 0.5, "memory": 0.5})
    assert fp.ratio(Budget(100, 100, math.inf)) == pytest.approx(3.0)
