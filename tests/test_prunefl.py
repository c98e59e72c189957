"""PruneFL: the mask readjustment keeps what buys the most importance per second of round."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.config import Config
from fedrlprune.data.federated import global_test
from fedrlprune.data.loaders import load_dataset
from fedrlprune.devices import DeviceProfile
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.federation.checkpoint import RunState
from fedrlprune.federation.client import client_data, train_round
from fedrlprune.federation.messages import Reply
from fedrlprune.federation.server import Federation
from fedrlprune.methods import base, prunefl
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.training import as_tensors

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)


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


def test_a_rounds_importance_is_its_summed_gradient_squared_times_its_samples() -> None:
    # adaptive.py: accumulated_sgrad[key] += (grad ** 2) * num_proc_data, grad summed over steps
    got = prunefl.round_importance({"w": np.array([1.0, -2.0, 0.0])}, 3)
    np.testing.assert_allclose(got["w"], [3.0, 12.0, 0.0])
    # The share dropped halves every HALF_LIFE rounds (MAX_DEC_DIFF 0.3, ADJ_HALF_LIFE 10000).
    assert prunefl.decrease_share(1) == pytest.approx(0.3)
    assert prunefl.decrease_share(prunefl.HALF_LIFE + 1) == pytest.approx(0.15)


def test_the_hook_sums_gradients_over_the_steps_before_anything_is_squared() -> None:
    model = nn.Linear(2, 1, bias=True)
    mask = {"weight": np.array([[True, False]])}  # the second weight is pruned
    hook = prunefl.ImportanceHook(model, mask, ["weight"])
    grads = []
    for x in (torch.tensor([[1.0, 2.0]]), torch.tensor([[-3.0, 1.0]])):
        model.zero_grad()
        model(x).sum().backward()
        assert model.weight.grad is not None
        grads.append(model.weight.grad.clone())
        hook.before_step()
        hook.after_step()
    # Summed (1 - 3, 2 + 1), not squared per step: opposite gradients cancel. The pruned weight
    # is counted too, read before the mask zeroes its gradient.
    np.testing.assert_allclose(hook.sums["weight"].numpy(), (grads[0] + grads[1]).numpy())
    np.testing.assert_allclose(hook.sums["weight"].numpy(), [[-2.0, 3.0]])
    np.testing.assert_allclose(hook.rest["bias"].numpy(), [2.0])


# Readjusts in round 4 only: rounds 1-3 gather importance for it.
SHORT = {"dataset": "digits", "model": "mlp", "method": "prunefl", "clients": 2, "rounds": 5,
         "local_epochs": 1, "lr": 0.05, "prune_start": 0.6, "prune_until": 0.6,
         "data_fraction": 0.3, "eval_every": 5}  # fmt: skip


def _federation(
    cfg: Config, resume: RunState | None = None
) -> tuple[Federation, list[base.ClientData]]:
    dataset = load_dataset(cfg.dataset)
    clients = [client_data(cfg, c, None, dataset) for c in range(cfg.clients)]
    torch.manual_seed(cfg.seed)  # the same initial model for every run, as the runner builds it
    model = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    test = as_tensors(*global_test(cfg, dataset))
    fed = Federation(cfg, model, dataset.input_shape, test, resume)
    fed.start({c: len(data.y_train) for c, data in enumerate(clients)})
    return fed, clients


def _play(fed: Federation, clients: list[base.ClientData], rounds: range) -> dict[int, dict]:
    """Rounds with in-process clients; every accepted reply by round."""
    seen = {}
    for rnd in rounds:
        orders = fed.orders(rnd, fed.sample(rnd))
        replies = {}
        for c, o in orders.items():
            up = train_round(fed.cfg, clients[c], apply_masks(fed.state, o.masks), o.masks, o)
            replies[c] = Reply(up.state, up.masks, up.metrics, up.policy, 1, up.importance)
        fed.settle(rnd, orders, replies, {}, dict.fromkeys(orders, 1))
        seen[rnd] = replies
    return seen


def test_importance_gathers_over_every_round_since_the_last_readjustment_and_resumes() -> None:
    cfg = Config.from_dict(SHORT)
    assert cfg.rounds == 5
    fed, clients = _federation(cfg)
    assert fed.fleet.prune_rounds == [4]
    seen = _play(fed, clients, range(1, 4))
    # Every round before the readjustment sent importance, and the server holds their sum over
    # clients and rounds (ControlModule.accumulate), not the last round's alone.
    assert all(r.importance is not None for rnd in (1, 2, 3) for r in seen[rnd].values())
    for name, held in fed.method.pending.items():  # type: ignore[attr-defined]
        want = sum(r.importance[name].astype(np.float64) for rnd in (1, 2, 3)
                   for r in seen[rnd].values())  # fmt: skip
        np.testing.assert_allclose(held, want)
        last = sum(r.importance[name] for r in seen[3].values())
        assert held.sum() > last.sum()
    seen |= _play(fed, clients, range(4, 6))
    assert fed.method.pending == {}  # type: ignore[attr-defined]
    assert all(r.importance is None for rnd in (4, 5) for r in seen[rnd].values())  # no later
    kept = sum(int(m.sum()) for m in fed.global_masks.values())
    assert 0 < kept < sum(m.size for m in fed.global_masks.values())  # round 4 readjusted

    # Stopped after round 2 (importance pending) and resumed: the same run, bit for bit.
    stopped, clients = _federation(cfg)
    _play(stopped, clients, range(1, 3))
    resumed, clients = _federation(cfg, stopped.snapshot([], [], 0.0))
    _play(resumed, clients, range(3, 6))
    for name, value in fed.state.items():
        np.testing.assert_array_equal(resumed.state[name], value)
    for name, mask in fed.global_masks.items():
        np.testing.assert_array_equal(resumed.global_masks[name], mask)


def test_prunefl_end_to_end_shares_one_readjusted_mask(tmp_path: Path) -> None:
    cfg = {"dataset": "digits", "model": "mlp", "method": "prunefl", "clients": 3, "rounds": 4,
           "latency_runs": 0}  # fmt: skip
    summary = run_experiment({**cfg, "lr": 0.05}, out_dir=tmp_path / "p", live=False)
    assert summary["failed_clients"] == []
    assert summary["pruned_layers_density"] < 1.0  # round 2 readjusted the mask
    assert len({c["nonzero_params"] for c in summary["per_client"]}) == 1  # one mask for all
    assert summary["final_accuracy"] > 0.5  # 10 classes: chance is 0.1
