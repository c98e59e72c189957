"""The server's view of its clients: tiers, budgets, masks, and what their models cost."""

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import apply_masks


@pytest.fixture(scope="module")
def facts() -> ModelFacts:
    return ModelFacts.of(build_model("lenet5", (1, 28, 28), 10), (1, 28, 28), None)


def test_facts_count_the_model(facts: ModelFacts) -> None:
    assert facts.targets == ("conv1", "conv2", "fc1", "fc2")  # fc3, the head, stays dense
    assert facts.dense_params == 61_706 and facts.total_flops == 833_040
    assert facts.weights["conv1"] == 6 * 25


def test_deployed_model_is_the_global_model_under_the_clients_own_mask(
    facts: ModelFacts,
) -> None:
    fleet = Fleet(Config.from_dict({"method": "magnitude", "clients": 2}), facts)
    state = {"w": np.ones(4, np.float32)}
    global_masks = {"w": np.array([True, True, True, False])}
    fleet.clients[0].masks = {"w": np.array([True, False, False, False])}
    np.testing.assert_array_equal(
        apply_masks(state, fleet.deploy_masks(0, global_masks))["w"], [1, 0, 0, 0]
    )
    np.testing.assert_array_equal(
        apply_masks(state, fleet.deploy_masks(1, global_masks))["w"], [1, 1, 1, 0]
    )


def test_deploy_masks_put_the_clients_mask_on_the_global_model(facts: ModelFacts) -> None:
    fleet = Fleet(Config.from_dict({"method": "magnitude", "clients": 2}), facts)
    global_masks = {"w": np.array([True, True, False, False]), "v": np.array([True, False])}
    fleet.clients[0].masks = {"w": np.array([True, False, True, False])}
    got = fleet.deploy_masks(0, global_masks)
    np.testing.assert_array_equal(got["w"], [True, False, False, False])
    np.testing.assert_array_equal(got["v"], [True, False])
    assert fleet.deploy_masks(1, global_masks) == global_masks


def test_core_is_what_every_client_that_pruned_keeps(facts: ModelFacts) -> None:
    fleet = Fleet(Config.from_dict({"clients": 3}), facts)
    assert fleet.core_masks() == {}  # nobody has pruned yet
    fleet.clients[0].masks = {"w": np.array([True, True, True, False])}
    fleet.clients[1].masks = {"w": np.array([True, False, True, True])}
    np.testing.assert_array_equal(fleet.core_masks()["w"], [True, False, True, False])
    assert fleet.clients[0].masks["w"].tolist() == [True, True, True, False]  # not changed
