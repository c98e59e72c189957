"""A client's side of a round without Flower: the core it trains beside its own model, and the
compact sub-model a structured client trains."""

import dataclasses

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.federation.client import client_data, core_within, local_training, train_round
from fedrlprune.federation.messages import Orders
from fedrlprune.methods import METHODS
from fedrlprune.methods.base import ClientData
from fedrlprune.pruning.masks import apply_masks, magnitude_masks
from fedrlprune.training import get_state, set_state


def test_the_core_is_taken_within_the_clients_own_mask() -> None:
    own = {"w": np.array([[1, 1, 0], [1, 1, 1]], bool)}
    core = {"w": np.array([[1, 0, 1], [0, 0, 1]], bool)}
    got = core_within(core, own)
    assert got is not None
    np.testing.assert_array_equal(got["w"], [[1, 0, 0], [0, 0, 1]])


def test_no_core_when_none_was_sent_or_it_is_the_clients_own_model() -> None:
    own = {"w": np.array([[1, 0, 0], [0, 0, 1]], bool)}
    assert core_within({}, own) is None
    wider = {"w": np.array([[1, 1, 0], [0, 1, 1]], bool)}  # within `own`, the same model
    assert core_within(wider, own) is None


def structured_client(method: str = "magnitude") -> tuple[Config, ClientData]:
    cfg = Config.from_dict(
        {"dataset": "digits", "model": "mlp", "clients": 4, "method": method,
         "prune_mode": "structured", "latency_runs": 0}
    )  # fmt: skip
    return cfg, client_data(cfg, 0)


def test_a_structured_client_trains_its_compact_sub_model_as_the_masked_dense_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg, data = structured_client()
    state = get_state(data.model)
    orders = Orders(round=1, masks={}, prune_rate=0.5)
    compact = train_round(cfg, data, state, {}, orders)
    monkeypatch.setattr(METHODS["magnitude"], "compact_training", False)
    dense = train_round(cfg, data, state, {}, orders)
    assert (compact.metrics["compact-training"], dense.metrics["compact-training"]) == (1, 0)
    assert compact.metrics["compact-seconds"] > 0 == dense.metrics["compact-seconds"]
    assert compact.masks["fc1.weight"].any(1).sum() == 100  # half of fc1's neurons removed
    for key, value in dense.state.items():  # float32 sums in another order: rounding apart
        np.testing.assert_allclose(compact.state[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    assert not np.allclose(compact.state["fc2.weight"], state["fc2.weight"])


def test_the_compact_sub_model_carries_the_mask_and_core_in_its_coordinates() -> None:
    cfg, data = structured_client()
    state = get_state(data.model)
    groups = data.groups(True)
    masks = magnitude_masks(state, dict.fromkeys(data.targets, 0.5), "structured", None, groups)
    core = magnitude_masks(state, {"fc1": 0.75}, "structured", masks, groups)
    set_state(data.model, apply_masks(state, masks))
    local = local_training(cfg, data, masks, core_within(core, masks))
    assert local.sub is not None and local.data.model is local.sub.model
    shapes = {k: tuple(v.shape) for k, v in local.sub.model.state_dict().items()}
    assert shapes["fc1.weight"] == (100, 64) and shapes["fc2.weight"] == (100, 100)
    assert local.core is not None and local.core["fc1.weight"].shape == (100, 64)
    assert local.core["fc1.weight"].any(1).sum() == 50 and local.masks["fc1.weight"].all()


def test_unstructured_runs_and_methods_needing_dense_coordinates_train_the_dense_model() -> None:
    cfg, data = structured_client()
    state = get_state(data.model)
    masks = magnitude_masks(state, dict.fromkeys(data.targets, 0.5), "structured", None, None)
    unstructured = dataclasses.replace(cfg, prune_mode="unstructured")
    assert local_training(unstructured, data, masks, None).sub is None
    assert local_training(cfg, data, {}, None).sub is None  # nothing pruned yet
    assert local_training(cfg, data, masks, None).sub is not None
    overriding = [m for m in METHODS.values() if "training_hook" in vars(m)]
    assert overriding and not any(m.compact_training for m in overriding)
