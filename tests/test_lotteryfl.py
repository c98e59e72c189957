"""LotteryFL: a client prunes past the accuracy threshold and rewinds to the initial weights."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.config import Config
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.federation.messages import Orders
from fedrlprune.methods import lotteryfl
from fedrlprune.methods.base import ClientData
from fedrlprune.methods.lotteryfl import LotteryFL
from fedrlprune.training import get_state

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)


def test_prune_only_when_good_enough_and_not_yet_sparse_enough() -> None:
    assert lotteryfl.should_prune(0.6, 0.5, 0.2, 0.5)
    assert not lotteryfl.should_prune(0.4, 0.5, 0.2, 0.5)  # below the threshold
    assert not lotteryfl.should_prune(0.5, 0.5, 0.2, 0.5)  # lotteryFL.py: acc > threshold
    assert not lotteryfl.should_prune(0.9, 0.5, 0.5, 0.5)  # at the target already


def test_defaults_are_the_official_runs() -> None:
    # README runs: --prune_start_acc 0.2 --prune_percent 20 (options.py default: 0.2 and 10).
    assert Config().lottery_threshold == 0.2
    assert lotteryfl.PRUNE_STEP == 0.2
    # A fresh model on ten classes (about 0.1) does not prune; one past 0.2 does.
    assert not lotteryfl.should_prune(0.1, Config().lottery_threshold, 0.0, 0.8)
    assert lotteryfl.should_prune(0.25, Config().lottery_threshold, 0.0, 0.8)


def test_each_step_prunes_a_fifth_of_what_is_left_up_to_the_target() -> None:
    assert lotteryfl.next_rate(0.0, 0.9) == pytest.approx(0.2)
    assert lotteryfl.next_rate(0.2, 0.9) == pytest.approx(0.36)  # 1 - 0.8 x 0.8
    assert lotteryfl.next_rate(0.45, 0.5) == pytest.approx(0.5)  # 1 - 0.55 x 0.8 = 0.56 > 0.5


def test_reset_rewinds_every_parameter_under_the_new_mask() -> None:
    init = {"w": np.array([1.0, 2.0, 3.0]), "b": np.array([4.0])}
    got = lotteryfl.reset_to_init(init, {"w": np.array([True, False, True])})
    np.testing.assert_array_equal(got["w"], [1.0, 0.0, 3.0])
    np.testing.assert_array_equal(got["b"], [4.0])
    assert init["w"][1] == 2.0  # the initial weights are not touched


def _data(model: nn.Module, initial: dict) -> ClientData:
    x = torch.randn(20, 4)
    y = x.sum(1).gt(0).long()
    data = ClientData(model, x, y, x, y.clone(), x, y, (4,), 2, {}, ["0"], lambda s, c: model)
    data.cache["initial"] = initial  # what `initial_state` rebuilds from the run's seed
    return data


LEARN = Orders(round=1, masks={}, learn=True)


def test_client_step_prunes_and_rewinds_past_the_threshold_only() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    initial = get_state(model)
    trained = {k: v + 1.0 for k, v in initial.items()}  # any other weights
    data = _data(model, initial)
    cfg = Config.from_dict({"method": "lotteryfl", "lottery_threshold": 0.0, "prune_rate": 0.5})
    got = LotteryFL.prune(cfg, data, trained, {}, LEARN)
    state, masks, metrics = got.state, got.masks, got.metrics
    assert metrics["pruned-now"] == 1
    assert masks["0.weight"].sum() == 32  # 20% of 40 weights pruned, by |trained weight|
    np.testing.assert_array_equal(
        state["0.weight"], np.where(masks["0.weight"], initial["0.weight"], 0)
    )
    np.testing.assert_array_equal(state["2.weight"], initial["2.weight"])  # rewound too
    never = Config.from_dict({"method": "lotteryfl", "lottery_threshold": 1.0})
    data.y_val = 1 - data.y_val  # make sure accuracy is below 1
    got = LotteryFL.prune(never, data, trained, {}, LEARN)
    state, masks, metrics = got.state, got.masks, got.metrics
    assert metrics["pruned-now"] == 0 and masks == {} and state is trained


def test_lotteryfl_end_to_end_prunes_every_round_past_a_zero_threshold(tmp_path: Path) -> None:
    cfg = {"dataset": "digits", "model": "mlp", "method": "lotteryfl", "clients": 3, "rounds": 3,
           "latency_runs": 0}  # fmt: skip
    summary = run_experiment(
        {**cfg, "lr": 0.05, "lottery_threshold": 0.0}, out_dir=tmp_path / "l", live=False
    )
    assert summary["failed_clients"] == []
    # Three steps of 20%: 1 - 0.8^3 = 0.488 of each pruned layer (fc1 12,800, fc2 40,000).
    pruned = int(0.488 * 12_800) + int(0.488 * 40_000)
    for c in summary["per_client"]:
        assert c["nonzero_params"] == pytest.approx(summary["dense_params"] - pruned, abs=2)
