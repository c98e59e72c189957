"""What the ServerApp sends each client: the model under its mask, and the core beside it."""

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.devices import TIERS, training_flops
from fedrlprune.fl import protocol
from fedrlprune.fl.fleet import Fleet, ModelFacts
from fedrlprune.fl.server_app import _instructions, _simulated
from fedrlprune.fl.training import get_state
from fedrlprune.fl.validation import Reply
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.rl.federation import PolicyStore
from fedrlprune.rl.prune import new_agent


def test_the_core_travels_as_masks_beside_the_model_when_given() -> None:
    model = build_model("lenet5", (1, 28, 28), 10)
    cfg = Config.from_dict({"clients": 2, "rounds": 10})
    fleet = Fleet(cfg, ModelFacts.of(model, (1, 28, 28), cfg.skip_list()))
    state = get_state(model)
    fleet.clients[0].masks = magnitude_masks(state, {"fc1": 0.5})
    fleet.clients[1].masks = magnitude_masks(state, {"fc1": 0.9})
    policies = PolicyStore(new_agent(0).get_weights())
    core = fleet.core_masks()
    records, _ = _instructions(
        cfg, fleet, policies, None, 0, 9, state, fleet.clients[0].masks, core
    )
    sent = protocol.unpack_masks(records[protocol.CORE], state)
    np.testing.assert_array_equal(sent["fc1.weight"], fleet.clients[1].masks["fc1.weight"])
    assert "fc1.weight@values" not in records[protocol.CORE]  # masks only, no weights
    records, _ = _instructions(cfg, fleet, policies, None, 0, 9, state, fleet.clients[0].masks)
    assert protocol.CORE not in records


def test_simulated_cost_counts_the_core_pass_only_when_the_client_trained_one() -> None:
    model = build_model("lenet5", (1, 28, 28), 10)
    cfg = Config.from_dict({"clients": 1, "device_mix": "phone"})
    fleet = Fleet(cfg, ModelFacts.of(model, (1, 28, 28), cfg.skip_list()))
    state = get_state(model)
    own = magnitude_masks(state, {"conv1": 0.5, "conv2": 0.5})
    reply = Reply(apply_masks(state, own), own, {"num-examples": 100}, None, 1_000)
    down = protocol.record_bytes(protocol.pack(state, own))
    alone, _ = _simulated(fleet, 0, reply, down, {})
    same, _ = _simulated(fleet, 0, reply, down, own)  # the core is its own model: no second pass
    smaller = magnitude_masks(state, {"conv1": 0.9, "conv2": 0.9})
    both, _ = _simulated(fleet, 0, reply, down, smaller)
    assert same == alone < both
    core_flops = fleet.facts.cost(apply_masks(state, smaller)).effective_flops
    expected = training_flops(core_flops, 100) / TIERS["phone"].flops_per_second
    assert both - alone == pytest.approx(expected)
