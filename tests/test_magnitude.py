"""`magnitude`: one rate for everyone along the schedule, or what each budget needs."""

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.devices import within_budget
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.methods.fedavg import FedAvg
from fedrlprune.methods.magnitude import Magnitude
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.training import get_state


@pytest.fixture(scope="module")
def facts() -> ModelFacts:
    return ModelFacts.of(build_model("lenet5", (1, 28, 28), 10), (1, 28, 28), None)


def test_fedavg_never_prunes(facts: ModelFacts) -> None:
    cfg = Config.from_dict({"method": "fedavg"})
    fedavg = FedAvg(cfg, Fleet(cfg, facts))
    masks = {"w": np.array([True, False])}
    orders = [fedavg.orders(c, r, {}, masks, {}) for c in range(10) for r in range(1, 21)]
    assert all(o.prune_rate == 0.0 and o.policy is None and o.masks is masks for o in orders)


def test_magnitude_rates_follow_the_schedule_and_the_budgets(facts: ModelFacts) -> None:
    cfg = Config.from_dict(
        {"method": "magnitude", "prune_rate": 0.5, "clients": 8, "respect_budgets": True}
    )
    fleet = Fleet(cfg, facts)
    method = Magnitude(cfg, fleet)
    assert fleet.prune_rounds == [3, 4, 5, 6, 7, 8, 9, 10]
    for rec in fleet.clients:
        assert method.final_rate[rec.cid] >= 0.5
        assert method.rate_now(rec.cid, 2) == 0.0
        assert method.rate_now(rec.cid, 10) == pytest.approx(method.final_rate[rec.cid])
        assert method.deploy_orders(rec.cid, {}, {}).prune_rate == method.final_rate[rec.cid]
        # Pruning every target layer at the final rate puts the deployed model in its budget.
        state = get_state(build_model("lenet5", (1, 28, 28), 10))
        masks = magnitude_masks(state, dict.fromkeys(facts.targets, method.final_rate[rec.cid]))
        cost = facts.cost(apply_masks(state, masks))
        assert within_budget(rec.budget, cost.effective_flops, cost.nonzero_params), rec.tier
    by_tier = {rec.tier: method.final_rate[rec.cid] for rec in fleet.clients}
    assert by_tier["mcu"] > by_tier["sbc"] > by_tier["phone"] >= by_tier["laptop"]


def test_without_budgets_everyone_prunes_the_same(facts: ModelFacts) -> None:
    cfg = Config.from_dict({"method": "magnitude", "prune_rate": 0.5, "respect_budgets": False})
    assert set(Magnitude(cfg, Fleet(cfg, facts)).final_rate.values()) == {0.5}
