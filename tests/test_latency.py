"""Measured latency of deployed models: one measurement per model shape, compact when
structured, the dense model's shape (and speed) when not."""

from fedrlprune.experiments.latency import deployed_latency
from fedrlprune.models import build_model
from fedrlprune.pruning.groups import channel_groups
from fedrlprune.pruning.masks import magnitude_masks
from fedrlprune.training import get_state

SHAPE = (1, 28, 28)


def test_clients_share_a_measurement_per_model_shape_and_unstructured_runs_dense() -> None:
    model = build_model("cnn", SHAPE, 10)
    state = get_state(model)
    rates = {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5}
    groups = channel_groups(model, SHAPE, list(rates))
    half = magnitude_masks(state, rates, "structured", None, groups)
    dense, per = deployed_latency(model, state, {0: half, 1: half, 2: {}}, SHAPE, True, runs=5)
    assert per[0] == per[1] != per[2] and per[2] == dense > 0  # three clients, two shapes
    sparse = magnitude_masks(state, rates)
    dense, per = deployed_latency(model, state, {0: sparse, 1: {}}, SHAPE, False, runs=5)
    assert per == {0: dense, 1: dense}  # zeros inside dense shapes: the dense model's speed
