"""Compact sub-model training: SGD on the compact model, expanded back, equals SGD on the masked
dense model with its mask enforced (the BatchNorm statistics of removed channels excepted)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedrlprune.federation.client import core_within
from fedrlprune.models import build_model
from fedrlprune.pruning.groups import channel_groups
from fedrlprune.pruning.masks import (
    MaskEnforcer,
    apply_masks,
    magnitude_masks,
    mask_model,
    pruning_targets,
)
from fedrlprune.pruning.submodel import SubModel, expand, extract, to_compact
from fedrlprune.state import Masks, State
from fedrlprune.training import get_state, train

MNIST = (1, 28, 28)


class SmallBN(nn.Module):
    """A user's small CNN: conv-BatchNorm pairs, a residual addition, a BatchNorm1d hidden layer."""

    def __init__(self, input_shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(input_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc, self.bn3 = nn.Linear(8, 12), nn.BatchNorm1d(12)
        self.head = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(y + self.bn2(self.conv2(y))).mean((2, 3))
        return self.head(F.relu(self.bn3(self.fc(y))))


SHAPES = {
    "lenet5": MNIST,
    "cnn": MNIST,
    "mlp": MNIST,
    "vgg11": (3, 32, 32),
    "resnet18": (3, 8, 8),
    "user": (3, 8, 8),
}


def pruned_model(name: str, rate: float = 0.5) -> tuple[nn.Module, Masks]:
    """The model with trained-looking BatchNorms, and structured masks cut per channel group."""
    shape = SHAPES[name]
    torch.manual_seed(0)
    model = SmallBN(shape, 10) if name == "user" else build_model(name, shape, 10)
    model.double()  # float64: the two ways must agree to rounding, not to float32's noise
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.5)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
    targets = pruning_targets(model)
    groups = channel_groups(model, shape, targets)
    masks = magnitude_masks(
        get_state(model), dict.fromkeys(targets, rate), "structured", None, groups
    )
    mask_model(model, masks)
    return model, masks


def batches(name: str, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, *SHAPES[name], generator=gen, dtype=torch.float64)
    return x, torch.randint(0, 10, (n,), generator=gen)


def sgd(model: nn.Module, masks: Masks, name: str, **options: object) -> None:
    """Two steps (8 samples, batches of 4) with the mask enforced, the same order every call."""
    x, y = batches(name)
    enforcer = MaskEnforcer(model, masks)
    train(model, x, y, epochs=1, batch_size=4, lr=0.1, seed=3, hook=enforcer, **options)


def kept(index: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> np.ndarray:
    """True on the dense entries the sub-model holds."""
    region = np.zeros(shape, dtype=bool)
    region[np.ix_(*index)] = True
    return region


def both_ways(name: str, **options: object) -> tuple[SubModel, State, State, State]:
    """(sub-model, received state, masked dense result, compact result expanded)."""
    model, masks = pruned_model(name)
    received = get_state(model)
    sub = extract(model, masks, SHAPES[name])
    sgd(model, masks, name, **options)
    compact_masks = to_compact(masks, sub.index)
    sgd(sub.model, compact_masks, name, **options | _compact_core(options, sub))
    expanded = expand(get_state(sub.model), sub.index, apply_masks(received, masks))
    return sub, received, get_state(model), expanded


def _compact_core(options: dict, sub: SubModel) -> dict:
    core = options.get("core")
    return {} if core is None else {"core": to_compact(core, sub.index)}


def assert_equivalent(name: str, sub: SubModel, received: State, dense: State, got: State) -> None:
    params = {key for key, _ in sub.model.named_parameters()}
    for key, value in dense.items():
        region = kept(sub.index[key], value.shape)
        np.testing.assert_allclose(
            got[key][region], value[region], rtol=1e-9, atol=1e-12, err_msg=key
        )
        outside = dense if key in params else received  # removed channels' BN stats: as received
        np.testing.assert_array_equal(got[key][~region], outside[key][~region], err_msg=key)
    assert any(not np.allclose(got[k], received[k]) for k in params), "training changed nothing"


@pytest.mark.parametrize("name", SHAPES)
def test_compact_sgd_expanded_equals_masked_dense_sgd(name: str) -> None:
    sub, received, dense, got = both_ways(name)
    dense_size = sum(v.size for v in received.values())
    assert sum(v.numel() for v in sub.model.state_dict().values()) < 0.6 * dense_size
    assert_equivalent(name, sub, received, dense, got)


@pytest.mark.parametrize("name", ["cnn", "user"])
def test_momentum_and_weight_decay_match_on_every_entry_the_sub_model_holds(name: str) -> None:
    sub, received, dense, got = both_ways(name, momentum=0.9, weight_decay=0.01)
    for key, value in dense.items():
        region = kept(sub.index[key], value.shape)
        np.testing.assert_allclose(
            got[key][region], value[region], rtol=1e-9, atol=1e-12, err_msg=key
        )
        np.testing.assert_array_equal(got[key][~region], received[key][~region], err_msg=key)
    # Masked training decays the next layer's input columns of a removed channel (zero
    # gradient, but weight decay): the one difference in the parameters, and it computes nothing.
    layer = "conv2.weight"
    removed = ~kept(sub.index[layer], dense[layer].shape) & (received[layer] != 0)
    assert removed.any()
    assert (np.abs(dense[layer][removed]) < np.abs(received[layer][removed])).all()


def test_the_core_trained_beside_the_model_maps_into_compact_coordinates() -> None:
    model, masks = pruned_model("user")
    groups = channel_groups(model, SHAPES["user"], pruning_targets(model))
    state = get_state(model)
    core = core_within(magnitude_masks(state, {"conv1": 0.75}, "structured", masks, groups), masks)
    assert core is not None
    sub, received, dense, got = both_ways("user", core=core)
    assert_equivalent("user", sub, received, dense, got)


def test_removed_batchnorm_statistics_keep_the_received_values() -> None:
    sub, received, dense, got = both_ways("user")
    key = "bn1.running_var"
    removed = ~kept(sub.index[key], received[key].shape)
    assert removed.any()
    np.testing.assert_array_equal(got[key][removed], received[key][removed])
    assert (dense[key][removed] < received[key][removed]).all()  # masked training decays them


def test_expand_writes_only_the_kept_entries() -> None:
    index = {"w": (np.array([0, 2]), np.array([1])), "n": ()}
    base = {"w": np.zeros((3, 2)), "n": np.array(4)}
    got = expand({"w": np.array([[5.0], [6.0]]), "n": np.array(7)}, index, base)
    np.testing.assert_array_equal(got["w"], [[0, 5], [0, 0], [0, 6]])
    assert got["n"] == 7 and base["n"] == 4  # the base is left as it was
    np.testing.assert_array_equal(to_compact(got, index)["w"], [[5], [6]])


def test_the_sub_model_is_a_copy() -> None:
    model, masks = pruned_model("cnn")
    before = copy.deepcopy(get_state(model))
    sub = extract(model, masks, MNIST)
    assert sub.model.conv1.out_channels == 16
    for key, value in get_state(model).items():
        np.testing.assert_array_equal(value, before[key])
