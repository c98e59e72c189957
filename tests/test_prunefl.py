"""PruneFL: the mask readjustment keeps what buys the most importance per second of round."""

from pathlib import Path

import numpy as np
import pytest

from fedrlprune.devices import DeviceProfile
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.methods import prunefl


def test_readjust_drops_the_weakest_kept_weights_unless_their_importance_pays() -> None:
    # decrease 0.5 of 4 kept: |w| 0.1 and 0.2 are candidates; 0.3 and 0.4 stay.
    # Kept: importance 3 + 4 = 7 over 1 s fixed + 2 weights x 1 s = 3 s -> 2.33 per s.
    # Candidate 0 (importance 5 per s) raises it -> (7 + 5) / 4 = 3; candidate 1 (0.1) not.
    got = prunefl.readjust(
        {"a": np.array([0.1, 0.2, 0.3, 0.4])},
        {"a": np.ones(4, bool)},
        {"a": np.array([5.0, 0.1, 3.0, 4.0])},
        {"a": 1.0},
        base_seconds=1.0,
        decrease=0.5,
    )
    np.testing.assert_array_equal(got["a"], [True, False, True, True])


def test_equal_importance_goes_to_the_cheaper_layer_and_pruned_weights_can_regrow() -> None:
    # Each layer has one kept weight (never a candidate: 0.5 x 1 rounds to 0) and one pruned
    # weight of importance 2. Start: (1 + 1) / (1 + 1 x 1 + 1 x 4) = 2 / 6 = 0.33 per s.
    # a's candidate: 2 / 1 = 2 > 0.33 -> (2 + 2) / 7 = 0.57; b's: 2 / 4 = 0.5 < 0.57 -> stays out.
    got = prunefl.readjust(
        {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0])},
        {"a": np.array([True, False]), "b": np.array([True, False])},
        {"a": np.array([1.0, 2.0]), "b": np.array([1.0, 2.0])},
        {"a": 1.0, "b": 4.0},
        base_seconds=1.0,
        decrease=0.5,
    )
    np.testing.assert_array_equal(got["a"], [True, True])  # regrown
    np.testing.assert_array_equal(got["b"], [True, False])


def test_seconds_per_weight_count_compute_and_both_links() -> None:
    slow = DeviceProfile("t", 1000.0, 1, 32.0, 32.0, 0.0, 1.0, 1.0)
    # 100 FLOPs over 10 weights = 10 per weight; x3 for training x 5 samples = 150 FLOPs
    # = 0.15 s; 32 bits over 32 bit/s up and down = 2 s.
    assert prunefl.seconds_per_weight({"l": 100}, {"l": 10}, slow, 5)["l"] == pytest.approx(2.15)
    # The head (200 FLOPs, 4 params) is never pruned: 3 x 200 x 5 / 1000 + 4 x 2 = 11 s.
    fixed = prunefl.fixed_seconds(300, 14, {"l": 100}, {"l": 10}, slow, 5)
    assert fixed == pytest.approx(11.0)


def test_importance_of_the_clients_is_summed() -> None:
    got = prunefl.summed_importance([{"w": np.array([1.0, 2.0])}, {"w": np.array([0.5, 0.0])}])
    np.testing.assert_allclose(got["w"], [1.5, 2.0])


def test_prunefl_end_to_end_shares_one_readjusted_mask(tmp_path: Path) -> None:
    cfg = {"dataset": "digits", "model": "mlp", "method": "prunefl", "clients": 3, "rounds": 4}
    summary = run_experiment({**cfg, "lr": 0.05}, out_dir=tmp_path / "p", live=False)
    assert summary["failed_clients"] == []
    assert summary["pruned_layers_density"] < 1.0  # round 2 readjusted the mask
    assert len({c["nonzero_params"] for c in summary["per_client"]}) == 1  # one mask for all
    assert summary["final_accuracy"] > 0.5  # 10 classes: chance is 0.1
