"""Device memory: weight bytes, peak activation bytes, and sparse storage bytes by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.models import build_model
from fedrlprune.pruning.memory import (
    activation_bytes,
    compact_footprint,
    kept_weight_limit,
    masked_bytes,
    memory_bytes,
    sparse_bytes,
    sparse_footprint,
    weight_bytes,
)
from fedrlprune.pruning.payload import encode, encoded_bytes


class Residual(nn.Module):
    """x -> b(a(x)) + x: the input must stay alive across both convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 1, bias=False)
        self.b = nn.Conv2d(2, 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + x


def test_mlp_weights_and_peak_by_hand() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert weight_bytes(model) == (4 * 8 + 8 + 8 * 2 + 2) * 4 == 232
    # Peak at the ReLU: its 8-float input and 8-float output (the 4-float input is done).
    assert activation_bytes(model, (4,)) == (8 + 8) * 4
    assert memory_bytes(model, (4,)) == 232 + 64


def test_in_place_ops_and_views_add_nothing() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 1))
    # Flatten is a view of the 6-float input; the in-place ReLU reuses the 5-float output.
    assert activation_bytes(model, (2, 3)) == (6 + 5) * 4


def test_residual_input_stays_alive() -> None:
    one = 2 * 3 * 3 * 4  # bytes of one (2, 3, 3) float tensor
    assert activation_bytes(Residual(), (2, 3, 3)) == 3 * one  # x, a(x), b(a(x))


def test_buffers_count_as_weights_and_mode_is_restored() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3)).train()
    # conv 3 + 3, BatchNorm weight, bias, running mean, var (3 floats each), num_batches (int64)
    assert weight_bytes(model) == (6 + 12) * 4 + 8
    before = model[1].running_mean.clone()
    assert activation_bytes(model, (1, 2, 2)) == (12 + 12) * 4
    assert model.training and torch.equal(model[1].running_mean, before)


def test_vgg11_peak_is_first_conv_output_and_its_batchnorm() -> None:
    model = build_model("vgg11", (3, 32, 32), 10)
    assert activation_bytes(model, (3, 32, 32)) == 2 * 64 * 32 * 32 * 4


def test_wrong_input_shape_is_config_error() -> None:
    with pytest.raises(ConfigError, match="shape"):
        memory_bytes(nn.Linear(4, 2), (5,))


def test_sparse_bytes_by_hand_and_as_payload_encodes() -> None:
    state = {
        "few.weight": np.ones((10, 10), dtype=np.float32),
        "many.weight": np.ones((10, 10), dtype=np.float32),
        "dense.bias": np.ones(10, dtype=np.float32),
    }
    few = np.zeros((10, 10), dtype=bool)
    few.ravel()[[3, 50, 99]] = True
    many = np.zeros((10, 10), dtype=bool)
    many.ravel()[:50] = True
    masks = {"few.weight": few, "many.weight": many}
    # 3 uint8 indices (< 13 bitmask bytes) + 3 values; 13 bitmask bytes + 50 values; 10 dense.
    want = (3 + 3 * 4) + (13 + 50 * 4) + 10 * 4
    assert sparse_bytes(state, masks) == want == encoded_bytes(encode(state, masks))
    assert sparse_bytes(state, {}) == (100 + 100 + 10) * 4
    with pytest.raises(ConfigError, match=r"other\.weight"):
        sparse_bytes(state, {"other.weight": few})


def test_masked_bytes_take_the_smaller_of_indices_and_bitmask() -> None:
    assert masked_bytes(3, 100, 4) == 3 * 4 + 3  # 3 uint8 indices < 13 bitmask bytes
    assert masked_bytes(50, 100, 4) == 50 * 4 + 13
    assert masked_bytes(10, 70_000, 4) == 10 * 4 + 10 * 4  # uint32 indices past 65,535


@pytest.mark.parametrize("limit", [600, 2_000, 20_000])
def test_kept_weight_limit_is_safe_however_the_kept_weights_are_shared(limit: int) -> None:
    sizes = [100, 1_000]
    most = int(kept_weight_limit(limit, 40, sizes, 4))
    assert most >= 0
    for first in range(0, min(most, sizes[0]) + 1):  # every split of `most` kept weights
        second = most - first
        if second <= sizes[1]:
            stored = 40 + masked_bytes(first, 100, 4) + masked_bytes(second, 1_000, 4)
            assert stored <= limit, (first, second)
    assert kept_weight_limit(10, 40, sizes, 4) < 0  # the dense part alone is over


def test_sparse_footprint_counts_storage_buffers_and_activations() -> None:
    state = {"w": np.ones((10, 10), np.float32), "b": np.ones(10, np.float32)}
    state["stat"] = np.zeros(3, np.float32)  # a buffer: stored dense, not a parameter
    keep = np.zeros((10, 10), bool)
    keep.ravel()[:50] = True
    fp = sparse_footprint(state, ["w", "b"], {"w": keep}, flops=123, activations=1_000)
    stored = (50 * 4 + 13) + 10 * 4  # values + bitmask, and the dense bias
    assert fp.params == stored / 4  # the dense parameters those bytes would hold
    assert fp.flops == 123
    assert fp.memory_bytes == stored + 3 * 4 + 1_000


def test_compact_footprint_is_the_models_own_figures() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    fp = compact_footprint(model, (4,))
    assert (fp.params, fp.flops, fp.memory_bytes) == (58, 2 * (4 * 8 + 8 * 2), 232 + 64)
