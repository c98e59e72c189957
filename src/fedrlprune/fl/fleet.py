"""What the server knows of each client: its device tier, budget, pruning target and mask.

Pure bookkeeping, no Flower: the server app asks it what each client should do this round and
what each client's deployed model (the global model under the client's own mask) costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from fedrlprune.config import Config
from fedrlprune.devices import TIERS, Budget, assign_tiers, budget, within_budget
from fedrlprune.pruning.masks import apply_masks, pruning_targets
from fedrlprune.pruning.metrics import (
    ModelCost,
    chained_cost,
    layer_flops,
    state_cost,
    total_flops,
)
from fedrlprune.pruning.schedule import budget_rate, pruning_rounds, scheduled_rate
from fedrlprune.state import Masks, State


@dataclass(frozen=True)
class ModelFacts:
    """What does not change during a run: counted once from the initial model."""

    params: tuple[str, ...]  # parameter names (state entries that are not buffers)
    targets: tuple[str, ...]  # layers that get pruned
    weights: dict[str, int]  # weight count of each target layer
    layer_flops: dict[str, int]  # dense FLOPs per sample of every prunable layer
    total_flops: int
    dense_params: int
    structured: bool  # structured masks: count the cost of the compact model

    @classmethod
    def of(
        cls,
        model: nn.Module,
        input_shape: tuple[int, ...],
        skip: list[str] | None,
        structured: bool = False,
    ) -> ModelFacts:
        named = dict(model.named_parameters())
        targets = tuple(pruning_targets(model, skip))
        return cls(
            params=tuple(named),
            targets=targets,
            weights={t: named[f"{t}.weight"].numel() for t in targets},
            layer_flops=layer_flops(model, input_shape),
            total_flops=total_flops(model, input_shape),
            dense_params=sum(p.numel() for p in named.values()),
            structured=structured,
        )

    def cost(self, state: State) -> ModelCost:
        params = {p: state[p] for p in self.params}
        count = chained_cost if self.structured else state_cost
        return count(params, self.layer_flops, self.total_flops)


@dataclass
class ClientRecord:
    cid: int
    tier: str
    budget: Budget
    final_rate: float  # the layer sparsity this client prunes toward
    masks: Masks | None = None  # its latest mask; None until it has pruned
    seen_rounds: list[int] = field(default_factory=list)


class Fleet:
    """Every client of the run, with the pruning plan the method gives each of them."""

    def __init__(self, cfg: Config, facts: ModelFacts) -> None:
        self.cfg = cfg
        self.facts = facts
        self.prune_rounds = pruning_rounds(
            cfg.rounds, cfg.prune_start, cfg.prune_until, cfg.prune_every
        )
        tiers = assign_tiers(cfg.clients, cfg.device_mix, cfg.seed)
        self.clients = [self._record(cid, tier) for cid, tier in enumerate(tiers)]
        order = np.random.default_rng(cfg.seed + 17).permutation(cfg.clients)
        self.heldout = {int(c) for c in order[: cfg.heldout_clients]}
        # `rl_policy = "central"`: the one client that trains the agent (the first not held out).
        self.trainer = min((c for c in range(cfg.clients) if c not in self.heldout), default=0)

    def _record(self, cid: int, tier: str) -> ClientRecord:
        limit = budget(TIERS[tier], self.facts.total_flops, self.facts.dense_params)
        rate = 0.0
        if self.cfg.method == "magnitude":
            rate = self.cfg.prune_rate
            if self.cfg.respect_budgets:
                need = budget_rate(
                    self.facts.weights,
                    self.facts.layer_flops,
                    self.facts.dense_params,
                    self.facts.total_flops,
                    limit,
                )
                rate = max(rate, need)
        return ClientRecord(cid, tier, limit, rate)

    def rate_now(self, cid: int, rnd: int) -> float:
        """The layer sparsity client `cid` prunes to this round; 0.0 when it does not prune."""
        final = self.clients[cid].final_rate
        if final == 0.0 or rnd not in self.prune_rounds:
            return 0.0
        step = self.prune_rounds.index(rnd) + 1
        return scheduled_rate(final, step, len(self.prune_rounds))

    def step(self, rnd: int) -> int:
        """1-based pruning step of round `rnd`; 0 when the round does not prune."""
        return self.prune_rounds.index(rnd) + 1 if rnd in self.prune_rounds else 0

    def budget_now(self, cid: int, step: int) -> Budget:
        """The budget at pruning step `step`: from the dense model toward the client's budget
        along the same cubic schedule as `magnitude`, so pruning stays progressive."""
        final, frac = self.clients[cid].budget, scheduled_rate(1.0, step, len(self.prune_rounds))
        return Budget(
            self.facts.total_flops - frac * (self.facts.total_flops - final.max_flops),
            self.facts.dense_params - frac * (self.facts.dense_params - final.max_params),
        )

    def rl_extras(self, cid: int, step: int, learn: bool) -> dict[str, float | int]:
        """What a client needs to run its pruning MDP at step `step` (final budget when 0)."""
        steps = len(self.prune_rounds)
        limit = self.budget_now(cid, step or steps)
        profile = TIERS[self.clients[cid].tier]
        eps = np.linspace(self.cfg.rl_eps_start, self.cfg.rl_eps_end, steps + 1)
        return {
            "budget_flops": limit.max_flops,
            "budget_params": limit.max_params,
            "flops_share": profile.flops_budget,
            "params_share": profile.params_budget,
            "progress": (step or steps) / steps,
            "rate_scale": scheduled_rate(1.0, step or steps, steps),
            "eps_start": float(eps[max(step, 1) - 1]),
            "eps_end": float(eps[max(step, 1)]),
            "learn": int(learn and cid not in self.heldout and self._trains_policy(cid)),
        }

    def _trains_policy(self, cid: int) -> bool:
        """Whether `cid` trains the agent: everyone, except under `rl_policy = "central"`."""
        return self.cfg.rl_policy != "central" or cid == self.trainer

    def masks_for(self, cid: int, global_masks: Masks, rnd: int = 0) -> Masks:
        """The mask client `cid` trains under in round `rnd`: its own, or the global one for a
        client that has not pruned yet. With `regrow`, a `fedrlprune` client gets the global
        mask in pruning rounds, so its policy re-prunes from every weight the federation kept
        and a weight it pruned too early can come back."""
        own = self.clients[cid].masks
        if own is None or (self.cfg.method == "fedrlprune" and self.cfg.regrow and self.step(rnd)):
            return global_masks
        return own

    def core_masks(self) -> Masks:
        """The weights every client that has pruned keeps (the intersection of their masks):
        the sub-network all of them can train, and about what the smallest device deploys."""
        masks = [c.masks for c in self.clients if c.masks is not None]
        keys = dict.fromkeys(key for m in masks for key in m)  # no mask for a key: keeps it all
        return {key: np.logical_and.reduce([m[key] for m in masks if key in m]) for key in keys}

    def deploy_masks(self, cid: int, global_masks: Masks) -> Masks:
        """The global model's mask and the client's own together: what a client deploys is the
        global model (itself sparse under the global mask) under its own mask."""
        own = self.clients[cid].masks or {}
        out: Masks = dict(global_masks)
        for key, mask in own.items():
            out[key] = mask & global_masks[key] if key in global_masks else mask
        return out

    def deployed(self, cid: int, state: State, global_masks: Masks) -> State:
        """The model client `cid` runs: the global model under its own mask."""
        return apply_masks(state, self.deploy_masks(cid, global_masks))

    def fits_final(self, cid: int, state: State, masks: Masks) -> bool:
        """Whether client `cid` has pruned and `state` under `masks` (its deployment masks)
        fits its final budget."""
        if self.clients[cid].masks is None:
            return False
        cost = self.facts.cost(apply_masks(state, masks))
        return within_budget(self.clients[cid].budget, cost.effective_flops, cost.nonzero_params)

    def report(self, cid: int, deployed: State) -> dict[str, Any]:
        """Per-client figures for summary.json: tier, cost, budget and whether it fits."""
        rec = self.clients[cid]
        cost = self.facts.cost(deployed)
        return {
            "client": cid,
            "tier": rec.tier,
            "heldout": cid in self.heldout,
            "rounds_trained": len(rec.seen_rounds),
            "nonzero_params": cost.nonzero_params,
            "effective_flops": cost.effective_flops,
            "param_reduction": cost.param_reduction,
            "flops_reduction": cost.flops_reduction,
            "budget_params": rec.budget.max_params,
            "budget_flops": rec.budget.max_flops,
            "within_budget": within_budget(rec.budget, cost.effective_flops, cost.nonzero_params),
        }
