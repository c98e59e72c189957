"""When to prune and how much: a progressive schedule and the rate a device budget demands."""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedrlprune.devices import Budget

MAX_RATE = 0.99  # never prune a layer to nothing: the model must still compute something


def pruning_rounds(rounds: int, start: float, until: float, every: int) -> list[int]:
    """Rounds at which clients prune: from just after `start` of the run, every `every` rounds,
    up to `until` of the run; at least one round. Dense rounds before `start` give magnitudes
    meaning: pruning a freshly initialised model by magnitude is pruning at random."""
    first = min(math.floor(start * rounds) + 1, rounds)
    last = max(first, math.floor(until * rounds))
    return list(range(first, last + 1, every))


def scheduled_rate(final: float, step: int, steps: int) -> float:
    """The rate reached at pruning step `step` of `steps` (1-based), along the cubic schedule of
    Zhu & Gupta ("To prune, or not to prune", 2017): large cuts early while the weights are
    redundant, small ones late when the model has little left to spare."""
    return final * (1.0 - (1.0 - step / steps) ** 3)


def budget_rate(
    weights: Mapping[str, int],
    flops: Mapping[str, int],
    total_params: int,
    total_flops: int,
    limit: Budget,
) -> float:
    """Smallest uniform rate over the layers in `weights` (layer -> weight count) that brings the
    model inside `limit`, counting pruned weights exactly as `magnitude_masks` does (floor per
    layer); MAX_RATE when even that does not fit (the budget is then reported as missed)."""

    def fits(rate: float) -> bool:
        pruned = {layer: math.floor(rate * n) for layer, n in weights.items()}
        params = total_params - sum(pruned.values())
        cost = total_flops - sum(flops[layer] * pruned[layer] / n for layer, n in weights.items())
        return params <= limit.max_params and cost <= limit.max_flops

    pruned_params = sum(weights.values())
    pruned_flops = sum(flops[layer] for layer in weights)
    need = max(
        (total_params - limit.max_params) / max(pruned_params, 1),
        (total_flops - limit.max_flops) / max(pruned_flops, 1),
        0.0,
    )
    rate = min(need, MAX_RATE)
    while not fits(rate) and rate < MAX_RATE:  # floor rounding can leave a few weights over
        rate = min(rate + 1e-3, MAX_RATE)
    return rate
