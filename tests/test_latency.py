"""Measured latency of deployed models: one measurement per model shape, compact when
structured, the dense model's shape (and speed) when not; a speed-up within the noise says so."""

from fedrlprune.experiments.latency import deployed_latency, latency_fields
from fedrlprune.models import build_model
from fedrlprune.pruning.compact import Timing
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
    assert per[0] == per[1] != per[2] and per[2] == dense  # three clients, two shapes
    assert dense.median > 0 and dense.iqr >= 0
    sparse = magnitude_masks(state, rates)
    dense, per = deployed_latency(model, state, {0: sparse, 1: {}}, SHAPE, False, runs=5)
    assert per == {0: dense, 1: dense}  # zeros inside dense shapes: the dense model's speed


def test_a_speedup_within_the_timings_spread_is_marked_as_noise() -> None:
    dense = Timing(median=0.010, iqr=0.002)  # ms: a model that runs in microseconds
    fields = latency_fields(dense, Timing(median=0.008, iqr=0.001))  # 1.25x, gap 0.002 < 0.003
    assert fields["latency_speedup"] == 1.25 and fields["latency_within_noise"]
    clear = latency_fields(dense, Timing(median=0.004, iqr=0.001))  # 2.5x, gap 0.006 > 0.003
    assert clear == {"latency_ms": 0.004, "latency_speedup": 2.5, "latency_within_noise": False}
    assert latency_fields(dense, dense)["latency_within_noise"]  # one shared measurement
