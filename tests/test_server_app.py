"""What the ServerApp sends each client: the model under its mask, and the core beside it."""

import numpy as np

from fedrlprune.config import Config
from fedrlprune.fl import protocol
from fedrlprune.fl.fleet import Fleet, ModelFacts
from fedrlprune.fl.server_app import _instructions
from fedrlprune.fl.training import get_state
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import magnitude_masks
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
