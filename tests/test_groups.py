"""Channel groups: which parameter slices a channel couples, and the masks cut per group."""

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.models import build_model
from fedrlprune.pruning.groups import ChannelGroup, channel_groups
from fedrlprune.pruning.masks import (
    MagnitudeRanking,
    apply_masks,
    layer_sparsity,
    magnitude_masks,
    mask_model,
    masks_from_state,
    pruning_targets,
)
from fedrlprune.state import Masks
from fedrlprune.training import get_state

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)


class DepthwiseConcat(nn.Module):
    """A depthwise-separable block, then a concatenation read through a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 4, 1)
        self.side = nn.Conv2d(3, 4, 1)
        self.cat_bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(self.bn(self.stem(x)).relu()))
        y = self.cat_bn(torch.cat([y, self.side(x)], 1)).relu()
        return self.head(y.mean((2, 3)))


def by_layer(groups: list[ChannelGroup]) -> dict[str, ChannelGroup]:
    return {layer: group for group in groups for layer in group.layers}


def test_resnet_residual_writers_form_one_group_with_their_batchnorms() -> None:
    model = build_model("resnet18", CIFAR, 10)
    groups = channel_groups(model, CIFAR, pruning_targets(model))
    assert len(groups) == 12  # stem stream, 8 block inner convs, 3 later residual streams
    stem = by_layer(groups)["layer1.0.conv2"]
    assert stem.layers == ("conv1", "layer1.0.conv2", "layer1.1.conv2") and stem.size == 64
    assert set(stem.members) == {
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "layer1.0.conv2.weight",
        "layer1.0.bn2.weight",
        "layer1.0.bn2.bias",
        "layer1.1.conv2.weight",
        "layer1.1.bn2.weight",
        "layer1.1.bn2.bias",
    }  # no input columns of the readers (layer1.0.conv1, layer2.0.shortcut.0)
    down = by_layer(groups)["layer2.0.shortcut.0"]
    assert down.layers == ("layer2.0.conv2", "layer2.0.shortcut.0", "layer2.1.conv2")
    assert "layer2.0.shortcut.1.bias" in down.members
    inner = by_layer(groups)["layer3.1.conv1"]
    assert inner.layers == ("layer3.1.conv1",)
    assert set(inner.members) == {
        "layer3.1.conv1.weight",
        "layer3.1.bn1.weight",
        "layer3.1.bn1.bias",
    }
    assert all(np.array_equal(i, np.arange(64)) for i in stem.members.values())


def test_vgg_groups_are_each_conv_with_its_batchnorm() -> None:
    model = build_model("vgg11", CIFAR, 10)
    groups = channel_groups(model, CIFAR, pruning_targets(model))
    assert [g.layers for g in groups][:2] == [("features.0",), ("features.4",)]
    assert set(groups[0].members) == {
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
    }


def test_depthwise_ties_input_to_output_and_concat_maps_indices() -> None:
    model = DepthwiseConcat()
    groups = by_layer(channel_groups(model, (3, 8, 8), ["stem", "dw", "pw", "side"]))
    assert groups["dw"] is groups["stem"] and groups["stem"].layers == ("stem", "dw")
    assert {"dw.weight", "dw.bias", "bn.weight", "bn.bias"} <= set(groups["stem"].members)
    assert "pw.weight" not in groups["stem"].members
    # The side conv's channels sit behind pw's 4 in the concatenation its BatchNorm reads.
    np.testing.assert_array_equal(groups["side"].members["cat_bn.weight"], [4, 5, 6, 7])
    np.testing.assert_array_equal(groups["pw"].members["cat_bn.bias"], [0, 1, 2, 3])
    np.testing.assert_array_equal(groups["side"].members["side.weight"], [0, 1, 2, 3])


def test_classifier_and_layers_tied_to_a_skipped_layer_get_no_group() -> None:
    model = build_model("resnet18", CIFAR, 10)
    everything = pruning_targets(model, skip=[])
    assert "fc" not in by_layer(channel_groups(model, CIFAR, everything))
    skipped = [t for t in pruning_targets(model) if t != "conv1"]
    grouped = by_layer(channel_groups(model, CIFAR, skipped))
    assert "layer1.0.conv2" not in grouped and "layer1.1.conv2" not in grouped
    assert "layer1.0.conv1" in grouped


def test_group_rate_is_its_first_named_layer() -> None:
    group = ChannelGroup(("a", "b"), 2, {})
    assert group.rate({"b": 0.3, "a": 0.5}) == 0.5
    assert group.rate({"b": 0.3}) == 0.3
    assert group.rate({"c": 0.9}) is None


def test_tracing_leaves_the_model_untouched() -> None:
    model = build_model("vgg11", CIFAR, 10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    channel_groups(model, CIFAR, pruning_targets(model))
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_unknown_target_and_wrong_shape_are_config_errors() -> None:
    model = build_model("lenet5", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match=r"'conv9'.*conv1, conv2"):
        channel_groups(model, (1, 28, 28), ["conv9"])
    with pytest.raises(ConfigError, match="shape"):
        channel_groups(model, (3, 5), ["conv1"])


def group_setup(name: str, shape: tuple[int, ...]) -> tuple[nn.Module, dict, list[str], list]:
    """A seeded model with trained-looking BatchNorm, its state, targets and channel groups."""
    torch.manual_seed(0)
    model = build_model(name, shape, 10).eval()
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen))
            mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
            with torch.no_grad():
                mod.bias.copy_(torch.randn(mod.num_features, generator=gen))
    targets = pruning_targets(model)
    return model, get_state(model), targets, channel_groups(model, shape, targets)


def assert_same_masks(got: Masks, want: Masks) -> None:
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("name", ["lenet5", "cnn", "mlp"])
def test_groups_leave_chains_without_batchnorm_bit_identical(name: str) -> None:
    _, state, targets, groups = group_setup(name, MNIST)
    rates = {layer: 0.2 + 0.15 * i for i, layer in enumerate(targets)}
    first = magnitude_masks(state, rates, "structured")
    assert_same_masks(magnitude_masks(state, rates, "structured", groups=groups), first)
    more = dict.fromkeys(targets, 0.7)
    assert_same_masks(
        magnitude_masks(state, more, "structured", first, groups=groups),
        magnitude_masks(state, more, "structured", first),
    )


def test_group_masks_zero_a_channel_after_its_batchnorm() -> None:
    model, state, targets, groups = group_setup("resnet18", (3, 32, 32))
    masks = magnitude_masks(state, dict.fromkeys(targets, 0.5), "structured", groups=groups)
    stem = ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    dropped = [~masks[f"{layer}.weight"].reshape(64, -1).any(axis=1) for layer in stem]
    assert dropped[0].sum() == 32 and all(np.array_equal(d, dropped[0]) for d in dropped)
    for bn in ("bn1", "layer1.0.bn2", "layer1.1.bn2"):
        assert np.array_equal(~masks[f"{bn}.weight"], dropped[0])
        assert np.array_equal(~masks[f"{bn}.bias"], dropped[0])
    assert "fc.weight" not in masks and "layer1.0.conv1.weight" in masks
    mask_model(model, masks)
    seen = {}
    model.layer1[1].bn2.register_forward_hook(lambda _m, _i, out: seen.setdefault("bn", out))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert (seen["bn"][:, torch.from_numpy(dropped[0])] == 0).all()
    assert seen["bn"][:, torch.from_numpy(~dropped[0])].abs().sum() > 0
    assert set(layer_sparsity(masks)) == set(targets)  # BatchNorm entries are not layers


def test_group_takes_its_first_layers_rate_and_is_monotone() -> None:
    _, state, _, groups = group_setup("resnet18", (3, 32, 32))
    first = magnitude_masks(
        state, {"layer1.0.conv2": 0.25, "conv1": 0.5}, "structured", None, groups
    )
    assert (~first["conv1.weight"].reshape(64, -1).any(axis=1)).sum() == 32
    assert (~first["bn1.bias"]).sum() == 32
    boosted = dict(state, **{"conv1.weight": state["conv1.weight"] * 100})
    second = magnitude_masks(boosted, {"conv1": 0.75}, "structured", first, groups)
    for key in first:
        assert not (second[key] & ~first[key]).any(), key
    assert (~second["layer1.1.bn2.weight"]).sum() == 48


def test_ranking_with_groups_gives_what_magnitude_masks_gives() -> None:
    _, state, targets, groups = group_setup("resnet18", (3, 32, 32))
    current = magnitude_masks(state, dict.fromkeys(targets, 0.2), "structured", None, groups)
    ranking = MagnitudeRanking(state, targets, "structured", current, groups)
    rng = np.random.default_rng(0)
    for _ in range(3):
        rates = {layer: float(rng.choice([0.0, 0.3, 0.6, 0.95])) for layer in targets}
        want = magnitude_masks(state, rates, "structured", current, groups)
        assert_same_masks(ranking.masks(rates), want)


def test_masks_from_state_with_groups_recovers_batchnorm_masks() -> None:
    _, state, targets, groups = group_setup("vgg11", (3, 32, 32))
    masks = magnitude_masks(state, dict.fromkeys(targets, 0.5), "structured", groups=groups)
    recovered = masks_from_state(apply_masks(state, masks), targets, "structured", groups)
    assert_same_masks(recovered, masks)
