"""Pruning: methods and the shared cost accounting they report through."""

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
    "ModelCost",
    "classifier_name",
    "count_nonzero",
    "layer_flops",
    "model_cost",
    "prunable_layers",
    "total_flops",
]
