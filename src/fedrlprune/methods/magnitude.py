"""Magnitude pruning under FedAvg: the "traditional federated pruning" baseline.

Every client prunes its layers by weight magnitude to one rate (`prune_rate`), reached
progressively along the cubic schedule (Zhu & Gupta, 2017) over the pruning rounds. With
`respect_budgets`, a client whose device budget needs more prunes to the uniform rate its
budget needs (no learning: the rule a learned policy must beat).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedrlprune.devices import Budget
from fedrlprune.federation.messages import Orders
from fedrlprune.methods.base import ClientData, Method, Pruned
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.pruning.schedule import budget_rate, scheduled_rate
from fedrlprune.state import Masks, State

if TYPE_CHECKING:
    from fedrlprune.config import Config
    from fedrlprune.federation.fleet import Fleet


class Magnitude(Method):
    name = "magnitude"
    summary = "one magnitude-pruning rate for every client (optionally what its budget needs)"

    def __init__(self, cfg: Config, fleet: Fleet) -> None:
        super().__init__(cfg, fleet)
        self.final_rate = {
            c.cid: self._final_rate(fleet.pruning_budget(c.cid)) for c in fleet.clients
        }

    def _final_rate(self, limit: Budget) -> float:
        rate = self.cfg.prune_rate
        if not self.cfg.respect_budgets:
            return rate
        facts = self.fleet.facts
        need = budget_rate(
            facts.weights, facts.layer_flops, facts.dense_params, facts.total_flops, limit
        )
        return max(rate, need)

    def rate_now(self, cid: int, rnd: int) -> float:
        """The layer sparsity client `cid` prunes to in round `rnd`; 0.0 when it does not."""
        final = self.final_rate[cid]
        step = self.fleet.step(rnd)
        if final == 0.0 or not step:
            return 0.0
        return scheduled_rate(final, step, len(self.fleet.prune_rounds))

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        return Orders(round=rnd, masks=masks, core=core, prune_rate=self.rate_now(cid, rnd))

    def deploy_orders(self, cid: int, state: State, masks: Masks) -> Orders:
        rate = self.final_rate[cid]
        return Orders(round=self.cfg.rounds, masks=masks, deploy=True, prune_rate=rate)

    @classmethod
    def prune(
        cls, cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders
    ) -> Pruned:
        if orders.prune_rate <= 0.0:
            return Pruned(state, masks)
        rates = dict.fromkeys(data.targets, orders.prune_rate)
        masks = magnitude_masks(state, rates, cfg.mode, masks, data.groups(cfg.structured))
        return Pruned(apply_masks(state, masks), masks)
