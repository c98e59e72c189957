"""The server's view of its clients: tiers, budgets, masks, and what their models cost."""

import numpy as np
import pytest
import torch

from fedrlprune.config import Config
from fedrlprune.devices import TIERS, Budget, within_budget
from fedrlprune.federation.fleet import Fleet, ModelFacts
from fedrlprune.models import build_model
from fedrlprune.pruning.compact import compact_model
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.pruning.memory import memory_bytes, sparse_bytes
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.training import set_state


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


SHAPE = (1, 28, 28)


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_a_structured_budget_checks_the_compact_models_params_flops_and_memory() -> None:
    model = build_model("lenet5", SHAPE, 10)
    facts = ModelFacts.of(model, SHAPE, None, structured=True)
    fleet = Fleet(Config.from_dict({"clients": 1, "prune_mode": "structured"}), facts)
    state = _state(model)
    masks = magnitude_masks(state, {"conv1": 0.5, "fc1": 0.5}, "structured", None, facts.groups)
    entry = fleet.report(0, apply_masks(state, masks), facts.footprint(state, masks))
    set_state(model, apply_masks(state, masks))
    compact = compact_model(model, masks, SHAPE)
    assert entry["compact_params"] == sum(p.numel() for p in compact.parameters())
    assert entry["compact_flops"] == total_flops(compact, SHAPE)
    assert entry["memory_bytes"] == memory_bytes(compact, SHAPE)
    mcu = fleet.clients[0].budget
    assert (
        entry["budget_memory_bytes"] == mcu.max_memory == TIERS[fleet.clients[0].tier].memory_bytes
    )
    assert entry["budget_params"] == mcu.max_params and entry["budget_flops"] == mcu.max_flops
    assert entry["within_budget"] == (entry["over_budget"] == [])


def test_an_unstructured_budget_counts_the_sparse_storage_indices_included() -> None:
    model = build_model("lenet5", SHAPE, 10)
    facts = ModelFacts.of(model, SHAPE, None)
    fleet = Fleet(Config.from_dict({"clients": 1, "device_mix": "mcu"}), facts)
    state = _state(model)
    masks = magnitude_masks(state, dict.fromkeys(facts.targets, 0.99), "unstructured")
    deployed = apply_masks(state, masks)
    entry = fleet.report(0, deployed, facts.footprint(state, masks))
    stored = sparse_bytes({p: state[p] for p in facts.params}, masks)
    assert entry["sparse_bytes"] == stored
    assert entry["theoretical_flops"] == entry["effective_flops"]
    # the non-zero weights alone fit the params budget; their stored indices do not
    assert entry["nonzero_params"] <= entry["budget_params"] < stored / 4
    assert entry["over_budget"] == ["params"] and not entry["within_budget"]
    assert not fleet.fits(0, state, masks)
    assert entry["memory_bytes"] == stored + facts.activations + facts.buffer_bytes


def test_the_pruning_budget_folds_memory_and_storage_into_the_params_limit() -> None:
    model = build_model("lenet5", SHAPE, 10)
    structured = ModelFacts.of(model, SHAPE, None, structured=True)
    tight = Budget(1e9, 1e9, max_memory=100_000)
    want = (100_000 - structured.activations - structured.buffer_bytes) / 4
    assert structured.pruning_budget(tight) == Budget(1e9, want)
    facts = ModelFacts.of(model, SHAPE, None)
    final = Budget(1e9, 0.15 * facts.dense_params, max_memory=512 * 1024)
    folded = facts.pruning_budget(final).max_params
    assert folded < final.max_params  # each kept weight also costs an index or bitmask bits
    state = _state(model)
    inside = 0
    for rate in (0.8, 0.85, 0.88, 0.9, 0.92, 0.95):
        masks = magnitude_masks(state, dict.fromkeys(facts.targets, rate), "unstructured")
        kept = sum(np.count_nonzero(apply_masks(state, masks)[p]) for p in facts.params)
        if kept <= folded:  # inside the folded limit: inside the final budget
            inside += 1
            fp = facts.footprint(state, masks)
            assert within_budget(final, fp.flops, fp.params, fp.memory_bytes), rate
    assert inside
