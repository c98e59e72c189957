"""FedMP: the bandit's arm choice, its reward, budget-feasible arms and residual recovery."""

import math
from pathlib import Path

import numpy as np
import pytest

from fedrlprune.experiments.runner import run_experiment
from fedrlprune.federation.aggregation import aggregate_sparse
from fedrlprune.methods import fedmp

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)


def test_every_arm_is_tried_once_in_order_then_the_best_bound_wins() -> None:
    bandit = fedmp.DiscountedUCB([0.2, 0.5], discount=0.5, explore=0.5)
    assert bandit.choose() == 0
    bandit.update(0, 1.0)  # counts [1, 0], sums [1, 0], scale 1
    assert bandit.choose() == 1
    bandit.update(1, 0.5)  # discounted: counts [0.5, 1], sums [0.5, 0.5]
    np.testing.assert_allclose(bandit.counts, [0.5, 1.0])
    np.testing.assert_allclose(bandit.sums, [0.5, 0.5])
    # means [1, 0.5]; bonus 0.5 sqrt(2 ln 1.5 / n): arm 0 1 + 0.637, arm 1 0.5 + 0.450.
    assert bandit.choose() == 0 and bandit.best() == 0
    bonus = 0.5 * math.sqrt(2 * math.log(1.5) / 0.5)
    assert bonus == pytest.approx(0.637, abs=1e-3)


def test_an_arm_not_played_for_long_gets_explored_again() -> None:
    bandit = fedmp.DiscountedUCB([0.0, 0.5], discount=0.5, explore=0.5)
    bandit.update(0, 1.0)
    bandit.update(1, 0.9)  # nearly as good, then arm 0 keeps being played
    picks = []
    for _ in range(6):
        arm = bandit.choose()
        picks.append(arm)
        bandit.update(arm, 1.0 if arm == 0 else 0.9)
    assert 1 in picks  # the discount shrinks arm 1's count, so its bonus grows back


def test_reward_is_loss_decrease_per_second() -> None:
    assert fedmp.reward(2.0, 1.5, 0.25) == pytest.approx(2.0)
    assert fedmp.reward(1.0, 1.2, 1.0) == pytest.approx(-0.2)  # a round that made it worse
    assert fedmp.reward(float("nan"), 1.0, 1.0) == 0.0 and fedmp.reward(2.0, 1.0, 0.0) == 0.0


def test_only_arms_that_fit_the_budget_are_played() -> None:
    assert fedmp.feasible_arms([0.0, 0.5, 0.9], lambda r: r >= 0.5) == (0.5, 0.9)
    assert fedmp.feasible_arms([0.0, 0.5], lambda r: False) == (0.5,)  # none fits: the largest


def test_residual_recovery_fills_what_a_client_pruned_from_the_global_model() -> None:
    previous = {"w": np.array([1.0, 1.0, 1.0])}
    states = [{"w": np.array([3.0, 0.0, 5.0])}, {"w": np.array([2.0, 4.0, 0.0])}]
    masks = [{"w": np.array([True, False, True])}, {"w": np.array([True, True, False])}]
    state, global_masks = aggregate_sparse(states, masks, [1.0, 3.0], previous, rule="residual")
    # (1 x 3 + 3 x 2) / 4, (1 x 1 [recovered] + 3 x 4) / 4, (1 x 5 + 3 x 1 [recovered]) / 4
    np.testing.assert_allclose(state["w"], [2.25, 3.25, 2.0])
    np.testing.assert_array_equal(global_masks["w"], [True, True, True])  # dense global model


def test_fedmp_end_to_end_keeps_every_budget_with_a_dense_global_model(tmp_path: Path) -> None:
    cfg = {"dataset": "digits", "model": "mlp", "method": "fedmp", "clients": 4, "rounds": 3,
           "latency_runs": 0}  # fmt: skip
    summary = run_experiment({**cfg, "lr": 0.05}, out_dir=tmp_path / "m", live=False)
    assert summary["failed_clients"] == []
    assert summary["budget_satisfaction"] == 1.0  # every tier deploys a sub-model that fits
    assert summary["pruned_layers_density"] == 1.0  # residual recovery keeps the global dense
    by_tier = {c["tier"]: c["nonzero_params"] for c in summary["per_client"]}
    assert by_tier["mcu"] < by_tier["laptop"]  # per-client ratios follow the devices
