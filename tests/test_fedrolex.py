"""FedRolex: HeteroFL's widths with a window of channels that rolls one channel a round."""

import numpy as np

from fedrlprune.config import Config
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.federation.messages import Reply
from fedrlprune.methods import METHODS, Method
from fedrlprune.methods.fedrolex import rolling_channels
from fedrlprune.methods.heterofl import width_channels
from fedrlprune.models import build_model
from fedrlprune.state import State
from fedrlprune.training import get_state

SHAPE = (64,)  # digits, with the MLP: hidden layers of 200


def started(name: str, rounds: int = 5) -> tuple[Method, State]:
    cfg = Config.from_dict(
        {"method": name, "clients": 4, "device_mix": "mcu,sbc,phone,laptop", "rounds": rounds}
    )
    model = build_model("mlp", SHAPE, 10)
    facts = ModelFacts.of(model, SHAPE, cfg.skip_list(), cfg.structured)
    method = METHODS[name](cfg, Fleet(cfg, facts))
    state = get_state(model)
    method.start(state, {}, {})
    return method, state


def kept(mask: np.ndarray) -> set[int]:
    return set(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)).tolist())


def test_the_window_moves_one_channel_a_round_and_wraps() -> None:
    assert kept(rolling_channels(5, 2, 1)) == {0, 1}  # round 1: the first channels
    assert kept(rolling_channels(5, 2, 2)) == {1, 2}
    assert kept(rolling_channels(5, 2, 5)) == {4, 0}  # wraps around
    assert kept(rolling_channels(5, 2, 6)) == {0, 1}  # period: the layer's channels
    assert rolling_channels(5, 5, 3).all()


def test_a_clients_sub_model_rolls_with_the_round_in_every_layer() -> None:
    method, state = started("fedrolex")
    width = width_channels(method.rates[0], 200)
    for rnd in (1, 2, 150, 201):
        masks = method.masks_for(0, rnd, state, {})
        window = {(rnd - 1 + i) % 200 for i in range(width)}
        assert kept(masks["fc1.weight"]) == window == kept(masks["fc2.weight"])
        assert kept(masks["fc1.weight"].T) == set(range(64))  # the input is never cut
        assert kept(masks["fc2.weight"].T) == window  # inputs follow the previous window
        assert kept(masks["fc3.weight"]) == set(range(10))  # the classifier keeps its outputs
    windows = [method.masks_for(0, r, state, {})["fc1.weight"] for r in range(1, 201)]
    seen = set().union(*map(kept, windows))
    assert seen == set(range(200))  # every channel is trained by the narrowest tier in turn


def test_widths_are_heterofls_and_deployment_is_the_last_rounds_window() -> None:
    rolex, state = started("fedrolex", rounds=7)
    hetero, _ = started("heterofl", rounds=7)
    assert rolex.rates == hetero.rates
    deployed = rolex.deploy_masks(1, state, {})
    last = rolex.masks_for(1, 7, state, {})
    assert all(np.array_equal(deployed[k], last[k]) for k in last)
    assert not np.array_equal(
        deployed["fc1.weight"], hetero.deploy_masks(1, state, {})["fc1.weight"]
    )


def test_the_merge_counts_only_the_windows_each_client_held() -> None:
    method, state = started("fedrolex")
    rnd = 3
    masks = {c: method.masks_for(c, rnd, state, {}) for c in (0, 3)}  # mcu and laptop
    sent = {c: {k: np.full_like(v, float(c + 1)) for k, v in state.items()} for c in masks}
    replies = {c: Reply(sent[c], masks[c], {"num-examples": 10}, None, 0) for c in masks}
    merged, _ = method.merge(rnd, state, replies)
    both = masks[0]["fc1.weight"] & masks[3]["fc1.weight"]
    laptop = masks[3]["fc1.weight"] & ~masks[0]["fc1.weight"]
    nobody = ~masks[3]["fc1.weight"]
    assert both.any() and laptop.any() and nobody.any()
    np.testing.assert_allclose(merged["fc1.weight"][both], 2.5)  # (1 + 4) / 2
    np.testing.assert_allclose(merged["fc1.weight"][laptop], 4.0)
    np.testing.assert_array_equal(merged["fc1.weight"][nobody], state["fc1.weight"][nobody])
