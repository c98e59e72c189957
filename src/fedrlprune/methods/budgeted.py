"""`fedrlprune`'s server side, shared with the fixed rules (`uniform`, `lamp`) it must beat.

Everything here is the pipeline, not the choice of rates: each pruning round tightens a
client's budget from the dense model toward its device's final budget along the cubic
schedule; with `regrow` a pruning round starts from the global mask, so a weight pruned too
early can come back; with `train_core` every client also trains the weights all clients keep;
at deployment a client keeps the mask it was trained under when that fits its final budget.
A subclass says what a client needs to prune at a step (`pruning_orders`) and how it prunes
(the client-side `prune`), so two methods built on this differ only in where rates come from.
"""

from __future__ import annotations

from dataclasses import replace

from fedrlprune.devices import Budget
from fedrlprune.federation.messages import Orders
from fedrlprune.methods.base import Method
from fedrlprune.pruning.schedule import scheduled_rate
from fedrlprune.state import Masks, State


class BudgetedPruning(Method):
    """Progressive per-client budgets, regrowth, the core and the deployment rule."""

    default_mode = "structured"  # whole channels: a compact model the device really runs faster

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        """With `regrow`, a pruning round starts from the global mask: the client re-prunes from
        every weight the federation kept, so a weight pruned too early can come back."""
        own = self.fleet.clients[cid].masks
        if own is None or (self.cfg.regrow and self.fleet.step(rnd)):
            return global_masks
        return own

    def core(self) -> Masks:
        return self.fleet.core_masks() if self.cfg.train_core else {}

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        step = self.fleet.step(rnd)
        plain = Orders(round=rnd, masks=masks, core=core)
        return self.pruning_orders(cid, plain, step) if step else plain

    def deploy_orders(self, cid: int, state: State, masks: Masks) -> Orders:
        """A client keeps the mask it was last trained under when that fits its final budget:
        pruning again could only remove weights it never trained without."""
        plain = Orders(round=self.cfg.rounds, masks=masks, deploy=True)
        return plain if self.fits_final(cid, state, masks) else self.pruning_orders(cid, plain, 0)

    def pruning_orders(self, cid: int, orders: Orders, step: int) -> Orders:
        """`orders` with what the client needs to prune at pruning step `step` (0: deployment,
        the final budget): here the budget alone."""
        limit = self.budget_now(cid, step or len(self.fleet.prune_rounds))
        return replace(orders, budget_flops=limit.max_flops, budget_params=limit.max_params)

    def fits_final(self, cid: int, state: State, masks: Masks) -> bool:
        """Whether client `cid` has pruned and `state` under `masks` fits its final budget, on
        every limit as the summary checks it (the compact model when structured)."""
        if self.fleet.clients[cid].masks is None:
            return False
        return self.fleet.fits(cid, state, masks)

    def budget_now(self, cid: int, step: int) -> Budget:
        """The budget at pruning step `step`: from the dense model toward the client's budget
        (memory and sparse storage folded into its params limit, `Fleet.pruning_budget`)
        along the same cubic schedule as `magnitude`, so pruning stays progressive."""
        facts = self.fleet.facts
        final = self.fleet.pruning_budget(cid)
        frac = scheduled_rate(1.0, step, len(self.fleet.prune_rounds))
        return Budget(
            facts.total_flops - frac * (facts.total_flops - final.max_flops),
            facts.dense_params - frac * (facts.dense_params - final.max_params),
        )
