"""FedDST: prune and regrow keeps the sparsity, regrows by gradient; the run stays at it."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.config import Config
from fedrlprune.data.federated import global_test
from fedrlprune.data.loaders import load_dataset
from fedrlprune.errors import PayloadError
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.federation.client import client_data, train_round
from fedrlprune.federation.messages import Reply
from fedrlprune.federation.server import Federation
from fedrlprune.fl.validation import check_not_denser
from fedrlprune.methods import feddst
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.training import as_tensors

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)


def test_readjustments_follow_the_official_interval_until_half_the_run() -> None:
    # dst.py: 0-based rounds r with (r - 1) % 10 == 0 while r < rounds // 2; ours are 1-based.
    assert feddst.readjust_rounds(400, 10) == list(range(2, 200, 10))  # 20 of them
    assert feddst.readjust_rounds(40, 10) == [2, 12]
    # 20 rounds: 10 would readjust once (r = 1 only), so the interval shrinks to 10 - 2 = 8.
    assert feddst.readjust_rounds(20, 10) == [2, 10]
    assert feddst.readjust_rounds(4, 10) == [2]  # as many as half of a tiny run allows


def test_erk_prunes_large_layers_most_at_the_overall_sparsity() -> None:
    shapes = {"fc1": (100, 64), "fc2": (10, 100), "conv": (16, 3, 3, 3)}
    rates = feddst.erk_rates(shapes, 0.8)
    sizes = {k: int(np.prod(v)) for k, v in shapes.items()}
    overall = sum(rates[k] * sizes[k] for k in shapes) / sum(sizes.values())
    assert overall == pytest.approx(0.8)
    # models.py: sparsity in proportion to 1 - (n_in + n_out [+ sum(kernel)]) / (n_in n_out k)
    raw = {"fc1": 1 - 164 / 6400, "fc2": 1 - 110 / 1000, "conv": 1 - (3 + 16 + 6) / (3 * 16 * 9)}
    assert rates["fc1"] / rates["fc2"] == pytest.approx(raw["fc1"] / raw["fc2"])
    assert rates["fc1"] / rates["conv"] == pytest.approx(raw["fc1"] / raw["conv"])
    assert feddst.erk_rates({"a": (2, 2), "b": (50, 50)}, 0.98)["b"] <= 1 - 1 / 2500


def _run(cfg: Config) -> tuple[Federation, dict[int, dict[int, Any]]]:
    """The federation's rounds with in-process clients; every reply's metrics by round."""
    dataset = load_dataset(cfg.dataset)
    clients = [client_data(cfg, c, None, dataset) for c in range(cfg.clients)]
    model = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    fed = Federation(cfg, model, dataset.input_shape, as_tensors(*global_test(cfg, dataset)))
    fed.start({c: len(data.y_train) for c, data in enumerate(clients)})
    seen: dict[int, dict[int, Any]] = {}
    for rnd in range(1, cfg.rounds + 1):
        orders = fed.orders(rnd, fed.sample(rnd))
        replies = {}
        for c, o in orders.items():
            up = train_round(cfg, clients[c], apply_masks(fed.state, o.masks), o.masks, o)
            replies[c] = Reply(up.state, up.masks, up.metrics, up.policy, 1, up.importance)
        seen[rnd] = {c: (o.readjust, replies[c].metrics) for c, o in orders.items()}
        fed.settle(rnd, orders, replies, {}, dict.fromkeys(orders, 1))
    return fed, seen


MOVING = {"dataset": "digits", "model": "mlp", "method": "feddst", "clients": 2, "rounds": 8,
          "local_epochs": 1, "lr": 0.05, "feddst_every": 2, "feddst_ratio": 0.3,
          "data_fraction": 0.3, "eval_every": 8}  # fmt: skip


def test_clients_move_masks_only_in_readjustment_rounds_by_a_constant_ratio() -> None:
    cfg = Config.from_dict(MOVING)
    fed, seen = _run(cfg)
    moving = feddst.readjust_rounds(8, 2)
    assert moving == [2, 4]  # every 2 rounds from the second, until half the run
    for rnd, replies in seen.items():
        for ratio, metrics in replies.values():
            # dst.py moves args.readjustment_ratio itself; its annealed value only gates.
            assert ratio == (0.3 if rnd in moving else 0.0)
            assert (metrics.get("mask-moved", 0) > 0) == (rnd in moving)
    kept = sum(int(m.sum()) for m in fed.global_masks.values())
    total = sum(m.size for m in fed.global_masks.values())
    assert 1 - kept / total == pytest.approx(cfg.prune_rate, abs=1e-3)


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
    # phones: the test is of FedDST's masks, not of a microcontroller's momentum-free SGD
    cfg = {"dataset": "digits", "model": "mlp", "method": "feddst", "clients": 3, "rounds": 4,
           "latency_runs": 0, "device_mix": "phone"}  # fmt: skip
    summary = run_experiment({**cfg, "lr": 0.05}, out_dir=tmp_path / "d", live=False)
    assert summary["failed_clients"] == []
    # prune_rate 0.8 over the pruned layers (ERK) from round 1, re-pruned by the server.
    assert summary["pruned_layers_density"] == pytest.approx(0.2, abs=1e-3)
    assert len({c["nonzero_params"] for c in summary["per_client"]}) == 1
    assert summary["final_accuracy"] > 0.5
