"""Pruning: methods and the shared cost accounting they report through."""

from fedrlprune.pruning.groups import ChannelGroup, channel_groups
from fedrlprune.pruning.masks import (
    MODES,
    MaskEnforcer,
    Masks,
    apply_masks,
    layer_sparsity,
    magnitude_masks,
    mask_model,
    masks_from_state,
    overall_sparsity,
    pruning_targets,
)
from fedrlprune.pruning.memory import memory_bytes, sparse_bytes
from fedrlprune.pruning.metrics import (
    ModelCost,
    classifier_name,
    count_nonzero,
    layer_flops,
    model_cost,
    prunable_layers,
    total_flops,
)

__all__ = [
    "MODES",
    "ChannelGroup",
    "MaskEnforcer",
    "Masks",
    "ModelCost",
    "apply_masks",
    "channel_groups",
    "classifier_name",
    "count_nonzero",
    "layer_flops",
    "layer_sparsity",
    "magnitude_masks",
    "mask_model",
    "masks_from_state",
    "memory_bytes",
    "model_cost",
    "overall_sparsity",
    "prunable_layers",
    "pruning_targets",
    "sparse_bytes",
    "total_flops",
]
