"""DQN: exact weight round trips and averaging (what is federated), learning, determinism."""

import itertools
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from fedrlprune.config import Config
from fedrlprune.devices import Budget
from fedrlprune.models import build_model
from fedrlprune.rl import (
    OBS_DIM,
    RATES,
    ClientFeatures,
    DQNAgent,
    DQNConfig,
    PruningEnv,
    average_weights,
    epsilon_at,
    greedy_rates,
    layer_infos,
    n_step_transitions,
    train,
)
from fedrlprune.rl.prune import ACTION_RATES, new_agent

MNIST = (1, 28, 28)
LAYERS = layer_infos(build_model("lenet5", MNIST, 10), MNIST, ["conv1", "conv2", "fc1", "fc2"])
BEST = {"conv1": 0.2, "conv2": 0.5, "fc1": 0.9, "fc2": 0.7}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny MLPs run several times faster on one thread than fighting over many."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pruning_task() -> PruningEnv:
    """A loose budget and an `evaluate` that peaks when every layer is at its BEST rate."""

    def evaluate(rates: dict[str, float]) -> float:
        return float(np.mean([np.exp(-(((rates[k] - BEST[k]) / 0.1) ** 2)) for k in rates]))

    return PruningEnv(
        LAYERS,
        total_params=61706,
        total_flops=833040,
        budget=Budget(833040, 61706),
        evaluate=evaluate,
        client=ClientFeatures(1.0, 1.0, 0.5, 0.5, 0.1),
        cost_weight=0.0,
    )


class DelayedChoice(gym.Env[np.ndarray, int]):
    """Two steps, reward only at the end: 1 if the FIRST action was 2, plus 0.5 if the second
    was 1. The state (step, previous action) is Markov, so TD targets can carry the reward back.
    """

    def __init__(self) -> None:
        self.action_space = gym.spaces.Discrete(4)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (5,), np.float32)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(5, dtype=np.float32)
        obs[0] = self.t
        if self.actions:
            obs[1 + self.actions[-1]] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t, self.actions = 0, []
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t, self.actions = self.t + 1, [*self.actions, int(action)]
        if self.t < 2:
            return self._obs(), 0.0, False, False, {}
        reward = float(self.actions[0] == 2) + 0.5 * float(self.actions[1] == 1)
        return self._obs(), reward, True, False, {"actions": self.actions}


def test_weights_round_trip_exactly() -> None:
    first, second = DQNAgent(OBS_DIM, len(RATES), seed=0), DQNAgent(OBS_DIM, len(RATES), seed=1)
    weights = first.get_weights()
    second.set_weights(weights)
    loaded = second.get_weights()
    assert loaded.keys() == weights.keys()
    assert all(np.array_equal(loaded[k], weights[k]) for k in weights)
    target = {k: v.numpy() for k, v in second.target.state_dict().items()}
    assert all(np.array_equal(target[k], weights[k]) for k in weights)
    obs = np.random.default_rng(0).random((100, OBS_DIM), dtype=np.float32)
    assert [first.greedy(o) for o in obs] == [second.greedy(o) for o in obs]


def test_get_weights_are_copies() -> None:
    agent = DQNAgent(OBS_DIM, len(RATES))
    weights = agent.get_weights()
    before = {k: v.copy() for k, v in weights.items()}
    next(iter(weights.values()))[...] = 7.0
    assert all(np.array_equal(agent.get_weights()[k], before[k]) for k in before)


def test_set_weights_refuses_wrong_shape_and_names() -> None:
    agent = DQNAgent(OBS_DIM, len(RATES))
    weights = agent.get_weights()
    with pytest.raises(ValueError, match=r"net\.2\.weight"):
        agent.set_weights(weights | {"net.2.weight": np.zeros((3, 3), dtype=np.float32)})
    with pytest.raises(ValueError, match=r"net\.4\.bias"):
        agent.set_weights({k: v for k, v in weights.items() if k != "net.4.bias"})


def test_average_weights_is_the_elementwise_mean() -> None:
    a = DQNAgent(OBS_DIM, len(RATES), seed=0).get_weights()
    b = DQNAgent(OBS_DIM, len(RATES), seed=1).get_weights()
    mean = average_weights([a, b])
    w = "net.0.weight"
    assert mean[w][3, 5] == pytest.approx((a[w][3, 5] + b[w][3, 5]) / 2)
    assert mean["net.4.bias"][0] == pytest.approx((a["net.4.bias"][0] + b["net.4.bias"][0]) / 2)
    assert all(np.allclose(mean[k], (a[k] + b[k]) / 2) for k in a)
    assert all(mean[k].dtype == a[k].dtype for k in a)
    agent = DQNAgent(OBS_DIM, len(RATES), seed=2)
    agent.set_weights(mean)
    params = {k: v.detach().numpy() for k, v in agent.q.state_dict().items()}
    assert all(np.array_equal(params[k], mean[k]) for k in mean)


def test_average_weights_refuses_mismatched_networks() -> None:
    a = DQNAgent(OBS_DIM, len(RATES)).get_weights()
    with pytest.raises(ValueError, match=r"net\.4\.weight"):
        average_weights([a, DQNAgent(OBS_DIM, 3).get_weights()])
    with pytest.raises(ValueError, match="at least one"):
        average_weights([])


def test_epsilon_at() -> None:
    assert epsilon_at(0, 1.0, 0.05, 100) == 1.0
    assert epsilon_at(100, 1.0, 0.05, 100) == pytest.approx(0.05)
    assert epsilon_at(50, 1.0, 0.0, 100) == pytest.approx(0.5)
    assert epsilon_at(500, 1.0, 0.05, 100) == pytest.approx(0.05)
    assert epsilon_at(0, 1.0, 0.05, 0) == 0.05


def test_learn_waits_for_learning_starts() -> None:
    agent = DQNAgent(3, 2, DQNConfig(learning_starts=4))
    for _ in range(3):
        agent.remember(np.zeros(3), 0, 1.0, np.zeros(3), True)
        assert agent.learn() is None
    agent.remember(np.zeros(3), 0, 1.0, np.zeros(3), True)
    assert agent.learn() is not None


def test_learn_reduces_the_loss_on_fixed_transitions() -> None:
    agent = DQNAgent(4, 3, DQNConfig(batch_size=16, learning_starts=16), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(16):
        obs, action = rng.random(4, dtype=np.float32), int(rng.integers(3))
        agent.remember(obs, action, float(obs[action]), obs, True)
    losses = [agent.learn() for _ in range(300)]
    assert np.mean(losses[-20:]) < 0.05 * np.mean(losses[:20])


def test_double_dqn_targets_carry_a_delayed_reward_back() -> None:
    """Bootstrapped targets (the default) find that only the first action earns the big reward."""
    env, agent = DelayedChoice(), DQNAgent(5, 4, DQNConfig())
    train(env, agent, 300, 1.0, 0.05)
    assert greedy_rates(env, agent)["actions"] == [2, 1]


def test_n_step_transitions_sum_rewards_then_bootstrap() -> None:
    obs = [np.full(2, float(t), dtype=np.float32) for t in range(4)]
    episode = [(obs[t], t, float(t + 1), obs[t + 1], t == 2) for t in range(3)]  # rewards 1 2 3
    two = n_step_transitions(episode, 2, 0.5)
    assert [(r, bool(d), g) for _, _, r, _, d, g in two] == [
        (1 + 0.5 * 2, False, 0.25),
        (2 + 0.5 * 3, True, 0.25),
        (3.0, True, 0.5),
    ]
    assert np.array_equal(two[0][3], obs[2])  # bootstrap from two steps ahead
    monte_carlo = n_step_transitions(episode, DQNConfig(targets="monte_carlo").horizon, 1.0)
    assert [r for _, _, r, _, _, _ in monte_carlo] == [6.0, 5.0, 3.0]
    assert all(done for *_, done, _ in monte_carlo)


def test_unknown_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        DQNConfig(targets="td")


@pytest.mark.parametrize("seed", [0, 1])
def test_agent_learns_the_pruning_task(seed: int) -> None:
    """Chance puts 1 layer in 12 at its best rate; the trained policy puts 3 or 4 of 4 there
    (returns as targets: this task's reward is not a function of the state, see docs/methods.md)."""
    env = pruning_task()
    agent = DQNAgent(OBS_DIM, len(RATES), DQNConfig(targets="monte_carlo"), seed=seed)
    train(env, agent, 200, 1.0, 0.05)
    rates = greedy_rates(env, agent)["rates"]
    assert sum(rates[k] == BEST[k] for k in BEST) >= 3, rates


def test_training_is_deterministic_given_the_seed() -> None:
    weights = []
    for _ in range(2):
        agent = DQNAgent(OBS_DIM, len(RATES), seed=3)
        train(pruning_task(), agent, 20, 1.0, 0.1)
        weights.append(agent.get_weights())
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = DQNAgent(OBS_DIM, len(RATES), seed=4)
    train(pruning_task(), other, 20, 1.0, 0.1)
    assert not np.array_equal(other.get_weights()["net.0.weight"], weights[0]["net.0.weight"])


def test_agent_leaves_the_global_torch_rng_alone() -> None:
    state = torch.random.get_rng_state()
    DQNAgent(OBS_DIM, len(RATES), seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def budgeted_task() -> tuple[PruningEnv, dict[str, float]]:
    """Two layers, a budget that binds, and a synthetic score (no model) that punishes pruning
    conv2 five times as hard as fc1; its best rates, by trying every pair of actions."""
    layers = [layer for layer in LAYERS if layer.name in ("conv2", "fc1")]

    def evaluate(rates: dict[str, float]) -> float:
        return 1.0 - rates["conv2"] ** 2 - 0.2 * rates["fc1"] ** 2

    env = PruningEnv(
        layers,
        total_params=61706,
        total_flops=833040,
        budget=Budget(0.6 * 833040, 0.4 * 61706),
        evaluate=evaluate,
        client=ClientFeatures(0.6, 0.4, 0.5, 0.5, 0.5),
        cost_weight=0.0,
        rates=ACTION_RATES,
    )
    best = max(
        (
            run_episode_with(env, pair)
            for pair in itertools.product(range(len(ACTION_RATES)), repeat=2)
        ),
        key=lambda out: out[0],
    )
    return env, best[1]


def run_episode_with(env: PruningEnv, actions: tuple[int, ...]) -> tuple[float, dict[str, float]]:
    env.reset()
    for action in actions:
        _, reward, _, _, info = env.step(action)
    return reward, info["rates"]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_clients_agent_finds_the_best_rates_within_one_round(seed: int) -> None:
    """The agent, with bootstrapped targets, over the episodes one pruning round gives the
    policy (rl_explorers clients of rl_episodes each, defaults): gradient steps taken, and
    the greedy rates are the best ones."""
    env, best = budgeted_task()
    agent = new_agent(seed)
    train(env, agent, Config().rl_explorers * Config().rl_episodes, 1.0, 0.05)
    assert agent.cfg.targets == "bootstrap" and agent.learn_steps > 100
    assert greedy_rates(env, agent)["rates"] == best
