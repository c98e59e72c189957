"""FedDST: prune and regrow keeps the sparsity, regrows by gradient; the run stays at it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.errors import PayloadError
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.fl.validation import check_not_denser
from fedrlprune.methods import feddst


def test_readjust_ratio_anneals_by_cosine_to_zero() -> None:
    assert feddst.readjust_ratio(0, 10) == pytest.approx(0.5)
    assert feddst.readjust_ratio(5, 10) == pytest.approx(0.25)  # cos(pi / 2) = 0
    assert feddst.readjust_ratio(10, 10) == 0.0 and feddst.readjust_ratio(12, 10) == 0.0


def test_prune_and_regrow_moves_the_mask_at_constant_sparsity() -> None:
    w = np.array([0.5, -0.1, 0.3, 0.0, 0.0, 0.2])
    mask = np.array([True, True, True, False, False, True])
    grad = np.array([0.0, 0.0, 0.0, 0.9, -0.05, 0.0])
    # 4 kept, ratio 0.5: drop the 2 smallest |w| kept (-0.1 at 1, 0.2 at 5), then regrow the 2
    # largest |grad| among the 4 now pruned: 0.9 at 3, then -0.05 at 4.
    got = feddst.prune_and_regrow(w, mask, grad, 0.5)
    np.testing.assert_array_equal(got, [True, False, True, True, True, False])
    assert got.sum() == mask.sum()
    np.testing.assert_array_equal(feddst.prune_and_regrow(w, mask, grad, 0.1), mask)  # 0 moves


def test_local_gradients_reach_pruned_weights() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 0] = 0.0  # a pruned weight
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    grads = feddst.local_gradients(model, x, y, ["weight"])
    assert grads["weight"].shape == (2, 3) and grads["weight"][0, 0] != 0.0
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.weight.grad is not None
    np.testing.assert_allclose(grads["weight"], model.weight.grad.numpy(), rtol=1e-5)


def test_a_moved_mask_may_not_grow() -> None:
    sent = {"w": np.array([True, False, True, False])}
    check_not_denser({"w": np.array([False, True, True, False])}, sent)  # moved: fine
    with pytest.raises(PayloadError, match="keeps 3"):
        check_not_denser({"w": np.array([True, True, True, False])}, sent)


def test_feddst_end_to_end_stays_at_its_sparsity(tmp_path: Path) -> None:
    cfg = {"dataset": "digits", "model": "mlp", "method": "feddst", "clients": 3, "rounds": 4}
    summary = run_experiment({**cfg, "lr": 0.05}, out_dir=tmp_path / "d", live=False)
    assert summary["failed_clients"] == []
    # prune_rate 0.8 in every pruned layer from round 1, re-pruned by the server each round.
    assert summary["pruned_layers_density"] == pytest.approx(0.2, abs=1e-3)
    assert len({c["nonzero_params"] for c in summary["per_client"]}) == 1
    assert summary["final_accuracy"] > 0.5
