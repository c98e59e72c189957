"""`fedrlprune`'s server side, shared with the fixed rules (`uniform`, `lamp`) it must beat.

Everything here is the pipeline, not the choice of rates. A device trains within its limits
from the first round, so there is no dense warm-up and no ramp: a client prunes to its device's
budget the first time it is selected (in whatever round), and the schedule's pruning rounds
(`prune_start`, `prune_until`, `prune_every`) are the rounds where it allocates that budget
again; with `regrow` such a round starts from the global mask, so channels can leave and come
back as the model trains; with `train_core` every client also trains the weights all clients
keep; at deployment a client keeps the mask it was trained under when that fits its budget.
A subclass says what a client needs to prune at a step (`pruning_orders`) and how it prunes
(the client-side `prune`), so two methods built on this differ only in where rates come from.
"""

from __future__ import annotations

from dataclasses import replace

from fedrlprune.federation.messages import Orders
from fedrlprune.methods.base import Method
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
        """A pruning round's orders, or plain ones; a client that has not pruned yet prunes
        now, at the step the schedule has reached (its first step at the earliest)."""
        step = self.fleet.step(rnd)
        if not step and self.fleet.clients[cid].masks is None:
            step = max(1, sum(p <= rnd for p in self.fleet.prune_rounds))
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
        limit = self.fleet.pruning_budget(cid)
        return replace(orders, budget_flops=limit.max_flops, budget_params=limit.max_params)

    def fits_final(self, cid: int, state: State, masks: Masks) -> bool:
        """Whether client `cid` has pruned and `state` under `masks` fits its final budget, on
        every limit as the summary checks it (the compact model when structured)."""
        if self.fleet.clients[cid].masks is None:
            return False
        return self.fleet.fits(cid, state, masks)
