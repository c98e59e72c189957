"""The federation's server without Flower: orders, the core beside the model, simulated cost,
and a round settled from replies."""

import numpy as np
import pytest
import torch

from fedrlprune.config import Config
from fedrlprune.devices import TIERS, training_flops
from fedrlprune.errors import ConfigError
from fedrlprune.federation.messages import Deployment, Reply
from fedrlprune.federation.server import Federation
from fedrlprune.fl import protocol
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import apply_masks, magnitude_masks

SHAPE = (1, 28, 28)
TEST = (torch.zeros(4, *SHAPE), torch.zeros(4, dtype=torch.long))


def _federation(**keys: object) -> Federation:
    cfg = Config.from_dict(keys)
    fed = Federation(cfg, build_model("lenet5", SHAPE, 10), SHAPE, TEST)
    fed.start(dict.fromkeys(range(cfg.clients), 100))
    return fed


def test_the_core_travels_as_masks_beside_the_model_in_fedrlprune_only() -> None:
    fed = _federation(clients=2, rounds=10)
    fed.fleet.clients[0].masks = magnitude_masks(fed.state, {"fc1": 0.5})
    fed.fleet.clients[1].masks = magnitude_masks(fed.state, {"fc1": 0.9})
    orders = fed.orders(9, [0, 1])
    content = protocol.pack_orders(fed.cfg, orders[0], fed.state)
    sent = protocol.unpack_masks(content.array_records[protocol.CORE], fed.state)
    np.testing.assert_array_equal(sent["fc1.weight"], fed.fleet.clients[1].masks["fc1.weight"])
    assert "fc1.weight@values" not in content.array_records[protocol.CORE]  # masks only
    off = _federation(clients=2, rounds=10, train_core=False)
    off.fleet.clients[0].masks = fed.fleet.clients[0].masks
    assert off.orders(9, [0])[0].core == {}
    dense = _federation(clients=2, rounds=10, method="fedavg")
    dense.fleet.clients[0].masks = fed.fleet.clients[0].masks
    assert dense.orders(9, [0])[0].core == {}


def test_simulated_cost_counts_the_core_pass_only_when_the_client_trained_one() -> None:
    fed = _federation(clients=1, device_mix="phone")
    own = magnitude_masks(fed.state, {"conv1": 0.5, "conv2": 0.5})
    reply = Reply(apply_masks(fed.state, own), own, {"num-examples": 100}, None, 1_000)
    down = protocol.record_bytes(protocol.pack(fed.state, own))
    alone, _ = fed.simulated(0, reply, down, {})
    same, _ = fed.simulated(0, reply, down, own)  # the core is its own model: no second pass
    smaller = magnitude_masks(fed.state, {"conv1": 0.9, "conv2": 0.9})
    both, _ = fed.simulated(0, reply, down, smaller)
    assert same == alone < both
    core_flops = fed.facts.cost(apply_masks(fed.state, smaller)).effective_flops
    expected = training_flops(core_flops, 100) / TIERS["phone"].flops_per_second
    assert both - alone == pytest.approx(expected)


def test_a_round_settles_into_the_global_model_only_with_enough_replies() -> None:
    fed = _federation(clients=2, method="fedavg", min_clients=2)
    chosen = fed.sample(1)
    orders = fed.orders(1, chosen)
    moved = {k: v + 1.0 if v.dtype.kind == "f" else v for k, v in fed.state.items()}
    metrics = {"num-examples": 100, "train-loss": 1.0}
    replies = {c: Reply(moved, {}, metrics, None, 10) for c in chosen}
    before = dict(fed.state)
    one = {chosen[0]: replies[chosen[0]]}
    short = fed.settle(1, orders, one, {chosen[1]: ("error", "x")}, dict.fromkeys(chosen, 5))
    assert not short.updated and fed.failed == {chosen[1]} and fed.done == 1
    assert all(np.array_equal(fed.state[k], before[k]) for k in before)
    full = fed.settle(2, fed.orders(2, chosen), replies, {}, dict.fromkeys(chosen, 5))
    assert full.updated and fed.done == 2
    np.testing.assert_allclose(fed.state["fc1.weight"], moved["fc1.weight"], rtol=1e-6)
    assert all(fed.fleet.clients[c].seen_rounds == [2] for c in chosen)
    assert fed.snapshot([], [], 1.0).round == 2


def test_a_budget_out_of_the_models_reach_is_said_before_round_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The MLP's dense head alone holds more parameters than a microcontroller's budget allows.
    cfg = Config.from_dict(
        {"model": "mlp", "clients": 2, "device_mix": "mcu,laptop", "prune_mode": "unstructured"}
    )
    fed = Federation(cfg, build_model("mlp", (1, 8, 8), 10), (1, 8, 8), TEST)
    with caplog.at_level("WARNING", logger="fedrlprune"):
        fed.start({0: 10, 1: 10})
    assert fed.unreachable == ["mcu"]
    assert "mcu budget" in caplog.text and "params" in caplog.text
    assert 'prune_skip = ""' in caplog.text and "device_mix" in caplog.text  # the ways out
    headless = Config.from_dict(
        {
            "model": "mlp",
            "clients": 1,
            "device_mix": "mcu",
            "prune_skip": "",
            "prune_mode": "unstructured",
        }
    )
    fed = Federation(headless, build_model("mlp", (1, 8, 8), 10), (1, 8, 8), TEST)
    fed.start({0: 10})
    assert fed.unreachable == []


def _wide_activations() -> torch.nn.Module:
    """Prunable almost everywhere, but 16 channels of 80x80 (twice: the ReLU is not in place)
    hold 0.82 MB of activations, more than a microcontroller's 512 KiB."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 2000, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(2000, 2),
    )


def test_a_memory_budget_out_of_reach_is_said_before_round_one_with_the_way_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shape = (1, 80, 80)
    keys = {"clients": 2, "device_mix": "mcu,laptop", "prune_skip": ""}
    keys["prune_mode"] = "unstructured"
    fed = Federation(Config.from_dict(keys), _wide_activations(), shape, TEST)
    with caplog.at_level("WARNING", logger="fedrlprune"):
        fed.start({0: 10, 1: 10})
    assert fed.unreachable == ["mcu"]  # unstructured: the dense activations stay
    assert "out of this model's reach on memory:" in caplog.text  # memory alone
    assert "smaller model or input" in caplog.text and "device_mix" in caplog.text
    assert fed.done == 0  # before any round


def test_deployed_clients_carry_their_compact_figures_and_all_three_limits() -> None:
    fed = _federation(clients=2, device_mix="mcu,laptop", prune_mode="structured")
    masks = magnitude_masks(fed.state, {"conv1": 0.5, "fc1": 0.5}, "structured", None,
                            fed.facts.groups)  # fmt: skip
    per_client = fed.deployed({0: Deployment(masks, 0.5), 1: Deployment({}, 0.5)}, {})
    keys = {"compact_params", "compact_flops", "memory_bytes", "budget_params", "budget_flops",
            "budget_memory_bytes", "over_budget", "within_budget"}  # fmt: skip
    assert all(keys <= set(c) for c in per_client)
    assert per_client[0]["compact_params"] < per_client[1]["compact_params"]
    assert per_client[0]["memory_bytes"] < per_client[1]["memory_bytes"]
    assert per_client[0]["budget_memory_bytes"] == TIERS["mcu"].memory_bytes


def test_held_out_clients_are_never_selected_and_fraction_counts_the_others() -> None:
    fed = _federation(method="fedavg", clients=10, heldout_clients=2, fraction=0.5)
    picked = [fed.sample(rnd) for rnd in range(1, 31)]
    assert all(len(p) == 4 for p in picked)  # half of the 8 not held out
    assert not set().union(*map(set, picked)) & fed.fleet.heldout
    plain = _federation(method="fedavg", clients=10, fraction=0.5)
    assert all(len(plain.sample(rnd)) == 5 for rnd in range(1, 4))
    with pytest.raises(ConfigError, match="heldout_clients"):
        Config.from_dict({"clients": 3, "heldout_clients": 3})


def test_a_held_out_tier_holds_out_every_client_of_it_and_only_it() -> None:
    fed = _federation(method="fedavg", clients=12, heldout_tier="sbc", heldout_clients=1)
    sbc = {r.cid for r in fed.fleet.clients if r.tier == "sbc"}
    assert sbc and sbc < fed.fleet.heldout and len(fed.fleet.heldout) == len(sbc) + 1
    assert fed.cfg.per_round() == 12 - len(sbc) - 1
    assert all(not set(fed.sample(rnd)) & fed.fleet.heldout for rnd in range(1, 11))
