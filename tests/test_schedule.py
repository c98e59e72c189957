"""The pruning schedule and the uniform rate a device budget demands."""

import math

import pytest

from fedrlprune.devices import Budget
from fedrlprune.pruning.schedule import MAX_RATE, budget_rate, pruning_rounds, scheduled_rate


def test_pruning_rounds_start_after_dense_rounds_and_stop_at_until() -> None:
    assert pruning_rounds(20, 0.1, 0.5, 1) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert pruning_rounds(20, 0.1, 0.5, 3) == [3, 6, 9]
    assert pruning_rounds(20, 0.0, 1.0, 5) == [1, 6, 11, 16]
    assert pruning_rounds(2, 0.1, 0.5, 1) == [1]  # always at least one round
    assert pruning_rounds(3, 0.9, 0.5, 1) == [3]


def test_cubic_schedule_reaches_the_final_rate_with_large_early_steps() -> None:
    rates = [scheduled_rate(0.8, s, 4) for s in range(1, 5)]
    assert rates[-1] == pytest.approx(0.8)
    assert rates == sorted(rates)
    assert rates[0] == pytest.approx(0.8 * (1 - 0.75**3))
    assert rates[1] - rates[0] > rates[3] - rates[2]  # big cuts first


WEIGHTS = {"a": 100, "b": 1000}
FLOPS = {"a": 5000, "b": 2000}


def _cost(rate: float) -> tuple[int, float]:
    pruned = {k: math.floor(rate * n) for k, n in WEIGHTS.items()}
    params = 1200 - sum(pruned.values())
    flops = 8000 - sum(FLOPS[k] * pruned[k] / n for k, n in WEIGHTS.items())
    return params, flops


def test_budget_rate_is_the_smallest_rate_that_fits() -> None:
    # 1200 params (1100 prunable), 8000 FLOPs (7000 prunable): a param budget of 650 needs
    # (1200 - 650) / 1100 = 0.5; a FLOPs budget of 4500 needs (8000 - 4500) / 7000 = 0.5 too.
    limit = Budget(max_flops=4500, max_params=650)
    rate = budget_rate(WEIGHTS, FLOPS, 1200, 8000, limit)
    params, flops = _cost(rate)
    assert params <= 650 and flops <= 4500
    assert rate == pytest.approx(0.5, abs=2e-3)
    lower = _cost(rate - 0.01)
    assert lower[0] > 650 or lower[1] > 4500


def test_no_pruning_needed_and_impossible_budgets() -> None:
    assert budget_rate(WEIGHTS, FLOPS, 1200, 8000, Budget(1e9, 1e9)) == 0.0
    # 100 params stay dense whatever happens: a budget of 50 cannot be met.
    assert budget_rate(WEIGHTS, FLOPS, 1200, 8000, Budget(1e9, 50)) == MAX_RATE
