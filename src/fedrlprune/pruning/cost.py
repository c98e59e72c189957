"""What a structured choice costs once compacted: parameters and FLOPs, by arithmetic.

Removing an output channel removes its slice of the layer, its bias and BatchNorm entries, and
the input columns it fed in every layer that reads it. Counting the masked weights alone misses
the last part, so a model pruned to a budget counted that way ends far smaller than the budget
(a microcontroller's FedAvg CNN about ten times smaller). The pruning env and the fixed rules
ask this for every candidate rate, so it is a sum over layers, not a compaction;
`tests/test_cost.py` checks it against `compact_model` on every model of the zoo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedrlprune.pruning.groups import ChannelGroup
from fedrlprune.pruning.metrics import layer_flops, prunable_layers, total_flops


@dataclass(frozen=True)
class LayerSize:
    """One conv/linear layer's dense weights and FLOPs, output channels and input columns."""

    weights: int
    flops: int
    out: int
    inputs: int


@dataclass(frozen=True)
class StructuredCost:
    """The compact model's (params, FLOPs) for any number of channels removed per group."""

    total_params: int
    total_flops: int
    layers: Mapping[str, LayerSize]
    groups: tuple[ChannelGroup, ...]

    @classmethod
    def of(
        cls, model: nn.Module, input_shape: tuple[int, ...], groups: Sequence[ChannelGroup]
    ) -> StructuredCost:
        flops = layer_flops(model, input_shape)
        layers = {
            name: LayerSize(
                mod.weight.numel(),
                flops[name],
                mod.weight.shape[0],
                mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels,
            )
            for name, mod in prunable_layers(model).items()
        }
        params = sum(p.numel() for p in model.parameters())
        return cls(params, total_flops(model, input_shape), layers, tuple(groups))

    def cost(self, removed: Sequence[int]) -> tuple[int, int]:
        """(params, FLOPs) with `removed[g]` channels of group g gone (groups in order)."""
        out_gone = dict.fromkeys(self.layers, 0)
        in_gone = dict.fromkeys(self.layers, 0)
        params, flops = self.total_params, self.total_flops
        for group, gone in zip(self.groups, removed, strict=True):
            for layer in group.layers:
                out_gone[layer] = gone
            for key, source in group.readers.items():
                in_gone[key.removesuffix(".weight")] += gone * _columns(source, group.size)
            params -= gone * (len(group.members) - len(group.layers))  # biases, BatchNorm
        for name, size in self.layers.items():
            in_kept = 1 - min(in_gone[name], size.inputs) / size.inputs
            kept = (1 - out_gone[name] / size.out) * in_kept
            params -= round(size.weights * (1 - kept))
            flops -= round(size.flops * (1 - kept))
        return params, flops

    def at_rates(self, rates: Mapping[str, float]) -> tuple[int, int]:
        """`at_counts` with floor(rate x channels) of each named layer's channels removed, as
        `MagnitudeRanking` removes them."""
        return self.at_counts({n: math.floor(r * self.layers[n].out) for n, r in rates.items()})

    def at_counts(self, counts: Mapping[str, int]) -> tuple[int, int]:
        """`cost` with each group's channels removed as `counts` gives for its first layer
        (layers without a group, or not first in theirs, are ignored, as the masks ignore them)."""
        return self.cost([counts.get(group.layers[0], 0) for group in self.groups])


def _columns(source: np.ndarray, channels: int) -> int:
    """Input columns one channel feeds in a reader (`ChannelGroup.readers`): 1 for a conv, the
    spatial size for a linear layer after a flatten."""
    return int(np.count_nonzero(source >= 0)) // channels
