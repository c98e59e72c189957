"""What the server knows of each client: its device tier, budget, pruning target and mask.

Pure bookkeeping, no Flower and no method: the methods ask it which tier and budget each client
has and which rounds prune, and the server asks what each client's deployed model (the global
model under the client's own mask) costs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from fedrlprune.devices import TIERS, Budget, assign_tiers, budget, over_budget
from fedrlprune.errors import FedRLPruneError
from fedrlprune.pruning.compact import compact_model, pruned_channels
from fedrlprune.pruning.groups import ChannelGroup, channel_groups
from fedrlprune.pruning.masks import apply_masks, pruning_targets
from fedrlprune.pruning.memory import (
    Footprint,
    activation_bytes,
    compact_footprint,
    kept_weight_limit,
    sparse_footprint,
)
from fedrlprune.pruning.metrics import (
    ModelCost,
    chained_cost,
    layer_flops,
    state_cost,
    total_flops,
)
from fedrlprune.pruning.schedule import pruning_rounds
from fedrlprune.state import Masks, State
from fedrlprune.training import set_state
from fedrlprune.training_plan import TrainingFootprint, fit_training

if TYPE_CHECKING:
    from fedrlprune.config import Config


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
    groups: tuple[ChannelGroup, ...] | None  # structured: coupled channels, cut together
    template: nn.Module  # a copy of the model: the architecture a footprint is measured on
    input_shape: tuple[int, ...]
    itemsize: int  # bytes of one parameter
    buffer_bytes: int  # BatchNorm statistics and the like: inference reads them too
    activations: int  # the dense model's peak activation bytes at batch 1, a pruned one's most

    @classmethod
    def of(
        cls,
        model: nn.Module,
        input_shape: tuple[int, ...],
        skip: list[str] | None,
        structured: bool = False,
    ) -> ModelFacts:
        named = dict(model.named_parameters())
        targets = tuple(pruning_targets(model, skip, input_shape))
        first = next(iter(named.values()), None)
        return cls(
            params=tuple(named),
            targets=targets,
            weights={t: named[f"{t}.weight"].numel() for t in targets},
            layer_flops=layer_flops(model, input_shape),
            total_flops=total_flops(model, input_shape),
            dense_params=sum(p.numel() for p in named.values()),
            structured=structured,
            groups=tuple(channel_groups(model, input_shape, targets)) if structured else None,
            template=copy.deepcopy(model),
            input_shape=input_shape,
            itemsize=first.element_size() if first is not None else 4,
            buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
            activations=activation_bytes(model, input_shape),
        )

    def cost(self, state: State) -> ModelCost:
        params = {p: state[p] for p in self.params}
        count = chained_cost if self.structured else state_cost
        return count(params, self.layer_flops, self.total_flops)

    def footprint(self, state: State, masks: Masks) -> Footprint:
        """What a device budget checks of `state` under `masks`: the compact model it exports
        when structured (its parameters, FLOPs and memory); when not, the sparse storage."""
        deployed = apply_masks(state, masks)
        if not self.structured:
            flops = self.cost(deployed).effective_flops
            return sparse_footprint(deployed, self.params, masks, flops, self.activations)
        set_state(self.template, deployed)
        model = compact_model(self.template, masks, self.input_shape) if masks else self.template
        return compact_footprint(model, self.input_shape)

    def trained_model(self, state: State, masks: Masks, compact: bool) -> nn.Module:
        """The model a client trains under `masks`, as `federation/client.local_training` picks
        it: the compact sub-model where the method trains compact and the masks remove whole
        channels, else the masked dense model (a dense runtime holds and multiplies it all)."""
        set_state(self.template, apply_masks(state, masks))
        if not (self.structured and compact and masks):
            return self.template
        if not any(pruned_channels(masks, self.template).values()):
            return self.template
        try:
            return compact_model(self.template, masks, self.input_shape)
        except FedRLPruneError:
            return self.template

    def pruning_budget(self, final: Budget) -> Budget:
        """`final` in the units pruning counts (kept weights, FLOPs), its memory limit and (when
        unstructured) the sparse storage folded into `max_params`, so a model inside it is
        inside `final`. Memory is bounded by the dense model's activations and buffers, which
        pruning only shrinks: safe, but where activations dominate (VGG-11 on the MCU) it asks
        for more pruning than the compact model needs; the final check measures the real one."""
        room = final.max_memory - self.buffer_bytes - self.activations
        if self.structured:
            limit = min(final.max_params, room / self.itemsize)
        else:
            pruned = sum(self.weights.values())
            dense = self.dense_params - pruned  # stored dense: biases, layers left unpruned
            byte_limit = min(final.max_params * self.itemsize, room)
            kept = kept_weight_limit(
                byte_limit, dense * self.itemsize, list(self.weights.values()), self.itemsize
            )
            limit = min(final.max_params, dense + kept)
        # at least one parameter: the limits must stay positive (an out-of-reach budget is
        # reported before round 1 by the server)
        return Budget(final.max_flops, max(limit, 1.0))

    def sparsity(self, state: State) -> float:
        """Share of zero weights over the pruned layers (0 when nothing is pruned)."""
        total = sum(self.weights.values())
        zeros = sum(
            int(np.size(state[f"{t}.weight"]) - np.count_nonzero(state[f"{t}.weight"]))
            for t in self.targets
        )
        return zeros / total if total else 0.0


@dataclass
class ClientRecord:
    cid: int
    tier: str
    budget: Budget
    masks: Masks | None = None  # its latest mask; None until it has pruned
    seen_rounds: list[int] = field(default_factory=list)


class Fleet:
    """Every client of the run: its tier, budget, latest mask and the rounds it trained."""

    def __init__(self, cfg: Config, facts: ModelFacts) -> None:
        self.cfg = cfg
        self.facts = facts
        self.prune_rounds = pruning_rounds(
            cfg.rounds, cfg.prune_start, cfg.prune_until, cfg.prune_every
        )
        tiers = assign_tiers(cfg.clients, cfg.device_mix, cfg.seed)
        self.clients = [self._record(cid, tier) for cid, tier in enumerate(tiers)]
        order = np.random.default_rng(cfg.seed + 17).permutation(cfg.clients)
        tier_out = {c for c, tier in enumerate(tiers) if tier == cfg.heldout_tier}
        others = [int(c) for c in order if c not in tier_out]
        self.heldout = tier_out | set(others[: cfg.heldout_clients])
        # `rl_policy = "central"`: the one client that trains the agent (the first not held out).
        self.trainer = min((c for c in range(cfg.clients) if c not in self.heldout), default=0)

    def _record(self, cid: int, tier: str) -> ClientRecord:
        limit = budget(TIERS[tier], self.facts.total_flops, self.facts.dense_params)
        return ClientRecord(cid, tier, limit)

    def step(self, rnd: int) -> int:
        """1-based pruning step of round `rnd`; 0 when the round does not prune."""
        return self.prune_rounds.index(rnd) + 1 if rnd in self.prune_rounds else 0

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

    def pruning_budget(self, cid: int) -> Budget:
        """Client `cid`'s final budget in the units pruning counts (`ModelFacts.pruning_budget`)."""
        return self.facts.pruning_budget(self.clients[cid].budget)

    def fits(self, cid: int, state: State, masks: Masks) -> bool:
        """Whether `state` under `masks` fits client `cid`'s budget, as the summary checks it."""
        fp = self.facts.footprint(state, masks)
        return not over_budget(self.clients[cid].budget, fp.flops, fp.params, fp.memory_bytes)

    def training(
        self, cid: int, state: State, masks: Masks, compact: bool, core: bool
    ) -> TrainingFootprint:
        """What client `cid`'s round under `masks` asked of its device, by the same rule the
        client followed (`training_plan.fit_training`): the server checks, it does not trust."""
        model = self.facts.trained_model(state, masks, compact)
        shape, limit, cfg = self.facts.input_shape, self.clients[cid].budget.max_memory, self.cfg
        plan = fit_training(model, shape, cfg.batch_size, cfg.momentum, limit, core)
        params = sum(p.numel() for p in model.parameters())
        return TrainingFootprint(params, total_flops(model, shape), plan)

    def report(self, cid: int, deployed: State, fp: Footprint) -> dict[str, Any]:
        """Per-client figures for summary.json: tier, cost, budget and whether it fits; `fp` is
        the deployed model's footprint, which the budget checks (`ModelFacts.footprint`)."""
        rec = self.clients[cid]
        cost = self.facts.cost(deployed)
        missed = over_budget(rec.budget, fp.flops, fp.params, fp.memory_bytes)
        if self.facts.structured:
            checked = {"compact_params": int(fp.params), "compact_flops": fp.flops}
        else:
            stored = round(fp.params * self.facts.itemsize)
            checked = {"sparse_bytes": stored, "theoretical_flops": fp.flops}
        return {
            "client": cid,
            "tier": rec.tier,
            "heldout": cid in self.heldout,
            "rounds_trained": len(rec.seen_rounds),
            "nonzero_params": cost.nonzero_params,
            "effective_flops": cost.effective_flops,
            "param_reduction": cost.param_reduction,
            "flops_reduction": cost.flops_reduction,
            **checked,
            "memory_bytes": fp.memory_bytes,
            "budget_params": rec.budget.max_params,
            "budget_flops": rec.budget.max_flops,
            "budget_memory_bytes": rec.budget.max_memory,
            "over_budget": missed,
            "within_budget": not missed,
        }
