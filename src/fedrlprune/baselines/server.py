"""What the server does for each baseline, between the round loop and the baseline's math.

One small class per baseline says which mask each client is sent, what extra orders travel
with it, what the server learns from each reply, and what happens around aggregation. The round
loop (`fl/server_app.py`) calls the same hooks for every baseline, so the baselines share the
runner, data, seeds, device tiers, metrics and results files with the method; the math lives in
the baseline modules, pure and tested alone.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from fedrlprune.baselines import feddst, fedmp, prunefl
from fedrlprune.config import Config
from fedrlprune.devices import TIERS, within_budget
from fedrlprune.fl.fleet import Fleet
from fedrlprune.fl.validation import Reply
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.state import Masks, State

ANY_VOTE = 1e-9  # vote threshold that keeps every weight at least one client kept


class BaselinePlan:
    """The hooks with their neutral behaviour; each baseline overrides what it needs."""

    keeps_own_masks = True  # False: every client follows the server's one mask
    may_move = False  # True: client masks may move at constant density (prune and regrow)

    def __init__(self, cfg: Config, fleet: Fleet) -> None:
        self.cfg = cfg
        self.fleet = fleet
        self.facts = fleet.facts
        self.targets = list(fleet.facts.targets)

    def start(self, state: State, train_sizes: dict[int, int]) -> tuple[State, Masks]:
        """The initial global model and mask, once the clients' sizes are known."""
        return state, {}

    def before_round(self, rnd: int, state: State, global_masks: Masks) -> tuple[State, Masks]:
        return state, global_masks

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        """The mask client `cid` is sent in round `rnd` (0: deployment)."""
        if rnd == 0:
            return self.fleet.deploy_masks(cid, global_masks)
        return self.fleet.masks_for(cid, global_masks)

    def extras(self, cid: int, rnd: int) -> dict[str, Any]:
        return {}

    def importance_layout(self, rnd: int) -> State | None:
        """Layout of squared gradients the clients send this round, if asked for."""
        return None

    def observe(self, cid: int, reply: Reply, seconds: float) -> None:
        """What the server learns from an accepted reply (`seconds`: its simulated round)."""

    def aggregation(self) -> dict[str, Any]:
        """Keyword arguments of `aggregate_sparse` beside the states and the rule."""
        return {
            "vote_threshold": self.cfg.vote_threshold,
            "target_sparsity": self.cfg.server_sparsity or None,
        }

    def after_aggregate(self, rnd: int, state: State, global_masks: Masks) -> tuple[State, Masks]:
        return state, global_masks


class PruneFLPlan(BaselinePlan):
    """One shared mask, readjusted at the pruning rounds from the clients' squared gradients."""

    keeps_own_masks = False

    def start(self, state: State, train_sizes: dict[int, int]) -> tuple[State, Masks]:
        # The round time PruneFL minimises is the slowest client's: the slowest tier present,
        # training the average client's samples for the run's local epochs.
        tiers = {rec.tier for rec in self.fleet.clients}
        slowest = min((TIERS[t] for t in tiers), key=lambda p: p.flops_per_second)
        samples = int(np.mean(list(train_sizes.values()))) * self.cfg.local_epochs
        weights = {t: self.facts.weights[t] for t in self.targets}
        self.seconds = prunefl.seconds_per_weight(self.facts.layer_flops, weights, slowest, samples)
        self.base_seconds = prunefl.fixed_seconds(
            self.facts.total_flops,
            self.facts.dense_params,
            self.facts.layer_flops,
            weights,
            slowest,
            samples,
        )
        self.pending: dict[int, tuple[State, float]] = {}
        self.masks: Masks = {}
        self.reference = {f"{t}.weight": state[f"{t}.weight"] for t in self.targets}
        return state, {}

    def importance_layout(self, rnd: int) -> State | None:
        return self.reference if rnd + 1 in self.fleet.prune_rounds else None

    def extras(self, cid: int, rnd: int) -> dict[str, Any]:
        return {"importance": 1} if rnd and self.importance_layout(rnd) is not None else {}

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        return self.masks

    def observe(self, cid: int, reply: Reply, seconds: float) -> None:
        if reply.importance is not None:
            rest = float(reply.metrics.get("importance-rest", 0.0))
            self.pending[cid] = (reply.importance, rest)

    def before_round(self, rnd: int, state: State, global_masks: Masks) -> tuple[State, Masks]:
        if rnd not in self.fleet.prune_rounds or not self.pending:
            return state, global_masks
        replies = [self.pending[c] for c in sorted(self.pending)]
        summed = prunefl.summed_importance([imp for imp, _ in replies])
        state = apply_masks(state, self.masks)  # regrown weights start from zero
        layers = prunefl.readjust(
            {t: state[f"{t}.weight"] for t in self.targets},
            prunefl.as_layer_masks(self.masks, self.targets),
            {t: summed[f"{t}.weight"] for t in self.targets},
            self.seconds,
            self.base_seconds,
            base_importance=sum(rest for _, rest in replies),
        )
        self.masks = {f"{t}.weight": mask for t, mask in layers.items()}
        self.pending = {}
        return apply_masks(state, self.masks), dict(self.masks)

    def after_aggregate(self, rnd: int, state: State, global_masks: Masks) -> tuple[State, Masks]:
        return state, dict(self.masks)


class FedDSTPlan(BaselinePlan):
    """Sparse from the start; clients prune and regrow; the server re-prunes to the target."""

    keeps_own_masks = False
    may_move = True

    def start(self, state: State, train_sizes: dict[int, int]) -> tuple[State, Masks]:
        masks = magnitude_masks(state, dict.fromkeys(self.targets, self.cfg.prune_rate))
        # The cosine anneals to zero just after the last readjustment round.
        self.end = max(self.fleet.prune_rounds) + 1
        return apply_masks(state, masks), masks

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        return global_masks

    def extras(self, cid: int, rnd: int) -> dict[str, Any]:
        if rnd in self.fleet.prune_rounds:
            return {"readjust": feddst.readjust_ratio(rnd, self.end)}
        return {}

    def aggregation(self) -> dict[str, Any]:
        target = max(self.cfg.prune_rate, self.cfg.server_sparsity)
        return {"vote_threshold": ANY_VOTE, "target_sparsity": target}

    def after_aggregate(self, rnd: int, state: State, global_masks: Masks) -> tuple[State, Masks]:
        return apply_masks(state, global_masks), global_masks


class LotteryFLPlan(BaselinePlan):
    """Personal masks; the global model keeps every weight some client keeps."""

    def extras(self, cid: int, rnd: int) -> dict[str, Any]:
        return {"learn": 1} if rnd else {}

    def aggregation(self) -> dict[str, Any]:
        return {"vote_threshold": ANY_VOTE, "target_sparsity": self.cfg.server_sparsity or None}


class FedMPPlan(BaselinePlan):
    """A bandit per client picks its sub-model's ratio; structured sub-models cut on the server."""

    def start(self, state: State, train_sizes: dict[int, int]) -> tuple[State, Masks]:
        def fits(cid: int, ratio: float) -> bool:
            cost = self.facts.cost(apply_masks(state, self._cut(state, ratio)))
            limit = self.fleet.clients[cid].budget
            return within_budget(limit, cost.effective_flops, cost.nonzero_params)

        self.bandits = {
            rec.cid: fedmp.DiscountedUCB(fedmp.feasible_arms(fedmp.ARMS, partial(fits, rec.cid)))
            for rec in self.fleet.clients
        }
        self.played: dict[int, int] = {}
        return state, {}

    def _cut(self, state: State, ratio: float) -> Masks:
        if ratio <= 0.0:
            return {}
        return magnitude_masks(state, dict.fromkeys(self.targets, ratio), "structured")

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        bandit = self.bandits[cid]
        arm = bandit.best() if rnd == 0 else bandit.choose()
        self.played[cid] = arm
        return self._cut(state, bandit.arms[arm])

    def extras(self, cid: int, rnd: int) -> dict[str, Any]:
        return {"loss_delta": 1} if rnd else {}

    def observe(self, cid: int, reply: Reply, seconds: float) -> None:
        before = float(reply.metrics.get("loss-before", float("nan")))
        after = float(reply.metrics.get("loss-after", float("nan")))
        self.bandits[cid].update(self.played[cid], fedmp.reward(before, after, seconds))


PLANS: dict[str, type[BaselinePlan]] = {
    "prunefl": PruneFLPlan,
    "fedmp": FedMPPlan,
    "lotteryfl": LotteryFLPlan,
    "feddst": FedDSTPlan,
}


def make_plan(cfg: Config, fleet: Fleet) -> BaselinePlan | None:
    """The baseline's server plan, or None for the methods the round loop handles itself."""
    plan = PLANS.get(cfg.method)
    return plan(cfg, fleet) if plan is not None else None
