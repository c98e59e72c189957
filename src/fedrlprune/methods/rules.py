"""The client side of the fixed rules a learned policy must beat (`uniform`, `lamp`).

A rule sees each target layer counted in the units the mode prunes (single weights, or whole
output channels in structured mode) and says how many units of each layer to prune so the
model fits this step's budget. The masks then come from `MagnitudeRanking`, exactly as
`rl_prune`'s do, so a rule differs from `fedrlprune` only in where its rates come from.

The cost is counted as the pruning env counts it: unstructured, the dense model minus what the
pruned units hold, each layer's saved FLOPs rounded down (the server's own count rounds them to
the nearest, so a model that fits here fits there too); structured, what the compact model
costs, the inputs a removed channel frees in the layers that read it included
(pruning/cost.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedrlprune.devices import Budget, within_budget
from fedrlprune.federation.messages import Orders
from fedrlprune.methods.base import ClientData, Pruned
from fedrlprune.methods.budgeted import BudgetedPruning
from fedrlprune.pruning.cost import StructuredCost
from fedrlprune.pruning.masks import MagnitudeRanking, apply_masks
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.pruning.schedule import MAX_RATE
from fedrlprune.rl.env import LayerInfo, layer_infos
from fedrlprune.state import Masks, State

if TYPE_CHECKING:
    from fedrlprune.config import Config


@dataclass(frozen=True)
class LayerUnits:
    """One target layer as a rule counts it."""

    name: str
    size: int  # units: weights (unstructured) or output channels (structured)
    dead: int  # units the current mask already prunes (pruning is monotone within a step)
    unit_weights: int  # weights one unit holds
    flops: int  # the layer's dense FLOPs per sample

    @property
    def cap(self) -> int:
        """The most units a rule prunes: MAX_RATE of them (never all), or what is already gone."""
        return max(min(math.floor(MAX_RATE * self.size), self.size - 1), self.dead)

    def saved_flops(self, count: int) -> int:
        """FLOPs saved by pruning `count` units, rounded down (see the module's docstring)."""
        return self.flops * count // self.size


@dataclass(frozen=True)
class Account:
    """A client's target layers, its dense model's size and this step's budget."""

    layers: tuple[LayerUnits, ...]
    total_params: int
    total_flops: int
    budget: Budget
    compact: StructuredCost | None = None  # structured: what the compact model costs

    def cost(self, counts: Mapping[str, int]) -> tuple[int, int]:
        """(params, FLOPs) of the model with `counts[layer]` units of each layer pruned."""
        if self.compact is not None:
            return self.compact.at_counts(counts)
        params = self.total_params - sum(u.unit_weights * counts[u.name] for u in self.layers)
        flops = self.total_flops - sum(u.saved_flops(counts[u.name]) for u in self.layers)
        return params, flops

    def fits(self, counts: Mapping[str, int]) -> bool:
        """Whether the model pruned at `counts` is inside the budget (FLOPs and params both)."""
        params, flops = self.cost(counts)
        return within_budget(self.budget, flops, params)

    def dead(self) -> dict[str, int]:
        """The counts of the model as it stands: what the current mask prunes."""
        return {u.name: u.dead for u in self.layers}


def layer_units(state: State, masks: Masks, layers: list[LayerInfo], mode: str) -> list[LayerUnits]:
    """Each layer in `layers` counted in the units `mode` prunes, with what `masks` prunes: a
    channel is pruned when none of its weights is kept, as `MagnitudeRanking` decides."""
    out = []
    for layer in layers:
        shape = np.shape(state[f"{layer.name}.weight"])
        key = f"{layer.name}.weight"
        keep = masks[key] if key in masks else np.ones(shape, dtype=bool)
        if mode == "unstructured":
            size, kept, unit = layer.weights, int(np.count_nonzero(keep)), 1
        else:
            size = shape[0]
            kept = int(np.count_nonzero(np.reshape(keep, (size, -1)).any(axis=1)))
            unit = layer.weights // size
        out.append(LayerUnits(layer.name, size, size - kept, unit, layer.flops))
    return out


def exact_rate(count: int, size: int) -> float:
    """A rate at which `MagnitudeRanking` prunes exactly `count` of `size` units: count/size,
    nudged up where float rounding would make floor(rate * size) fall one short."""
    rate = count / size
    return rate if math.floor(rate * size) >= count else math.nextafter(rate, 1.0)


class FixedRule(BudgetedPruning):
    """`fedrlprune`'s pipeline with a fixed rule in place of the policy: no policy travels,
    nothing is learned, and the orders carry this step's budget alone."""

    @classmethod
    def counts(cls, state: State, masks: Masks, account: Account, mode: str) -> dict[str, int]:
        """Units of each layer to prune, those already pruned included (the rule)."""
        raise NotImplementedError

    @classmethod
    def prune(
        cls, cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders
    ) -> Pruned:
        """Prune to this step's budget at the rule's per-layer rates, by magnitude."""
        if orders.budget_params <= 0.0:
            return Pruned(state, masks)
        account = client_account(data, state, masks, cfg.mode, orders)
        counts = cls.counts(state, masks, account, cfg.mode)
        names = [u.name for u in account.layers]
        groups = data.groups(cfg.structured)
        ranking = MagnitudeRanking(state, names, cfg.mode, masks or None, groups)
        new = ranking.masks({u.name: exact_rate(counts[u.name], u.size) for u in account.layers})
        metrics = {f"rate/{u.name}": counts[u.name] / u.size for u in account.layers}
        return Pruned(apply_masks(state, new), new, metrics)


def client_account(
    data: ClientData, state: State, masks: Masks, mode: str, orders: Orders
) -> Account:
    """The account of a client's model under `masks` with the budget in `orders` (the layers'
    FLOPs are counted once per client, as `fedrlprune` counts them)."""
    if "layers" not in data.cache:
        data.cache["layers"] = layer_infos(data.model, data.input_shape, data.targets)
        data.cache["total_flops"] = total_flops(data.model, data.input_shape)
    return Account(
        tuple(layer_units(state, masks, data.cache["layers"], mode)),
        total_params=sum(p.numel() for p in data.model.parameters()),
        total_flops=data.cache["total_flops"],
        budget=Budget(orders.budget_flops, orders.budget_params),
        compact=data.structured_cost() if mode == "structured" else None,
    )
