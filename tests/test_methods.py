"""Every registered method through the federation's core without Flower: rounds, merge and
deployment with in-process clients, so a method's whole rule is exercised on its own."""

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.config import Config
from fedrlprune.data.federated import global_test
from fedrlprune.data.loaders import load_dataset
from fedrlprune.experiments.stats import RoundOutcome
from fedrlprune.federation.checkpoint import RunState
from fedrlprune.federation.client import client_data, deploy, train_round
from fedrlprune.federation.messages import Deployment, Reply
from fedrlprune.federation.server import Federation
from fedrlprune.methods import METHODS
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.compact import compact_model
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.training import as_tensors, set_state

SETTINGS = {"dataset": "digits", "model": "mlp", "clients": 3, "rounds": 4, "lr": 0.05,
            "rl_episodes": 2, "prune_rate": 0.5, "lottery_threshold": 0.0}  # fmt: skip


def run_in_process(
    cfg: Config,
    model_fn: ModelFactory | None = None,
    stop_after: int | None = None,
    resume: RunState | None = None,
    outcomes: list[RoundOutcome] | None = None,
) -> tuple[Federation, list[dict[str, Any]]]:
    """What `fl/server_app.py` does over Flower, with the clients called directly: the model
    travels under its mask (zeros where pruned), as it does on the wire. `stop_after`: return
    after that round (no deployment); `resume`: go on from a snapshot; `outcomes` gets each
    round's outcome."""
    dataset = load_dataset(cfg.dataset)
    clients = [client_data(cfg, c, model_fn, dataset) for c in range(cfg.clients)]
    factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
    torch.manual_seed(cfg.seed)
    model = factory(dataset.input_shape, dataset.num_classes)
    test = as_tensors(*global_test(cfg, dataset))
    fed = Federation(cfg, model, dataset.input_shape, test, resume)
    fed.start({c: len(data.y_train) for c, data in enumerate(clients)})
    for rnd in range(fed.done + 1, (stop_after or cfg.rounds) + 1):
        orders = fed.orders(rnd, fed.sample(rnd))
        replies = {}
        for c, o in orders.items():
            up = train_round(cfg, clients[c], apply_masks(fed.state, o.masks), o.masks, o)
            replies[c] = Reply(up.state, up.masks, up.metrics, up.policy, 1, up.importance)
        outcome = fed.settle(rnd, orders, replies, {}, dict.fromkeys(orders, 1))
        if outcomes is not None:
            outcomes.append(outcome)
    if stop_after is not None:
        return fed, []
    answers = {}
    for c, o in fed.deploy_orders().items():
        up = deploy(cfg, clients[c], apply_masks(fed.state, o.masks), o.masks, o)
        answers[c] = Deployment(up.masks, float(up.metrics["test-accuracy"]))
    return fed, fed.deployed(answers, {})


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_rounds_and_deploys_without_flower(method: str) -> None:
    cfg = Config.from_dict({**SETTINGS, "method": method})
    fed, per_client = run_in_process(cfg)
    assert fed.done == cfg.rounds and len(per_client) == cfg.clients
    assert all(0.0 <= c["accuracy_global_test"] <= 1.0 for c in per_client)
    assert all(np.isfinite(v).all() for v in fed.state.values())
    dense = fed.facts.dense_params
    pruned = [c["nonzero_params"] < dense for c in per_client]
    assert all(pruned) if method != "fedavg" else not any(pruned)
    if method == "fedrlprune":  # the policy came back from the clients and was averaged
        initial = METHODS[method](cfg, fed.fleet).snapshot()
        trained = fed.method.snapshot()
        assert any(not np.array_equal(trained[k], initial[k]) for k in initial)


def test_the_architecture_pages_worked_example_is_a_whole_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S)
    assert code is not None, "docs/architecture.md lost its worked example"
    scope: dict[str, Any] = {}
    exec(compile(code.group(1), "docs/architecture.md", "exec"), scope)
    monkeypatch.setitem(METHODS, "oneshot", scope["OneShot"])  # the registry line
    cfg = dataclasses.replace(Config.from_dict(SETTINGS), method="oneshot")
    fed, per_client = run_in_process(cfg)
    assert fed.done == cfg.rounds
    assert all(c["nonzero_params"] < fed.facts.dense_params for c in per_client)


class ResidualBN(nn.Module):
    """A user's CNN with BatchNorm and a residual addition: channels tied across the skip."""

    def __init__(self, input_shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(input_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * input_shape[1] * input_shape[2], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(y + self.bn2(self.conv2(y)))
        return self.head(y.flatten(1))


@pytest.mark.parametrize("method", ["magnitude", "fedrlprune"])
def test_structured_pruning_of_a_batchnorm_residual_cnn_compacts_exactly(method: str) -> None:
    cfg = Config.from_dict({**SETTINGS, "method": method, "prune_mode": "structured"})
    fed, _ = run_in_process(cfg, ResidualBN)
    masks = fed.fleet.deploy_masks(0, fed.global_masks)
    assert {"bn1.weight", "bn2.weight"} <= set(masks)  # BatchNorm follows its channel
    np.testing.assert_array_equal(masks["conv1.weight"].any((1, 2, 3)), masks["bn1.weight"])
    model = ResidualBN((1, 8, 8), 10)
    set_state(model, fed.state)
    compact = compact_model(model, masks, (1, 8, 8))  # refuses what it cannot remove exactly
    assert sum(p.numel() for p in compact.parameters()) < fed.facts.dense_params


@pytest.mark.parametrize("method", ["fedrlprune", "prunefl"])
def test_a_run_resumed_before_a_pruning_round_repeats_the_uninterrupted_one(method: str) -> None:
    # 8 rounds prune in rounds 1 to 4: stopping after round 2 resumes into a pruning round,
    # where regrowth starts from the global mask, so a resumed run must keep the mask it had.
    cfg = Config.from_dict({**SETTINGS, "method": method, "rounds": 8})
    whole, _ = run_in_process(cfg, stop_after=8)
    first, _ = run_in_process(cfg, stop_after=2)
    snapshot = first.snapshot([], [], 0.0)
    started, _ = run_in_process(cfg, stop_after=2, resume=snapshot)  # start, no round
    assert started.global_masks.keys() == first.global_masks.keys() != set()
    for name, mask in first.global_masks.items():
        np.testing.assert_array_equal(started.global_masks[name], mask, err_msg=name)
    resumed, _ = run_in_process(cfg, stop_after=8, resume=snapshot)
    for name, value in whole.state.items():
        np.testing.assert_array_equal(resumed.state[name], value, err_msg=name)
    assert resumed.global_masks.keys() == whole.global_masks.keys()


def _wide(shape: tuple[int, ...], classes: int) -> nn.Module:
    """An MLP wide enough that the microcontroller's share of it is a model at all."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(int(np.prod(shape)), 512), nn.ReLU(),
        nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, classes),
    )  # fmt: skip


@pytest.mark.parametrize(
    "method", ["fedrlprune", "uniform", "lamp", "heterofl", "fedrolex", "fedmp", "smallest"]
)
def test_budget_keeping_methods_train_within_every_limit_from_round_one(method: str) -> None:
    cfg = Config.from_dict({**SETTINGS, "method": method, "clients": 4, "rounds": 3})
    outcomes: list[RoundOutcome] = []
    run_in_process(cfg, _wide, outcomes=outcomes)
    assert [o.round for o in outcomes] == [1, 2, 3]
    tiers = set()
    for out in outcomes:
        assert len(out.training) == len(out.accepted) == cfg.per_round()
        for cid, fp in out.training.items():
            assert fp.ratio(out.limits[cid]) <= 1.0, (out.round, out.tiers[cid], fp)
            tiers.add(out.tiers[cid])
    assert tiers == {"mcu", "sbc", "phone", "laptop"}


def test_dense_fedavg_is_reported_over_the_microcontrollers_limits() -> None:
    cfg = Config.from_dict({**SETTINGS, "method": "fedavg", "clients": 4, "rounds": 1})
    outcomes: list[RoundOutcome] = []
    run_in_process(cfg, _wide, outcomes=outcomes)
    (out,) = outcomes
    mcu = next(c for c in out.training if out.tiers[c] == "mcu")
    ratios = out.training[mcu].ratios(out.limits[mcu])
    assert ratios["params"] == pytest.approx(1 / 0.03) and ratios["flops"] > 1
    assert out.training[mcu].plan.momentum == cfg.momentum  # the reference keeps its recipe
