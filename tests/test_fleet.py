"""The server's view of its clients: tiers, budgets, what each prunes and when."""

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.devices import within_budget
from fedrlprune.fl.fleet import Fleet, ModelFacts
from fedrlprune.fl.training import get_state
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import apply_masks, magnitude_masks


@pytest.fixture(scope="module")
def facts() -> ModelFacts:
    return ModelFacts.of(build_model("lenet5", (1, 28, 28), 10), (1, 28, 28), None)


def test_facts_count_the_model(facts: ModelFacts) -> None:
    assert facts.targets == ("conv1", "conv2", "fc1", "fc2")  # fc3, the head, stays dense
    assert facts.dense_params == 61_706 and facts.total_flops == 833_040
    assert facts.weights["conv1"] == 6 * 25


def test_fedavg_never_prunes(facts: ModelFacts) -> None:
    fleet = Fleet(Config(), facts)
    assert all(fleet.rate_now(c, r) == 0.0 for c in range(10) for r in range(1, 21))


def test_magnitude_rates_follow_the_schedule_and_the_budgets(facts: ModelFacts) -> None:
    cfg = Config.from_dict(
        {"method": "magnitude", "prune_rate": 0.5, "clients": 8, "respect_budgets": True}
    )
    fleet = Fleet(cfg, facts)
    assert fleet.prune_rounds == [3, 4, 5, 6, 7, 8, 9, 10]
    for rec in fleet.clients:
        assert rec.final_rate >= 0.5
        assert fleet.rate_now(rec.cid, 2) == 0.0
        assert fleet.rate_now(rec.cid, 10) == pytest.approx(rec.final_rate)
        # Pruning every target layer at the final rate puts the deployed model in its budget.
        state = get_state(build_model("lenet5", (1, 28, 28), 10))
        masks = magnitude_masks(state, dict.fromkeys(facts.targets, rec.final_rate))
        cost = facts.cost(apply_masks(state, masks))
        assert within_budget(rec.budget, cost.effective_flops, cost.nonzero_params), rec.tier
    by_tier = {rec.tier: rec.final_rate for rec in fleet.clients}
    assert by_tier["mcu"] > by_tier["sbc"] > by_tier["phone"] >= by_tier["laptop"]


def test_without_budgets_everyone_prunes_the_same(facts: ModelFacts) -> None:
    cfg = Config.from_dict({"method": "magnitude", "prune_rate": 0.5, "respect_budgets": False})
    assert {rec.final_rate for rec in Fleet(cfg, facts).clients} == {0.5}


def test_deployed_model_is_the_global_model_under_the_clients_own_mask(
    facts: ModelFacts,
) -> None:
    fleet = Fleet(Config.from_dict({"method": "magnitude", "clients": 2}), facts)
    state = {"w": np.ones(4, np.float32)}
    global_masks = {"w": np.array([True, True, True, False])}
    fleet.clients[0].masks = {"w": np.array([True, False, False, False])}
    np.testing.assert_array_equal(fleet.deployed(0, state, global_masks)["w"], [1, 0, 0, 0])
    np.testing.assert_array_equal(fleet.deployed(1, state, global_masks)["w"], [1, 1, 1, 0])


def test_deploy_masks_put_the_clients_mask_on_the_global_model(facts: ModelFacts) -> None:
    fleet = Fleet(Config.from_dict({"method": "magnitude", "clients": 2}), facts)
    global_masks = {"w": np.array([True, True, False, False]), "v": np.array([True, False])}
    fleet.clients[0].masks = {"w": np.array([True, False, True, False])}
    got = fleet.deploy_masks(0, global_masks)
    np.testing.assert_array_equal(got["w"], [True, False, False, False])
    np.testing.assert_array_equal(got["v"], [True, False])
    assert fleet.deploy_masks(1, global_masks) == global_masks


def test_fits_final_needs_a_mask_inside_the_final_budget(facts: ModelFacts) -> None:
    fleet = Fleet(Config.from_dict({"method": "fedrlprune", "clients": 4}), facts)
    state = get_state(build_model("lenet5", (1, 28, 28), 10))
    assert not fleet.fits_final(0, state, {})  # never pruned: the policy must decide
    fleet.clients[0].masks = magnitude_masks(state, dict.fromkeys(facts.targets, 0.999))
    assert fleet.fits_final(0, state, fleet.deploy_masks(0, {}))  # inside any tier's budget
    fleet.clients[0].masks = magnitude_masks(state, dict.fromkeys(facts.targets, 0.01))
    assert not fleet.fits_final(0, state, fleet.deploy_masks(0, {}))  # every budget is < 99%


@pytest.mark.parametrize("regrow", [True, False])
def test_regrow_sends_the_global_mask_in_pruning_rounds_only(
    facts: ModelFacts, regrow: bool
) -> None:
    fleet = Fleet(Config.from_dict({"method": "fedrlprune", "regrow": regrow}), facts)
    own = {"w": np.array([True, False])}
    global_masks = {"w": np.array([True, True])}
    assert fleet.masks_for(0, global_masks, 5) is global_masks  # not pruned yet: global
    fleet.clients[0].masks = own
    pruning, training = fleet.prune_rounds[-1], fleet.prune_rounds[-1] + 1
    assert fleet.masks_for(0, global_masks, training) is own
    assert fleet.masks_for(0, global_masks, pruning) is (global_masks if regrow else own)


def test_central_policy_is_trained_by_one_client_only(facts: ModelFacts) -> None:
    cfg = Config.from_dict({"rl_policy": "central", "clients": 6, "heldout_clients": 2})
    fleet = Fleet(cfg, facts)
    assert fleet.trainer not in fleet.heldout
    assert fleet.trainer == min(set(range(6)) - fleet.heldout)
    learners = [c for c in range(6) if fleet.rl_extras(c, 1, learn=True)["learn"]]
    assert learners == [fleet.trainer]
    local = Fleet(Config.from_dict({"rl_policy": "local", "clients": 6}), facts)
    assert all(local.rl_extras(c, 1, learn=True)["learn"] for c in range(6))


def test_core_is_what_every_client_that_pruned_keeps(facts: ModelFacts) -> None:
    fleet = Fleet(Config.from_dict({"clients": 3}), facts)
    assert fleet.core_masks() == {}  # nobody has pruned yet
    fleet.clients[0].masks = {"w": np.array([True, True, True, False])}
    fleet.clients[1].masks = {"w": np.array([True, False, True, True])}
    np.testing.assert_array_equal(fleet.core_masks()["w"], [True, False, True, False])
    assert fleet.clients[0].masks["w"].tolist() == [True, True, True, False]  # not changed
