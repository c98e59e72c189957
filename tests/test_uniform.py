"""`uniform`: the one rate a step's budget needs, and the client's prune at it through the
server's orders (the pipeline it shares with `fedrlprune`)."""

import math

import numpy as np
import pytest
import torch

from fedrlprune.config import Config
from fedrlprune.devices import Budget, within_budget
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.methods.base import ClientData
from fedrlprune.methods.rules import Account, LayerUnits
from fedrlprune.methods.uniform import Uniform, uniform_counts, uniform_rate
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import layer_sparsity, magnitude_masks, pruning_targets
from fedrlprune.pruning.schedule import MAX_RATE
from fedrlprune.rl.env import ClientFeatures, PruningEnv, layer_infos
from fedrlprune.training import get_state

SHAPE = (1, 28, 28)


def _account(max_params: float, max_flops: float = 1e12, dead: int = 0) -> Account:
    """Two hand-made layers: 100 weights costing 10 FLOPs each, 300 weights costing 1 each."""
    layers = (LayerUnits("a", 100, dead, 1, 1_000), LayerUnits("b", 300, 0, 1, 300))
    return Account(layers, 500, 1_500, Budget(max_flops, max_params))


def test_the_rate_is_the_smallest_that_fits_the_parameters() -> None:
    account = _account(max_params=300)  # 200 of the 400 target weights must go: rate 0.5
    rate = uniform_rate(account)
    assert rate == pytest.approx(0.5)
    assert uniform_counts(account, rate) == {"a": 50, "b": 150}
    assert account.fits(uniform_counts(account, rate))
    assert not account.fits(uniform_counts(account, math.nextafter(rate, 0.0)))


def test_the_rate_is_the_smallest_that_fits_the_flops_when_they_bind() -> None:
    account = _account(max_params=500, max_flops=1_000)  # 500 of 1300 target FLOPs must go
    rate = uniform_rate(account)
    assert account.fits(uniform_counts(account, rate))
    assert not account.fits(uniform_counts(account, rate - 1e-9))
    assert rate == pytest.approx(500 / 1_300, abs=1 / 100)


def test_what_the_mask_already_prunes_counts_toward_the_budget() -> None:
    fresh, sparse = _account(max_params=300), _account(max_params=300, dead=90)
    assert uniform_rate(sparse) < uniform_rate(fresh)
    counts = uniform_counts(sparse, uniform_rate(sparse))
    assert counts["a"] == 90 and sparse.fits(counts)  # a layer already sparser stays as it is


def test_a_budget_already_met_prunes_nothing_and_an_unreachable_one_prunes_to_the_max() -> None:
    assert uniform_rate(_account(max_params=500)) == 0.0
    assert uniform_rate(_account(max_params=10)) == MAX_RATE


def test_the_pruning_envs_action_wall_accepts_the_rate() -> None:
    """Unstructured, the rule counts the cost as the env does: its rate fits the env's count."""
    model = build_model("lenet5", SHAPE, 10)
    layers = layer_infos(model, SHAPE, pruning_targets(model))
    facts = ModelFacts.of(model, SHAPE, None)
    limit = Budget(0.3 * facts.total_flops, 0.15 * facts.dense_params)
    units = tuple(LayerUnits(x.name, x.weights, 0, 1, x.flops) for x in layers)
    rate = uniform_rate(Account(units, facts.dense_params, facts.total_flops, limit))
    env = PruningEnv(
        layers,
        total_params=facts.dense_params,
        total_flops=facts.total_flops,
        budget=limit,
        evaluate=lambda rates: 0.0,
        client=ClientFeatures(0.3, 0.15, 0.5, 0.5, 1.0),
    )
    params, flops = env.cost([rate] * len(layers))
    assert within_budget(limit, flops, params)
    params, flops = env.cost([rate - 1e-6] * len(layers))
    assert not within_budget(limit, flops, params)


def client(model_name: str = "lenet5") -> ClientData:
    """A client's model without data: pruning reads the model and its layers only."""
    model = build_model(model_name, SHAPE, 10)
    empty = torch.zeros(0)
    return ClientData(
        model, *[empty] * 6, SHAPE, 10, {}, pruning_targets(model),
        lambda shape, classes: build_model(model_name, shape, classes),
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["unstructured", "structured"])
def test_every_client_prunes_inside_its_step_budget_at_one_rate(mode: str) -> None:
    """Through the server's orders: each step's prune fits that step's budget (by the server's
    own count of the model), pruned weights stay pruned, one rate covers every layer."""
    cfg = Config.from_dict(
        {"method": "uniform", "clients": 3, "rounds": 8, "prune_mode": mode,
         "device_mix": "sbc,phone,laptop", "regrow": False}
    )  # fmt: skip
    data = client()
    facts = ModelFacts.of(data.model, SHAPE, None, structured=mode == "structured")
    method = Uniform(cfg, Fleet(cfg, facts))
    state = get_state(data.model)
    units = [state[f"{t}.weight"].shape[0] if cfg.structured else facts.weights[t]
             for t in facts.targets]  # fmt: skip
    step = 1 / min(units)  # one rate: the layers differ by the rounding of their unit counts
    for cid in range(cfg.clients):
        masks: dict[str, np.ndarray] = {}
        for rnd in method.fleet.prune_rounds:
            orders = method.orders(cid, rnd, state, masks, {})
            assert orders.policy is None and orders.rl is None
            pruned = Uniform.prune(cfg, data, state, masks, orders)
            cost = facts.cost(pruned.state)
            limit = method.fleet.pruning_budget(cid)
            assert within_budget(limit, cost.effective_flops, cost.nonzero_params)
            assert all((pruned.masks[k] <= m).all() for k, m in masks.items())
            assert not any(k.startswith("rl-") for k in pruned.metrics)
            rates = [v for k, v in pruned.metrics.items() if k.startswith("rate/")]
            assert len(rates) == len(facts.targets) and max(rates) - min(rates) <= step
            masks = pruned.masks


def test_the_reported_rates_are_the_masks_sparsity() -> None:
    cfg = Config.from_dict({"method": "uniform", "clients": 2, "rounds": 4})
    data = client()
    facts = ModelFacts.of(data.model, SHAPE, None)
    method = Uniform(cfg, Fleet(cfg, facts))
    state = get_state(data.model)
    orders = method.orders(0, method.fleet.prune_rounds[-1], state, {}, {})
    pruned = Uniform.prune(cfg, data, state, {}, orders)
    sparsity = layer_sparsity(pruned.masks)
    assert {f"rate/{k}": v for k, v in sparsity.items()} == pytest.approx(pruned.metrics)


def test_no_policy_travels_is_kept_or_written() -> None:
    # a phone: on the MCU, LeNet-5's sparse storage at 99% (indices included) is over budget
    cfg = Config.from_dict({"method": "uniform", "clients": 2, "device_mix": "phone"})
    data = client()
    facts = ModelFacts.of(data.model, SHAPE, None)
    method = Uniform(cfg, Fleet(cfg, facts))
    state = get_state(data.model)
    deploy = method.deploy_orders(0, state, {})  # never pruned: prune to the final budget
    final = method.fleet.pruning_budget(0)  # memory and sparse storage folded in
    assert deploy.deploy and deploy.policy is None and deploy.rl is None
    assert deploy.budget_flops == pytest.approx(final.max_flops)
    assert deploy.budget_params == pytest.approx(final.max_params)
    method.fleet.clients[0].masks = magnitude_masks(state, dict.fromkeys(facts.targets, 0.99))
    kept = method.deploy_orders(0, state, method.fleet.deploy_masks(0, {}))
    assert kept.budget_params == 0.0  # the mask fits: it is kept, nothing is pruned
    assert method.artifacts() == {} and method.snapshot() == {}
    training = method.orders(0, method.fleet.prune_rounds[-1] + 1, state, {}, {})
    assert training.budget_params == 0.0
    assert Uniform.prune(cfg, data, state, {}, training).masks == {}
