"""`uniform`: `fedrlprune`'s pipeline with one rate for every layer, the smallest that fits.

The simplest rule a learned per-layer policy must beat. Everything but the rates is
`fedrlprune`'s (`BudgetedPruning`): the same progressive budget at each pruning step (cubic,
from the dense model to the device's final budget), regrowth from the global mask, the core,
held-out clients, the deployment rule, the mask-vote merge and the same metrics. Where
`fedrlprune` asks a DQN policy for one rate per layer, a client here prunes every target layer
at ONE rate, the smallest that brings its model inside this step's budget (FLOPs and
parameters both), by weight magnitude through the same `MagnitudeRanking` as `rl_prune`.

It is uniform magnitude pruning under a resource constraint, the baseline of Zhu & Gupta ("To
prune, or not to prune", 2017) and AMC (He et al., ECCV 2018) with the rate set by the budget
rather than by hand, as `schedule.budget_rate` sets it for `magnitude`. Departures, all kept
so the only difference from `fedrlprune` is where the rates come from:

- The rate is searched exactly (bisection to float precision), not in `budget_rate`'s steps
  of 1e-3, and it counts what the current mask already prunes: a layer already sparser than
  the rate stays as it is (the env's floor), so the rate can be lower than `budget_rate`'s.
- In structured mode the rate is a channel rate, and the cost counts the channels the mask
  really removes (the env counts rate x weights, which differs by rounding); the inputs a
  removed channel frees in the next layer are not counted, as in the env.
- No layer is pruned beyond MAX_RATE (0.99), as no `fedrlprune` action is; when even that
  misses the budget, the budget is missed (reported by the deployment summary).
"""

from __future__ import annotations

import math

from fedrlprune.methods.rules import Account, FixedRule
from fedrlprune.pruning.schedule import MAX_RATE
from fedrlprune.state import Masks, State


def uniform_counts(account: Account, rate: float) -> dict[str, int]:
    """Units of each layer pruned at `rate` (what the mask already prunes stays pruned)."""
    return {u.name: max(math.floor(rate * u.size), u.dead) for u in account.layers}


def uniform_rate(account: Account) -> float:
    """The smallest rate that brings the model inside the budget when every layer is pruned to
    it; MAX_RATE when even that does not fit. The cost only falls as the rate rises, so a
    bisection finds it to float precision."""
    if account.fits(uniform_counts(account, 0.0)):
        return 0.0
    if not account.fits(uniform_counts(account, MAX_RATE)):
        return MAX_RATE
    low, high = 0.0, MAX_RATE
    for _ in range(64):
        middle = (low + high) / 2
        if account.fits(uniform_counts(account, middle)):
            high = middle
        else:
            low = middle
    return high


class Uniform(FixedRule):
    name = "uniform"
    summary = "fedrlprune's pipeline, every layer at the one rate its step's budget needs"

    @classmethod
    def counts(cls, state: State, masks: Masks, account: Account, mode: str) -> dict[str, int]:
        return uniform_counts(account, uniform_rate(account))
