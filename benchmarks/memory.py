"""Memory of VGG-11 and ResNet-18 (3x32x32, 10 classes): dense, compact at 50% of each pruned
layer's channels, and the sparse storage of the same models at 50% unstructured sparsity.

    .venv/bin/python benchmarks/memory.py

prints the figures `docs/results.md` quotes (How memory is counted); they are counts from the
models' shapes, so they are the same on any machine.
"""

from __future__ import annotations

from fedrlprune.models import build_model
from fedrlprune.pruning import channel_groups, memory_bytes, sparse_bytes
from fedrlprune.pruning.compact import compact_model
from fedrlprune.pruning.masks import apply_masks, magnitude_masks, pruning_targets
from fedrlprune.training import get_state, set_state

SHAPE = (3, 32, 32)


def main() -> None:
    print("model     dense MB  compact MB (50% channels)  sparse storage MB (50% weights)")
    for name in ("vgg11", "resnet18"):
        model = build_model(name, SHAPE, 10)
        state = get_state(model)
        rates = dict.fromkeys(pruning_targets(model), 0.5)
        groups = channel_groups(model, SHAPE, list(rates))
        masks = magnitude_masks(state, rates, "structured", None, groups)
        dense = memory_bytes(model, SHAPE)
        set_state(model, apply_masks(state, masks))
        compact = memory_bytes(compact_model(model, masks, SHAPE), SHAPE)
        stored = sparse_bytes(state, magnitude_masks(state, rates))
        print(f"{name:9} {dense / 1e6:8.1f}  {compact / 1e6:10.1f}  {stored / 1e6:10.1f}")


if __name__ == "__main__":
    main()
