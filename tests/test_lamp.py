"""`lamp`: LAMP's score (Lee et al., ICLR 2021), global pruning by it to a budget, and the
client's prune at the resulting per-layer rates through the server's orders."""

import numpy as np
import pytest
import torch

from fedrlprune.config import Config
from fedrlprune.devices import Budget, within_budget
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.methods.base import ClientData
from fedrlprune.methods.lamp import Lamp, lamp_counts, lamp_scores, unit_magnitudes
from fedrlprune.methods.rules import Account, LayerUnits, exact_rate
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import layer_sparsity, magnitude_masks, pruning_targets
from fedrlprune.training import get_state

SHAPE = (1, 28, 28)


def client() -> ClientData:
    """A client's LeNet-5 without data: pruning reads the model and its layers only."""
    model = build_model("lenet5", SHAPE, 10)
    empty = torch.zeros(0)
    return ClientData(
        model, *[empty] * 6, SHAPE, 10, {}, pruning_targets(model),
        lambda shape, classes: build_model("lenet5", shape, classes),
    )  # fmt: skip


def paper_score(w: np.ndarray, u: int) -> float:
    """The paper's eq. (2), written out: w_u^2 over the sum of w_v^2 for |w_v| >= |w_u|."""
    return float(w[u] ** 2 / sum(v**2 for v in w if abs(v) >= abs(w[u])))


def test_scores_match_the_papers_formula() -> None:
    magnitudes = np.array([3.0, 1.0, 2.0])  # squares 9, 1, 4
    np.testing.assert_allclose(lamp_scores(magnitudes), [9 / 9, 1 / 14, 4 / 13])
    w = np.random.default_rng(0).normal(size=50)
    expected = [paper_score(w, u) for u in range(w.size)]
    np.testing.assert_allclose(lamp_scores(np.abs(w)), expected, rtol=1e-12)


def test_scores_rise_with_magnitude_and_ignore_a_layers_scale() -> None:
    w = np.abs(np.random.default_rng(1).normal(size=40))
    scores = lamp_scores(w)
    assert (np.diff(scores[np.argsort(w)]) > 0).all() and scores.max() == 1.0
    np.testing.assert_allclose(lamp_scores(0.01 * w), scores)  # unlike global magnitude
    np.testing.assert_allclose(lamp_scores(np.array([2.0, 2.0])), [0.5, 1.0])  # ties: by position
    assert (lamp_scores(np.zeros(3)) == 0).all()


def _account(max_params: float, max_flops: float = 1e12) -> Account:
    layers = (LayerUnits("a", 100, 0, 1, 100), LayerUnits("b", 100, 0, 1, 10_000))
    return Account(layers, 250, 10_500, Budget(max_flops, max_params))


def test_global_pruning_keeps_the_budget_and_prunes_a_layer_of_small_weights_more() -> None:
    """Layer a: ten large weights among ninety uniformly small ones; layer b: a hundred of about
    the same size. LAMP prunes a's small weights first, the fewest that meet the budget."""
    rng = np.random.default_rng(2)
    a = np.concatenate([np.full(10, 1.0), rng.uniform(0.01, 0.02, 90)])
    b = rng.uniform(0.5, 1.0, 100)
    account = _account(max_params=150)  # 100 of the 200 target weights must go
    counts = lamp_counts(account, {"a": a, "b": b})
    assert account.fits(counts) and sum(counts.values()) == 100
    assert counts["a"] > counts["b"] and counts["a"] == 90
    fewer = dict(counts, b=counts["b"] - 1)
    assert not account.fits(fewer)


def test_both_limits_hold_when_the_flops_bind() -> None:
    """Layer b costs 100 FLOPs a weight, a costs 1: the FLOPs limit needs more of the order."""
    rng = np.random.default_rng(3)
    magnitudes = {"a": rng.uniform(0.1, 1.0, 100), "b": rng.uniform(0.1, 1.0, 100)}
    by_params = lamp_counts(_account(max_params=200), magnitudes)
    both = lamp_counts(_account(max_params=200, max_flops=5_000), magnitudes)
    assert _account(max_params=200, max_flops=5_000).fits(both)
    assert all(both[k] >= by_params[k] for k in both) and both != by_params


def test_no_layer_is_pruned_to_nothing_even_when_the_budget_is_out_of_reach() -> None:
    rng = np.random.default_rng(4)
    magnitudes = {"a": rng.uniform(size=100), "b": rng.uniform(size=100)}
    counts = lamp_counts(_account(max_params=1), magnitudes)
    assert counts == {"a": 99, "b": 99}


@pytest.mark.parametrize("mode", ["unstructured", "structured"])
def test_every_client_prunes_inside_its_step_budget_at_lamps_rates(mode: str) -> None:
    """Through the server's orders: each step fits its budget by the server's own count, each
    layer is pruned by magnitude at its rate, and the rates differ between layers."""
    cfg = Config.from_dict(
        {"method": "lamp", "clients": 3, "rounds": 8, "prune_mode": mode,
         "device_mix": "sbc,phone,laptop"}
    )  # fmt: skip
    data = client()
    facts = ModelFacts.of(data.model, SHAPE, None, structured=mode == "structured")
    method = Lamp(cfg, Fleet(cfg, facts))
    state = get_state(data.model)
    for cid in range(cfg.clients):
        masks: dict[str, np.ndarray] = {}
        for rnd in method.fleet.prune_rounds:
            orders = method.orders(cid, rnd, state, masks, {})
            assert orders.policy is None and orders.rl is None
            pruned = Lamp.prune(cfg, data, state, masks, orders)
            cost = facts.cost(pruned.state)
            limit = method.fleet.pruning_budget(cid)
            assert within_budget(limit, cost.effective_flops, cost.nonzero_params)
            rates = {k.removeprefix("rate/"): v for k, v in pruned.metrics.items()}
            assert set(rates) == set(facts.targets) and len(set(rates.values())) > 1
            units = {t: state[f"{t}.weight"].shape[0] if cfg.structured else facts.weights[t]
                     for t in facts.targets}  # fmt: skip
            exact = {t: exact_rate(round(r * units[t]), units[t]) for t, r in rates.items()}
            again = magnitude_masks(state, exact, mode, masks)  # pruned by magnitude
            assert all(np.array_equal(again[k], pruned.masks[k]) for k in again)
            masks = pruned.masks


def test_unstructured_rates_are_the_masks_sparsity_and_magnitudes_skip_pruned_weights() -> None:
    cfg = Config.from_dict(
        {"method": "lamp", "clients": 2, "rounds": 4, "prune_mode": "unstructured"}
    )
    data = client()
    method = Lamp(cfg, Fleet(cfg, ModelFacts.of(data.model, SHAPE, None)))
    state = get_state(data.model)
    half = magnitude_masks(state, {"conv2": 0.5})
    assert unit_magnitudes(state, half, "conv2", "unstructured").size == half["conv2.weight"].sum()
    assert unit_magnitudes(state, half, "conv2", "structured").size == 16
    orders = method.orders(0, method.fleet.prune_rounds[-1], state, half, {})
    pruned = Lamp.prune(cfg, data, state, half, orders)
    assert (pruned.masks["conv2.weight"] <= half["conv2.weight"]).all()
    sparsity = {f"rate/{k}": v for k, v in layer_sparsity(pruned.masks).items()}
    assert sparsity == pytest.approx(pruned.metrics)
    assert method.artifacts() == {} and method.snapshot() == {}
