"""A client's pruning step with the policy: inside the budget, monotone, held-out clients frozen."""

import math

import numpy as np
import pytest
import torch

from fedrlprune.devices import Budget
from fedrlprune.models import build_model
from fedrlprune.pruning.masks import magnitude_masks
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.rl.env import layer_infos
from fedrlprune.rl.prune import (
    ACTION_RATES,
    RLSettings,
    client_features,
    new_agent,
    reward_sample,
    rl_prune,
)
from fedrlprune.training import get_state

SHAPE = (1, 28, 28)
TARGETS = ["conv1", "conv2", "fc1", "fc2"]


def _run(
    learn: bool,
    rate_scale: float = 1.0,
    masks: dict | None = None,
    eps: tuple = (1.0, 0.1),
    actions: str = "relative",
) -> tuple:
    torch.manual_seed(0)
    model = build_model("lenet5", SHAPE, 10)
    state = get_state(model)
    dense = sum(p.numel() for p in model.parameters())
    flops = total_flops(model, SHAPE)
    budget = Budget(max_flops=0.3 * flops, max_params=0.2 * dense)
    x = torch.randn(64, *SHAPE)
    y = torch.randint(0, 10, (64,))
    policy = new_agent(3).get_weights()
    result = rl_prune(
        model,
        state,
        masks or {},
        layer_infos(model, SHAPE, TARGETS),
        mode="unstructured",
        total_params=dense,
        total_flops=flops,
        budget=budget,
        client=client_features(0.3, 0.2, 600, 0.8, 0.5),
        sample=(x, y),
        policy=policy,
        settings=RLSettings(
            episodes=6, eps_start=eps[0], eps_end=eps[1], reward="acc_cost", cost_weight=0.3,
            lr=1e-3, learn=learn, seed=1, rate_scale=rate_scale, actions=actions,
        ),
    )  # fmt: skip
    return result, policy, state, dense, budget


@pytest.mark.parametrize("learn", [True, False])
def test_pruned_model_fits_the_budget(learn: bool) -> None:
    result, _, _, dense, budget = _run(learn)
    kept = sum(int(m.sum()) for m in result.masks.values())
    masked = sum(m.size for m in result.masks.values())
    assert result.within_budget
    assert dense - (masked - kept) <= budget.max_params
    assert set(result.rates) == set(TARGETS)


def test_a_held_out_client_does_not_change_the_policy() -> None:
    frozen, policy, *_ = _run(learn=False)
    assert frozen.episodes == 0
    assert all(np.array_equal(frozen.policy[k], policy[k]) for k in policy)
    assert frozen.updates == 0
    trained, policy, *_ = _run(learn=True)
    assert trained.episodes == 6
    assert trained.updates > 0  # 24 transitions: past learning_starts, so gradient steps ran
    assert any(not np.array_equal(trained.policy[k], policy[k]) for k in policy)


@pytest.mark.parametrize("actions", ["rates", "relative"])
def test_rates_are_scaled_by_the_schedule_and_never_undo_pruning(actions: str) -> None:
    """Rate actions are scaled by the schedule; relative ones fill the step's budget, which
    the schedule already sets, so only the floor holds for them."""
    torch.manual_seed(0)
    state = get_state(build_model("lenet5", SHAPE, 10))
    current = magnitude_masks(state, dict.fromkeys(TARGETS, 0.1))
    result, *_ = _run(learn=True, rate_scale=0.5, masks=current, actions=actions)
    for layer, rate in result.rates.items():
        if actions == "rates":
            assert rate <= 0.5 * max(ACTION_RATES) + 1e-9 or rate == pytest.approx(0.1, abs=0.01)
        assert rate >= 0.1 - 0.01
        key = f"{layer}.weight"
        assert not (result.masks[key] & ~current[key]).any()  # pruned stays pruned


def test_each_distinct_pruned_model_is_evaluated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedrlprune.rl.prune as prune

    calls = []
    real = prune.capped_score
    monkeypatch.setattr(prune, "capped_score", lambda *a: calls.append(1) or real(*a))
    # no exploration, and no learning before 16 transitions (4 episodes of 4 layers): the
    # first four episodes pick the same rates, so of the 7 episodes (6 trained, 1 greedy) at
    # most 4 can differ; without the memo there would be 7 evaluations
    result = _run(True, eps=(0.0, 0.0))[0]
    assert result.evaluations == len(calls) <= 4


def test_the_reward_sample_is_fixed_and_filled_from_training() -> None:
    x_val, y_val = torch.zeros(10, 3), torch.zeros(10, dtype=torch.int64)
    x_train, y_train = torch.ones(500, 3), torch.ones(500, dtype=torch.int64)
    x, y = reward_sample(x_val, y_val, x_train, y_train, size=64, seed=2)
    assert len(y) == 64 and int((y == 0).sum()) == 10  # the whole validation split, then fill
    again = reward_sample(x_val, y_val, x_train, y_train, size=64, seed=2)
    assert torch.equal(x, again[0])
    big_val = torch.arange(300).float().unsqueeze(1)
    x, y = reward_sample(big_val, torch.zeros(300, dtype=torch.int64), x_train, y_train, size=64)
    assert len(y) == 64 and set(x.squeeze(1).tolist()) <= set(range(300))  # held-out only


def test_a_loss_worse_than_guessing_counts_as_guessing() -> None:
    # a confidently wrong sample would otherwise make a model pruned to a constant output
    # look better than one that is right on most samples
    from fedrlprune.rl.prune import capped_score

    y = torch.tensor([0, 1, 2, 3])
    sure = torch.full((4, 4), -50.0)
    sure[torch.arange(4), torch.tensor([0, 1, 2, 0])] = 50.0  # right on three, badly wrong on one
    constant = torch.zeros(4, 4)
    acc, loss = capped_score(sure, y)
    assert acc == 0.75 and abs(loss - math.log(4) / 4) < 1e-6
    assert capped_score(constant, y) == (0.25, pytest.approx(math.log(4)))
