"""HeteroFL: widths from the budgets on the compact model, nested masks, coupled channels, and
the merge that averages each entry over the clients that held it."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.config import Config
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.federation.messages import Reply
from fedrlprune.methods import METHODS, Method
from fedrlprune.methods.heterofl import largest_fitting, width_channels
from fedrlprune.models import build_model
from fedrlprune.pruning.compact import compact_model
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.state import State
from fedrlprune.training import get_state, set_state
from test_methods import ResidualBN  # the user CNN with BatchNorm and a residual

MNIST = (1, 28, 28)
TIER_ORDER = ("mcu", "sbc", "phone", "laptop")


def started(name: str, model: nn.Module, shape: tuple[int, ...]) -> tuple[Method, State]:
    """The method of `name` for `model` over four clients, one per tier, after `start`."""
    cfg = Config.from_dict({"method": name, "clients": 4, "device_mix": ",".join(TIER_ORDER)})
    facts = ModelFacts.of(model, shape, cfg.skip_list(), cfg.structured)
    method = METHODS[name](cfg, Fleet(cfg, facts))
    state = get_state(model)
    method.start(state, {}, {})
    return method, state


def test_a_width_keeps_ceil_rate_times_the_channels_and_at_least_one() -> None:
    assert width_channels(0.5, 64) == 32 and width_channels(0.3, 10) == 3
    assert width_channels(0.26, 10) == 3 and width_channels(0.01, 10) == 1
    assert width_channels(3 / 7, 7) == 3  # float error in rate * size does not add a channel


def test_the_largest_fitting_rate_is_found_and_the_smallest_when_none_fits() -> None:
    rates = [0.1, 0.2, 0.5, 0.7, 1.0]
    assert largest_fitting(rates, lambda r: r <= 0.5) == 0.5
    assert largest_fitting(rates, lambda r: True) == 1.0
    assert largest_fitting(rates, lambda r: False) == 0.1


def test_every_tier_gets_the_widest_compact_sub_model_its_budget_holds() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", MNIST, 10)
    method, state = started("heterofl", model, MNIST)
    for rec in method.fleet.clients:
        compact = compact_model(model, method.masks_for(rec.cid, 1, state, {}), MNIST)
        params = sum(p.numel() for p in compact.parameters())
        assert params <= rec.budget.max_params, rec.tier
        assert total_flops(compact, MNIST) <= rec.budget.max_flops, rec.tier
        assert params > 0.9 * rec.budget.max_params  # a finer width would not fit much more
    rates = [method.rates[c] for c in range(4)]  # one client per tier, in TIER_ORDER
    assert rates == sorted(rates) and rates[0] < rates[-1] < 1.0


def test_sub_models_are_nested_first_channels_that_stay_put() -> None:
    model = build_model("cnn", MNIST, 10)
    method, state = started("heterofl", model, MNIST)
    masks = [method.masks_for(c, 1, state, {}) for c in range(4)]  # narrowest first
    for narrow, wide in itertools.pairwise(masks):
        for key in narrow:
            assert not (narrow[key] & ~wide[key]).any(), key
    kept = masks[0]["conv1.weight"].any(axis=(1, 2, 3))
    width = width_channels(method.rates[0], 32)
    assert kept[:width].all() and not kept[width:].any()
    assert masks[0]["conv2.weight"][:, width:].sum() == 0  # the next layer's inputs follow
    assert masks[0]["fc2.weight"].any(axis=1).all()  # the classifier keeps every output
    later = method.masks_for(0, 7, state, {})
    assert all(np.array_equal(later[k], masks[0][k]) for k in masks[0])
    deployed = method.deploy_masks(0, state, {})
    assert all(np.array_equal(deployed[k], masks[0][k]) for k in masks[0])


def test_batchnorm_and_residual_channels_are_cut_together_and_compact_exactly() -> None:
    torch.manual_seed(0)
    shape = (1, 8, 8)
    model = ResidualBN(shape, 10)
    method, state = started("heterofl", model, shape)
    masks = method.masks_for(3, 1, state, {})  # the laptop: 3 of 8 channels fit its budget
    conv1 = masks["conv1.weight"].any(axis=(1, 2, 3))
    assert 0 < conv1.sum() < 8
    for key in ("conv2.weight", "bn1.weight", "bn2.bias", "conv1.bias"):
        kept = masks[key].reshape(8, -1).any(axis=1)
        np.testing.assert_array_equal(kept, conv1, err_msg=key)  # one residual group
    np.testing.assert_array_equal(masks["conv2.weight"].any(axis=(0, 2, 3)), conv1)
    set_state(model, state)
    compact = compact_model(model, masks, shape)  # refuses what it cannot remove exactly
    budget = method.fleet.clients[3].budget
    assert sum(p.numel() for p in compact.parameters()) <= budget.max_params


def test_the_merge_averages_each_entry_over_its_holders_only() -> None:
    shape = (1, 8, 8)
    method, _ = started("heterofl", ResidualBN(shape, 10), shape)
    keys = ("conv1.weight", "bn1.weight", "bn1.running_mean")  # stats follow their channel
    previous = {k: np.full(3, 9.0) for k in keys} | {"head.bias": np.zeros(1)}
    held = [np.array([True, True, False]), np.array([True, False, False])]
    sent = [([1.0, 2.0, 5.0], 1), ([3.0, 7.0, 7.0], 3)]  # values, sample count
    replies = {
        cid: Reply(
            {k: np.array(v) for k in keys} | {"head.bias": np.array(v[:1])},
            {"conv1.weight": held[cid], "bn1.weight": held[cid]},
            {"num-examples": n},
            None,
            0,
        )
        for cid, (v, n) in enumerate(sent)
    }
    state, masks = method.merge(1, previous, replies)
    for key in keys:
        # entry 0: both held it, unweighted (1 + 3) / 2; entry 1: client 0 alone; 2: nobody
        np.testing.assert_allclose(state[key], [2.0, 2.0, 9.0], err_msg=key)
    np.testing.assert_allclose(state["head.bias"], [2.5])  # unmasked: sample-weighted
    assert masks == {}  # the global model stays dense


@pytest.mark.parametrize("name", ["heterofl", "fedrolex"])
def test_both_methods_are_always_structured(name: str) -> None:
    cfg = Config.from_dict({"method": name, "prune_mode": "unstructured"})
    assert cfg.structured and cfg.aggregation_rule() == "lotteryfl"
