"""Masks: magnitude selection, monotonicity, round trips, and zeros that survive training."""

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.models import build_model
from fedrlprune.pruning import (
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
from fedrlprune.training import get_state

MNIST = (1, 28, 28)


def lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet5", MNIST, 10)


def test_unstructured_prunes_exactly_floor_rate_n_smallest() -> None:
    state = get_state(lenet())
    weight = state["fc1.weight"]
    masks = magnitude_masks(state, {"fc1": 0.8})

    assert set(masks) == {"fc1.weight"}
    keep = masks["fc1.weight"]
    assert keep.dtype == np.bool_ and keep.shape == weight.shape
    assert int((~keep).sum()) == math.floor(0.8 * weight.size)
    assert np.abs(weight[keep]).min() >= np.abs(weight[~keep]).max()


def test_unstructured_ties_are_deterministic() -> None:
    state = {"fc.weight": np.ones((2, 3), dtype=np.float32)}
    keep = magnitude_masks(state, {"fc": 0.5})["fc.weight"]
    # Stable order: among equal magnitudes the lowest flat indices go first.
    assert keep.ravel().tolist() == [False, False, False, True, True, True]


def test_structured_prunes_smallest_l1_channels_with_bias() -> None:
    weight = np.ones((4, 2, 3, 3), dtype=np.float32)
    weight[0] *= 3.0
    weight[1] *= -0.5  # smallest L1 despite sign
    weight[2] *= 2.0
    weight[3] *= 1.0
    weight[3, 0, 0, 0] = -30.0  # one big entry makes channel 3 the largest by L1
    state = {
        "conv.weight": weight,
        "conv.bias": np.arange(4, dtype=np.float32),
        "fc.weight": np.ones((2, 8), dtype=np.float32),
    }
    masks = magnitude_masks(state, {"conv": 0.5}, mode="structured")

    assert set(masks) == {"conv.weight", "conv.bias"}
    kept_channels = masks["conv.weight"].reshape(4, -1)
    assert kept_channels.all(axis=1).tolist() == [True, False, False, True]
    assert not kept_channels[[1, 2]].any()
    assert masks["conv.bias"].tolist() == [True, False, False, True]


def test_structured_always_keeps_a_channel() -> None:
    state = get_state(lenet())
    masks = magnitude_masks(state, {"conv1": 0.99, "fc2": 0.99}, mode="structured")
    for layer, channels in (("conv1", 6), ("fc2", 84)):
        alive = masks[f"{layer}.weight"].reshape(channels, -1).all(axis=1)
        assert alive.sum() == channels - math.floor(0.99 * channels) >= 1
        assert np.array_equal(masks[f"{layer}.bias"], alive)
    # A layer with one channel keeps it at any rate below 1.
    one = {"fc.weight": np.ones((1, 5), dtype=np.float32)}
    assert magnitude_masks(one, {"fc": 0.99}, mode="structured")["fc.weight"].all()


def test_structured_on_layer_without_bias_masks_only_weight() -> None:
    state = {"conv.weight": np.random.default_rng(0).normal(size=(4, 3, 3, 3))}
    assert set(magnitude_masks(state, {"conv": 0.5}, mode="structured")) == {"conv.weight"}


@pytest.mark.parametrize("mode", ["unstructured", "structured"])
def test_rate_zero_keeps_everything(mode: str) -> None:
    state = get_state(lenet())
    masks = magnitude_masks(state, {"conv1": 0.0, "fc1": 0.0}, mode=mode)
    assert masks and all(mask.all() for mask in masks.values())
    assert overall_sparsity(masks, state) == 0.0


def test_pruning_is_monotone_with_current() -> None:
    state = get_state(lenet())
    first = magnitude_masks(state, {"fc1": 0.5})
    # The next round's weights rank differently, but what is pruned stays pruned.
    shuffled = dict(state)
    shuffled["fc1.weight"] = np.random.default_rng(1).permutation(state["fc1.weight"].ravel())
    shuffled["fc1.weight"] = shuffled["fc1.weight"].reshape(state["fc1.weight"].shape)
    second = magnitude_masks(shuffled, {"fc1": 0.8}, current=first)

    n = state["fc1.weight"].size
    assert not (second["fc1.weight"] & ~first["fc1.weight"]).any()
    assert int((~second["fc1.weight"]).sum()) == math.floor(0.8 * n)
    # A lower rate than already pruned keeps current as it is (and current is not mutated).
    third = magnitude_masks(shuffled, {"fc1": 0.3}, current=second)
    assert np.array_equal(third["fc1.weight"], second["fc1.weight"])
    assert third["fc1.weight"] is not second["fc1.weight"]
    assert int((~first["fc1.weight"]).sum()) == math.floor(0.5 * n)


def test_structured_is_monotone_with_current() -> None:
    state = get_state(lenet())
    first = magnitude_masks(state, {"conv2": 0.25}, mode="structured")
    boosted = dict(state)
    boosted["conv2.weight"] = state["conv2.weight"] * 100  # dead channels now look largest
    second = magnitude_masks(boosted, {"conv2": 0.5, "fc1": 0.5}, mode="structured", current=first)

    for key in first:
        assert not (second[key] & ~first[key]).any()
    assert (~second["conv2.bias"]).sum() == 8
    assert set(second) == {"conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias"}
    # Layers of current not re-pruned this round are carried over.
    carried = magnitude_masks(state, {"fc1": 0.5}, current=first)
    assert np.array_equal(carried["conv2.weight"], first["conv2.weight"])


@pytest.mark.parametrize(
    ("rates", "mode", "match"),
    [
        ({"conv1": 1.0}, "unstructured", r"rate of 'conv1'.*\[0, 1\)"),
        ({"conv1": -0.1}, "unstructured", r"rate of 'conv1'"),
        ({"conv1": float("nan")}, "unstructured", r"rate of 'conv1'"),
        ({"conv1": "0.5"}, "unstructured", r"rate of 'conv1'"),
        ({"conv9": 0.5}, "unstructured", r"'conv9'.*conv1, conv2, fc1, fc2, fc3"),
        ({"fc3.weight": 0.5}, "unstructured", r"'fc3\.weight'.*conv1, conv2"),
        ({"conv1": 0.5}, "filter", r"'filter'.*unstructured, structured"),
    ],
)
def test_magnitude_masks_bad_input(rates: dict, mode: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        magnitude_masks(get_state(lenet()), rates, mode=mode)


def test_magnitude_masks_rejects_mismatched_current() -> None:
    state = get_state(lenet())
    with pytest.raises(ConfigError, match=r"'fc1\.weight'.*expected bool \(120, 400\)"):
        magnitude_masks(state, {"fc1": 0.5}, current={"fc1.weight": np.ones((3, 3), bool)})


def test_pruning_targets_skip_head_by_default() -> None:
    model = lenet()
    assert pruning_targets(model) == ["conv1", "conv2", "fc1", "fc2"]
    assert pruning_targets(model, skip=[]) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert pruning_targets(model, skip=["conv1", "fc3"]) == ["conv2", "fc1", "fc2"]
    assert pruning_targets(model, skip="fc3") == ["conv1", "conv2", "fc1", "fc2"]
    with pytest.raises(ConfigError, match=r"'conv3'.*conv1, conv2, fc1, fc2, fc3"):
        pruning_targets(model, skip=["conv3"])


def test_pruning_targets_on_user_module() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3),
        nn.Linear(3, 2),
    )  # fmt: skip
    assert pruning_targets(model) == ["0", "4"]
    assert pruning_targets(model, skip=["0"]) == ["4", "5"]
    # Targets name layers of the state dict directly.
    masks = magnitude_masks(get_state(model), dict.fromkeys(pruning_targets(model), 0.5))
    assert set(masks) == {"0.weight", "4.weight"}


def test_apply_masks_zeroes_without_mutating() -> None:
    state = get_state(lenet())
    before = {key: value.copy() for key, value in state.items()}
    masks = magnitude_masks(state, {"conv2": 0.5, "fc1": 0.9}, mode="structured")
    pruned = apply_masks(state, masks)

    for key, value in state.items():
        assert np.array_equal(value, before[key])
        assert pruned[key] is not value and pruned[key].dtype == value.dtype
        if key in masks:
            assert np.all(pruned[key][~masks[key]] == 0)
            assert np.array_equal(pruned[key][masks[key]], value[masks[key]])
        else:
            assert np.array_equal(pruned[key], value)


def test_apply_masks_rejects_foreign_masks() -> None:
    state = get_state(lenet())
    with pytest.raises(ConfigError, match=r"'conv9\.weight'.*conv1\.weight"):
        apply_masks(state, {"conv9.weight": np.ones((6, 1, 5, 5), bool)})
    with pytest.raises(ConfigError, match=r"expected bool \(6, 1, 5, 5\)"):
        apply_masks(state, {"conv1.weight": np.ones((6, 1, 5, 5))})


def test_mask_model_zeroes_parameters_in_place() -> None:
    model = lenet()
    masks = magnitude_masks(get_state(model), {"conv1": 0.5, "fc2": 0.7})
    expected = apply_masks(get_state(model), masks)
    mask_model(model, masks)
    for key, value in get_state(model).items():
        assert np.array_equal(value, expected[key])
    with pytest.raises(ConfigError, match="names no parameter"):
        mask_model(model, {"fc9.weight": np.ones((1, 1), bool)})


def lenet_masks(model: nn.Module) -> Masks:
    rates = dict.fromkeys(pruning_targets(model), 0.7)
    return magnitude_masks(get_state(model), rates)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)


def run_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    enforcer: MaskEnforcer | None = None,
    after: Callable[[], None] | None = None,
    enforce_after: bool = True,
) -> None:
    """Training steps on random data; ``after`` is called after every step."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(8, *MNIST, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if enforcer is not None:
            enforcer.before_step()
        opt.step()
        if enforcer is not None and enforce_after:
            enforcer.after_step()
        if after is not None:
            after()


def masked_values(model: nn.Module, masks: Masks) -> np.ndarray:
    params = dict(model.named_parameters())
    return np.concatenate([params[key].detach().numpy()[~mask] for key, mask in masks.items()])


@pytest.mark.parametrize("make_opt", [sgd, adam])
def test_enforcer_keeps_masked_weights_zero(make_opt: Callable) -> None:
    model = lenet()
    masks = lenet_masks(model)
    mask_model(model, masks)
    start = get_state(model)
    enforcer = MaskEnforcer(model, masks)

    def check() -> None:
        assert np.all(masked_values(model, masks) == 0.0)

    run_steps(model, make_opt(model), 20, enforcer, after=check)
    end = get_state(model)
    for key, mask in masks.items():
        assert not np.array_equal(end[key][mask], start[key][mask])  # kept weights trained
    assert not np.array_equal(end["fc3.weight"], start["fc3.weight"])  # dense head trained


@pytest.mark.parametrize("make_opt", [sgd, adam])
def test_masked_weights_revive_without_enforcer(make_opt: Callable) -> None:
    model = lenet()
    masks = lenet_masks(model)
    mask_model(model, masks)
    run_steps(model, make_opt(model), 5)
    assert np.count_nonzero(masked_values(model, masks)) > 0


def test_after_step_stops_momentum_from_before_pruning() -> None:
    """Momentum built up while dense revives pruned weights even with their grads zeroed."""
    for enforce_after, revived in ((False, True), (True, False)):
        model = lenet()
        opt = sgd(model)
        run_steps(model, opt, 5)  # dense warm-up fills the momentum buffers
        masks = lenet_masks(model)
        mask_model(model, masks)
        run_steps(model, opt, 5, MaskEnforcer(model, masks), enforce_after=enforce_after)
        assert bool(np.count_nonzero(masked_values(model, masks))) is revived


def test_enforcer_rejects_mismatched_masks() -> None:
    model = lenet()
    with pytest.raises(ConfigError, match=r"'conv1\.weight'.*expected bool \(6, 1, 5, 5\)"):
        MaskEnforcer(model, {"conv1.weight": np.ones((6, 5, 5), bool)})


@pytest.mark.parametrize("mode", ["unstructured", "structured"])
def test_masks_from_state_round_trips(mode: str) -> None:
    state = get_state(lenet())
    layers = pruning_targets(lenet())
    masks = magnitude_masks(state, dict.fromkeys(layers, 0.6), mode=mode)
    recovered = masks_from_state(apply_masks(state, masks), layers, mode=mode)
    assert recovered.keys() == masks.keys()
    for key, mask in masks.items():
        assert recovered[key].dtype == np.bool_
        assert np.array_equal(recovered[key], mask)


def test_masks_from_state_structured_keeps_channel_with_any_nonzero() -> None:
    weight = np.zeros((3, 2, 2), dtype=np.float32)
    weight[1, 1, 0] = 0.5
    state = {"conv.weight": weight, "conv.bias": np.ones(3, dtype=np.float32)}
    masks = masks_from_state(state, ["conv"], mode="structured")
    assert masks["conv.weight"].reshape(3, -1).all(axis=1).tolist() == [False, True, False]
    assert not masks["conv.weight"][[0, 2]].any()
    assert masks["conv.bias"].tolist() == [False, True, False]
    with pytest.raises(ConfigError, match=r"'fc'.*conv"):
        masks_from_state(state, ["fc"])


def test_sparsity_by_hand() -> None:
    masks = {
        "a.weight": np.array([[True, False], [False, False]]),  # 3 of 4 pruned
        "a.bias": np.array([True, False]),  # biases are not counted
        "b.weight": np.ones((2, 3), dtype=bool),  # 0 of 6 pruned
        "c.weight": np.array([[True], [False]]),  # 1 of 2 pruned
    }
    state = {key: np.zeros(mask.shape, dtype=np.float32) for key, mask in masks.items()}
    state["d.weight"] = np.zeros((10, 10), dtype=np.float32)  # unmasked: not counted

    assert layer_sparsity(masks) == {"a": 0.75, "b": 0.0, "c": 0.5}
    assert overall_sparsity(masks, state) == pytest.approx(4 / 12)
    assert overall_sparsity({}, state) == 0.0
    with pytest.raises(ConfigError, match="names no parameter"):
        overall_sparsity(masks, {"a.weight": state["a.weight"]})


@pytest.mark.parametrize("mode", ["unstructured", "structured"])
def test_ranking_gives_exactly_what_magnitude_masks_gives(mode: str) -> None:
    from fedrlprune.pruning.masks import MagnitudeRanking

    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    layers = ["conv1", "conv2", "fc1", "fc2"]
    current = magnitude_masks(state, dict.fromkeys(layers, 0.3), mode)
    ranking = MagnitudeRanking(state, layers, mode, current)
    rng = np.random.default_rng(0)
    for _ in range(5):
        rates = {layer: float(rng.choice([0.0, 0.2, 0.5, 0.9, 0.98])) for layer in layers}
        want = magnitude_masks(state, rates, mode, current)
        got = ranking.masks(rates)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
