"""Device memory: weight bytes, peak activation bytes, and sparse storage bytes by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.models import build_model
from fedrlprune.pruning.memory import activation_bytes, memory_bytes, sparse_bytes, weight_bytes
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
