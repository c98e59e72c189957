"""The arithmetic cost of a structured choice equals the compacted model's, on every model."""

import numpy as np
import pytest
import torch

from fedrlprune.models import build_model
from fedrlprune.pruning.compact import compact_model
from fedrlprune.pruning.cost import StructuredCost
from fedrlprune.pruning.groups import channel_groups
from fedrlprune.pruning.masks import MagnitudeRanking, pruning_targets
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.training import get_state

SHAPES = {"lenet5": (1, 28, 28), "cnn": (1, 28, 28), "mlp": (64,), "vgg11": (3, 32, 32),
          "resnet18": (3, 32, 32)}  # fmt: skip


@pytest.mark.parametrize("name", list(SHAPES))
def test_cost_matches_the_compact_model(name: str) -> None:
    torch.manual_seed(0)
    shape = SHAPES[name]
    model = build_model(name, shape, 10)
    targets = pruning_targets(model, None)
    groups = channel_groups(model, shape, targets)
    counter = StructuredCost.of(model, shape, groups)
    state = get_state(model)
    rng = np.random.default_rng(0)
    rates = {t: float(rng.choice([0.0, 0.3, 0.5, 0.75])) for t in targets}
    masks = MagnitudeRanking(state, targets, "structured", None, groups).masks(rates)
    removed = [int((~g.alive(state, masks)).sum()) for g in groups]
    compact = compact_model(model, masks, shape)
    params = sum(p.numel() for p in compact.parameters())
    assert counter.cost(removed) == (params, total_flops(compact, shape))
    assert counter.cost([0] * len(groups)) == (
        sum(p.numel() for p in model.parameters()),
        total_flops(model, shape),
    )
