"""`fedrlprune`'s server side: regrowth, the deployment decision and who trains the policy."""

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.methods.fedrlprune import FedRLPrune
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import magnitude_masks
from fedrlprune.training import get_state


@pytest.fixture(scope="module")
def facts() -> ModelFacts:
    return ModelFacts.of(build_model("lenet5", (1, 28, 28), 10), (1, 28, 28), None)


def _method(facts: ModelFacts, **keys: object) -> FedRLPrune:
    cfg = Config.from_dict({"method": "fedrlprune", **keys})
    return FedRLPrune(cfg, Fleet(cfg, facts))


def test_deployment_asks_the_policy_only_when_the_mask_misses_the_final_budget(
    facts: ModelFacts,
) -> None:
    method = _method(facts, clients=4)
    fleet = method.fleet
    state = get_state(build_model("lenet5", (1, 28, 28), 10))
    asked = method.deploy_orders(0, state, {})  # never pruned: the policy must decide
    assert asked.policy is not None and asked.rl is not None and not asked.rl.learn
    fleet.clients[0].masks = magnitude_masks(state, dict.fromkeys(facts.targets, 0.999))
    kept = method.deploy_orders(0, state, fleet.deploy_masks(0, {}))  # inside any budget
    assert kept.policy is None and kept.rl is None and kept.deploy
    fleet.clients[0].masks = magnitude_masks(state, dict.fromkeys(facts.targets, 0.01))
    assert method.deploy_orders(0, state, fleet.deploy_masks(0, {})).policy is not None


@pytest.mark.parametrize("regrow", [True, False])
def test_regrow_sends_the_global_mask_in_pruning_rounds_only(
    facts: ModelFacts, regrow: bool
) -> None:
    method = _method(facts, regrow=regrow)
    fleet = method.fleet
    own = {"w": np.array([True, False])}
    global_masks = {"w": np.array([True, True])}
    assert method.masks_for(0, 5, {}, global_masks) is global_masks  # not pruned yet: global
    fleet.clients[0].masks = own
    pruning, training = fleet.prune_rounds[-1], fleet.prune_rounds[-1] + 1
    assert method.masks_for(0, training, {}, global_masks) is own
    assert method.masks_for(0, pruning, {}, global_masks) is (global_masks if regrow else own)


def test_central_policy_is_trained_by_one_client_only(facts: ModelFacts) -> None:
    method = _method(facts, rl_policy="central", clients=6, heldout_clients=2)
    fleet = method.fleet
    assert fleet.trainer not in fleet.heldout
    assert fleet.trainer == min(set(range(6)) - fleet.heldout)
    learners = [c for c in range(6) if method.rl_orders(c, 3, 1, learn=True).learn]
    assert learners == [fleet.trainer]
    local = _method(facts, rl_policy="local", clients=6, rl_explorers=0)
    assert all(local.rl_orders(c, 3, 1, learn=True).learn for c in range(6))


def test_a_few_drawn_clients_train_the_policy_each_round_never_a_held_out_one(
    facts: ModelFacts,
) -> None:
    method = _method(facts, clients=10, heldout_clients=2, rl_explorers=3)
    draws = [method.explorers(rnd) for rnd in range(1, 21)]
    assert all(len(d) == 3 and not d & method.fleet.heldout for d in draws)
    assert len(set().union(*draws)) == 8, "every trainable client explores in some round"
    assert draws[0] == _method(facts, clients=10, heldout_clients=2, rl_explorers=3).explorers(1)
    learners = {c for c in range(10) if method.rl_orders(c, 1, 1, learn=True).learn}
    assert learners == draws[0]


def test_policies_survive_a_snapshot_and_restore(facts: ModelFacts) -> None:
    method = _method(facts, rl_policy="local", clients=4)
    trained = {k: v + 1.0 for k, v in method.policies.universal.items()}
    method.policies.update({2: trained})
    again = _method(facts, rl_policy="local", clients=4)
    again.restore(method.snapshot())
    for name, value in trained.items():
        np.testing.assert_array_equal(again.policies.for_client(2)[name], value)
        np.testing.assert_array_equal(
            again.policies.universal[name], method.policies.universal[name]
        )
