"""The pruning MDP: gymnasium conformity, the action wall, floors, cost counting and rewards."""

import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from fedrlprune.devices import Budget, within_budget
from fedrlprune.errors import ConfigError
from fedrlprune.models import build_model
from fedrlprune.pruning import magnitude_masks
from fedrlprune.pruning.schedule import budget_rate
from fedrlprune.rl import OBS_DIM, RATES, ClientFeatures, PruningEnv, Score, layer_infos

MNIST = (1, 28, 28)
TARGETS = ["conv1", "conv2", "fc1", "fc2"]  # fc3, the head, stays dense
MODEL = build_model("lenet5", MNIST, 10)
LAYERS = layer_infos(MODEL, MNIST, TARGETS)
TOTAL_PARAMS = sum(p.numel() for p in MODEL.parameters())
TOTAL_FLOPS = 833040  # test_metrics checks this count against a hand count
CLIENT = ClientFeatures(0.3, 0.2, 0.5, 0.7, 0.25)


def fake_accuracy(rates: dict[str, float]) -> float:
    return 1.0 - float(np.mean(list(rates.values())))


def shares(flops: float, params: float) -> Budget:
    return Budget(flops * TOTAL_FLOPS, params * TOTAL_PARAMS)


def make_env(budget: Budget | None = None, **kwargs: object) -> PruningEnv:
    return PruningEnv(
        LAYERS,
        total_params=TOTAL_PARAMS,
        total_flops=TOTAL_FLOPS,
        budget=budget or shares(1.0, 1.0),
        evaluate=kwargs.pop("evaluate", fake_accuracy),
        client=CLIENT,
        **kwargs,
    )


def direct_cost(rates: dict[str, float]) -> tuple[int, float]:
    """(params, FLOPs) counted as schedule.budget_rate counts them: floor(rate * n) per layer."""
    by_name = {layer.name: layer for layer in LAYERS}
    pruned = {name: math.floor(rate * by_name[name].weights) for name, rate in rates.items()}
    flops = TOTAL_FLOPS - sum(by_name[n].flops * p / by_name[n].weights for n, p in pruned.items())
    return TOTAL_PARAMS - sum(pruned.values()), flops


def run(env: PruningEnv, actions: list[int]) -> tuple[list[np.ndarray], float, dict]:
    obs, _ = env.reset()
    seen, reward, info = [obs], 0.0, {}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        seen.append(obs)
        assert terminated == (len(seen) == len(actions) + 1) and not truncated
    return seen, reward, info


# the tightest budget LeNet-5 reaches with every target layer at 0.98 (fc3 and biases stay dense)
MIN_PARAMS, MIN_FLOPS = direct_cost(dict.fromkeys(TARGETS, max(RATES)))
TIGHT = shares(0.05, 0.04)
BUDGETS = [shares(0.6, 0.4), shares(0.15, 0.08), TIGHT]


def test_tight_budget_is_reachable_and_three_percent_is_not() -> None:
    assert within_budget(TIGHT, MIN_FLOPS, MIN_PARAMS)
    assert MIN_PARAMS > 0.03 * TOTAL_PARAMS  # so a 3% params budget is unreachable


def test_layer_infos_of_lenet() -> None:
    conv1, conv2, fc1, fc2 = LAYERS
    assert [layer.name for layer in LAYERS] == TARGETS
    assert (conv1.kind, conv1.in_ch, conv1.out_ch, conv1.kernel, conv1.stride) == (
        "conv",
        1,
        6,
        5,
        1,
    )
    assert (conv1.weights, conv1.flops) == (150, 2 * 6 * 28 * 28 * 1 * 5 * 5)
    assert (conv2.weights, conv2.flops) == (2400, 2 * 16 * 10 * 10 * 6 * 5 * 5)
    assert (fc1.kind, fc1.in_ch, fc1.out_ch, fc1.kernel, fc1.stride) == ("linear", 400, 120, 1, 1)
    assert (fc1.weights, fc1.flops, fc2.weights) == (48000, 2 * 400 * 120, 10080)


def test_layer_infos_refuses_unknown_layer() -> None:
    with pytest.raises(ConfigError, match="fc9"):
        layer_infos(MODEL, MNIST, ["conv1", "fc9"])


def test_passes_gymnasium_env_checker() -> None:
    check_env(make_env(TIGHT).unwrapped, skip_render_check=True)


def test_spaces() -> None:
    env = make_env()
    assert env.action_space.n == len(RATES)
    assert env.observation_space.shape == (OBS_DIM,)


def check_episode(env: PruningEnv, actions: list[int]) -> dict:
    """Play `actions`; every observation is in the space and the episode ends inside budget."""
    seen, _, info = run(env, actions)
    for obs in seen:
        assert obs.shape == (OBS_DIM,) and obs.dtype == np.float32
        assert np.all((obs >= 0) & (obs <= 1))
    assert info["within_budget"], (actions, info)
    assert info["params"] <= env.budget.max_params and info["flops"] <= env.budget.max_flops
    return info


@pytest.mark.parametrize("budget", BUDGETS)
def test_action_wall_holds_for_random_actions(budget: Budget) -> None:
    env = make_env(budget)
    rng = np.random.default_rng(0)
    for _ in range(200):
        check_episode(env, list(rng.integers(len(RATES), size=len(LAYERS))))


ADVERSARIAL = {
    "never prune": [0, 0, 0, 0],
    "last layer only": [0, 0, 0, len(RATES) - 1],
    "last two only": [0, 0, len(RATES) - 1, len(RATES) - 1],
    "alternating": [0, len(RATES) - 1, 0, len(RATES) - 1],
    "alternating, other phase": [len(RATES) - 1, 0, len(RATES) - 1, 0],
    "first layer only": [len(RATES) - 1, 0, 0, 0],
}


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("actions", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_action_wall_holds_for_adversarial_actions(budget: Budget, actions: list[int]) -> None:
    check_episode(make_env(budget), actions)


def test_wall_leaves_a_loose_budget_alone() -> None:
    info = check_episode(make_env(), [0, 3, 5, 1])
    assert info["rates"] == dict(zip(TARGETS, [0.0, 0.3, 0.5, 0.1], strict=True))


def test_wall_records_the_effective_rate() -> None:
    env = make_env(TIGHT)
    seen, _, info = run(env, [0, 0, 0, 0])
    assert min(info["rates"].values()) > 0.0  # the wall raised what action 0 asked for
    # the "previous action" feature (index 10) shows the effective rate
    assert seen[1][10] == pytest.approx(info["rates"]["conv1"])


def test_unreachable_budget_ends_at_max_rates_outside_budget() -> None:
    env = make_env(shares(0.05, 0.03))
    _, _, info = run(env, [0, 0, 0, 0])
    assert info["rates"] == dict.fromkeys(TARGETS, max(RATES))
    assert not info["within_budget"]


def test_floors_are_respected() -> None:
    floor = {"conv1": 0.5, "fc1": 0.85}  # 0.85 is not one of RATES: it passes through as is
    env = make_env(floor=floor)
    _, _, info = run(env, [0, 0, 0, 0])
    assert info["rates"] == {"conv1": 0.5, "conv2": 0.0, "fc1": 0.85, "fc2": 0.0}
    rng = np.random.default_rng(1)
    for _ in range(50):
        info = check_episode(env, list(rng.integers(len(RATES), size=len(LAYERS))))
        assert all(info["rates"][name] >= value for name, value in floor.items())


def test_floor_and_sparsity_features() -> None:
    env = make_env(floor={"fc1": 0.5})
    obs, _ = env.reset()
    target_weights = sum(layer.weights for layer in LAYERS)
    assert obs[16] == 0.0  # conv1's floor
    assert obs[17] == pytest.approx(24000 / target_weights)  # fc1's floor counts already
    obs, *_ = env.step(RATES.index(0.2))  # conv1 at 0.2: floor(0.2 * 150) = 30 pruned
    assert obs[17] == pytest.approx((30 + 24000) / target_weights)
    obs, *_ = env.step(0)
    assert obs[16] == 0.5


def test_the_observation_carries_what_the_episode_decided() -> None:
    """Weights removed and still to come, and what is still to cut to meet the budget."""
    budget = shares(0.6, 0.4)
    env = make_env(budget)
    obs, _ = env.reset()
    rest = sum(layer.weights for layer in LAYERS[1:])
    assert obs[18] == 0.0 and obs[19] == pytest.approx(rest / TOTAL_PARAMS)
    assert obs[20] == pytest.approx(0.4) and obs[21] == pytest.approx(0.6)  # nothing cut yet
    obs, *_ = env.step(RATES.index(0.2))  # conv1: 30 weights, a fifth of its FLOPs
    assert obs[18] == pytest.approx(30 / TOTAL_PARAMS)
    assert obs[19] == pytest.approx((rest - 2400) / TOTAL_PARAMS)
    assert obs[20] == pytest.approx(0.4 - 235200 * 30 / 150 / TOTAL_FLOPS)
    assert obs[21] == pytest.approx(0.6 - 30 / TOTAL_PARAMS)


def test_cost_matches_direct_count_and_masks() -> None:
    env = make_env(shares(0.15, 0.08))
    rng = np.random.default_rng(2)
    state = {k: v.detach().numpy() for k, v in MODEL.state_dict().items()}
    for _ in range(10):
        _, _, info = run(env, list(rng.integers(len(RATES), size=len(LAYERS))))
        params, flops = direct_cost(info["rates"])
        assert info["params"] == params and info["flops"] == pytest.approx(flops)
        masks = magnitude_masks(state, info["rates"])
        assert TOTAL_PARAMS - sum(int((~m).sum()) for m in masks.values()) == params


def test_counting_agrees_with_budget_rate() -> None:
    """A uniform rate from budget_rate fits in the env, which counts weights the same way."""
    limit = shares(0.2, 0.1)
    rate = budget_rate(
        {layer.name: layer.weights for layer in LAYERS},
        {layer.name: layer.flops for layer in LAYERS},
        TOTAL_PARAMS,
        TOTAL_FLOPS,
        limit,
    )
    _, _, info = run(make_env(limit, rates=(rate,)), [0, 0, 0, 0])
    assert info["within_budget"]
    assert (info["params"], info["flops"]) == pytest.approx(direct_cost(info["rates"]))


def test_acc_cost_reward_by_hand() -> None:
    """Accuracy minus loss minus the cost, counted as shares of the budget, not of the model."""
    budget = shares(0.7, 0.5)
    env = make_env(budget, cost_weight=0.3, evaluate=lambda rates: Score(0.5, 1.2))
    _, reward, info = run(env, [2, 4, 6, 8])  # 0.2, 0.4, 0.6, 0.8
    kept_flops = TOTAL_FLOPS - (235200 * 30 / 150 + 480000 * 960 / 2400 + 96000 * 0.6 + 20160 * 0.8)
    assert (info["accuracy"], info["loss"]) == (0.5, 1.2)
    assert info["flops"] == pytest.approx(kept_flops)
    cost = (kept_flops / budget.max_flops + info["params"] / budget.max_params) / 2
    assert reward == pytest.approx(0.5 - 1.2 - 0.3 * cost)


def test_a_float_score_is_an_accuracy_alone() -> None:
    _, reward, info = run(make_env(cost_weight=0.0), [0, 0, 0, 0])
    assert (info["accuracy"], info["loss"], reward) == (1.0, 0.0, 1.0)


def test_amc_reward_by_hand() -> None:
    env = make_env(reward="amc", evaluate=lambda rates: 0.9)
    _, reward, info = run(env, [5, 5, 5, 5])  # 0.5 everywhere halves every layer's FLOPs
    kept_flops = TOTAL_FLOPS - sum(layer.flops for layer in LAYERS) / 2
    assert info["flops"] == pytest.approx(kept_flops)
    assert reward == pytest.approx(-(1 - 0.9) * math.log(kept_flops) / math.log(TOTAL_FLOPS))


def test_reward_only_at_the_end() -> None:
    env = make_env()
    env.reset()
    rewards = [env.step(1)[1] for _ in LAYERS]
    assert rewards[:-1] == [0.0] * (len(LAYERS) - 1) and rewards[-1] != 0.0


def test_step_after_the_end_needs_reset() -> None:
    env = make_env()
    run(env, [0, 0, 0, 0])
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reward": "accuracy"}, "unknown RL reward"),
        ({"budget": Budget(0.0, 100.0)}, "positive"),
        ({"budget": Budget(100.0, -1.0)}, "positive"),
        ({"floor": {"conv1": 1.0}}, "floor"),
        ({"floor": {"conv1": -0.1}}, "floor"),
        ({"floor": {"fc3": 0.2}}, "fc3"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_env(**kwargs)


def test_no_layers() -> None:
    with pytest.raises(ConfigError, match="at least one layer"):
        PruningEnv(
            [],
            total_params=1,
            total_flops=1,
            budget=Budget(1, 1),
            evaluate=fake_accuracy,
            client=CLIENT,
        )


FACTORS = (0.5, 1.0, 2.0)


@pytest.mark.parametrize("budget", [shares(0.3, 0.2), shares(0.05, 0.5), shares(0.6, 0.03)])
def test_relative_factors_of_one_give_the_uniform_rate_that_fills_the_budget(
    budget: Budget,
) -> None:
    env = make_env(budget, rates=FACTORS, relative=True)
    *_, info = run(env, [1] * len(LAYERS))
    rates = list(info["rates"].values())
    assert max(rates) - min(rates) < 1e-6, "factors of 1 must prune every layer alike"
    assert info["within_budget"]
    params, flops = env.cost([rates[0] - 1e-3] * len(LAYERS))  # a hair less: over budget
    assert not within_budget(budget, flops, params)


def test_relative_factors_move_the_rates_and_still_fill_the_budget() -> None:
    budget = shares(0.3, 0.2)
    env = make_env(budget, rates=FACTORS, relative=True, floor={"fc2": 0.7})
    *_, info = run(env, [2, 0, 1, 1])  # conv1 keeps twice the level, conv2 half of it
    r = info["rates"]
    assert r["conv1"] < r["fc1"] < r["conv2"] and r["fc2"] >= 0.7
    assert math.isclose(1 - r["conv1"], 2 * (1 - r["fc1"]), rel_tol=1e-6)
    assert info["within_budget"]
    params, _ = env.cost([max(x - 0.01, 0.0) for x in r.values()])
    assert params > budget.max_params, "a lower level would still fit: the budget is not filled"


def test_relative_actions_must_be_positive_factors() -> None:
    with pytest.raises(ConfigError, match="positive factors"):
        make_env(rates=(0.0, 1.0), relative=True)
