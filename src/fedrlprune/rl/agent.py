"""Double DQN (van Hasselt et al. 2016) with n-step bootstrapped targets, replay, a
hard-updated target net and ε-greedy, laid out as CleanRL's dqn.py. `targets = "monte_carlo"`
regresses every step on its return-to-go instead (n = the episode), the ablation.

Written by hand rather than with SB3 or TorchRL: their DQN has no n-step or Monte-Carlo
targets, learns from a whole `learn()` loop rather than one episode at a time, and the
Q-network must read out and load in as plain arrays for federated averaging.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ("bootstrap", "monte_carlo")


@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters; gamma 1 because the only reward comes at the end of a short episode."""

    hidden: int = 64
    lr: float = 1e-3
    gamma: float = 1.0
    batch_size: int = 32
    buffer_size: int = 5000
    learning_starts: int = 32  # transitions stored before the first gradient step
    train_every: int = 1  # env steps between rounds of gradient steps
    gradient_steps: int = 1  # gradient steps in each round (replay ratio)
    target_every: int = 50  # gradient steps between hard target-net updates
    max_grad_norm: float = 10.0
    targets: str = "bootstrap"  # or "monte_carlo": the return-to-go, nothing bootstrapped
    n_step: int = 1  # rewards summed before bootstrapping from the target net

    def __post_init__(self) -> None:
        if self.targets not in TARGETS:
            raise ValueError(f"unknown targets {self.targets!r}; use one of {', '.join(TARGETS)}")
        if self.n_step < 1:
            raise ValueError(f"n_step must be at least 1, got {self.n_step}")

    @property
    def horizon(self) -> float:
        """Steps summed into one target: n, or the whole episode for Monte Carlo."""
        return math.inf if self.targets == "monte_carlo" else self.n_step


class QNetwork(nn.Module):
    """MLP from an observation to one Q-value per action."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_actions),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ReplayBuffer:
    """Fixed-size ring buffer of n-step transitions in numpy arrays; the oldest are overwritten.
    `reward` is the discounted sum over the n steps, `discount` gamma**n for the bootstrap."""

    def __init__(self, obs_dim: int, size: int) -> None:
        self.obs = np.zeros((size, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((size, obs_dim), dtype=np.float32)
        self.actions = np.zeros(size, dtype=np.int64)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.dones = np.zeros(size, dtype=np.float32)
        self.discounts = np.ones(size, dtype=np.float32)
        self.size, self.pos, self.full = size, 0, False

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        done: bool,
        discount: float = 1.0,
    ) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.dones[i], self.discounts[i] = next_obs, float(done), discount
        self.pos = (self.pos + 1) % self.size
        self.full = self.full or self.pos == 0

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """A uniform batch, with replacement: tensors (obs, actions, rewards, next_obs, dones,
        discounts)."""
        idx = rng.integers(0, len(self), size=batch)
        arrays = (self.obs, self.actions, self.rewards, self.next_obs, self.dones, self.discounts)
        return tuple(torch.from_numpy(a[idx]) for a in arrays)


class DQNAgent:
    """Online and target Q-networks, a replay buffer and an Adam optimiser; seeded throughout."""

    def __init__(
        self, obs_dim: int, n_actions: int, cfg: DQNConfig = DQNConfig(), seed: int = 0
    ) -> None:
        self.cfg = cfg
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)  # exploration and replay sampling
        with torch.random.fork_rng(devices=[]):  # seed the init without touching global state
            torch.manual_seed(seed)
            self.q = QNetwork(obs_dim, n_actions, cfg.hidden)
        self.target = copy.deepcopy(self.q)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.buffer = ReplayBuffer(obs_dim, cfg.buffer_size)
        self.env_steps = 0
        self.learn_steps = 0

    def greedy(self, obs: np.ndarray) -> int:
        with torch.no_grad():
            q = self.q(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
        return int(q.argmax(dim=1).item())

    def act(self, obs: np.ndarray, epsilon: float) -> int:
        """ε-greedy; always draws once from the agent's rng so runs replay exactly."""
        if self.rng.random() < epsilon:
            return int(self.rng.integers(self.n_actions))
        return self.greedy(obs)

    def remember(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        done: bool,
        discount: float = 1.0,
    ) -> None:
        self.buffer.add(obs, action, reward, next_obs, done, discount)
        self.env_steps += 1

    def learn(self) -> float | None:
        """One gradient step on a replay batch; None until learning_starts transitions exist."""
        cfg = self.cfg
        if len(self.buffer) < max(cfg.learning_starts, 1):
            return None
        batch = self.buffer.sample(cfg.batch_size, self.rng)
        obs, actions, rewards, next_obs, dones, discounts = batch
        with torch.no_grad():
            # Double DQN: the online net picks a', the target net values it (less overestimation)
            next_actions = self.q(next_obs).argmax(dim=1, keepdim=True)
            next_q = self.target(next_obs).gather(1, next_actions).squeeze(1)
            td_target = rewards + discounts * (1.0 - dones) * next_q
        q = self.q(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, td_target)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.learn_steps += 1
        if self.learn_steps % cfg.target_every == 0:
            self.target.load_state_dict(self.q.state_dict())
        return float(loss.item())

    def get_weights(self) -> dict[str, np.ndarray]:
        """The online Q-network as numpy copies: what a client sends to be averaged."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.q.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Load into the online and the target net, so bootstrapping starts from the same net."""
        own = self.q.state_dict()
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        if missing or extra:
            raise ValueError(f"Q-network weights missing {missing}, unexpected {extra}")
        for name, value in weights.items():
            if tuple(np.shape(value)) != tuple(own[name].shape):
                raise ValueError(
                    f"Q-network array {name!r} has shape {np.shape(value)}, "
                    f"expected {tuple(own[name].shape)}"
                )
        state = {
            name: torch.tensor(np.asarray(value), dtype=own[name].dtype)
            for name, value in weights.items()
        }
        self.q.load_state_dict(state)
        self.target.load_state_dict(state)


def epsilon_at(step: int, start: float, end: float, decay_steps: int) -> float:
    """Linear decay from `start` at step 0 to `end` at `decay_steps`, then flat."""
    if decay_steps <= 0:
        return end
    return start + min(step / decay_steps, 1.0) * (end - start)


Step = tuple[np.ndarray, int, float, np.ndarray, bool]  # obs, action, reward, next obs, terminated


def n_step_transitions(
    episode: Sequence[Step], horizon: float, gamma: float
) -> list[tuple[np.ndarray, int, float, np.ndarray, bool, float]]:
    """Each step's n-step transition (obs, action, reward, next obs, done, discount): the
    rewards of the next `horizon` steps discounted and summed, and the state to bootstrap from
    after them with its discount gamma**n; done when the episode terminated within them (a
    truncated episode is cut, not over: its last state still has a future to bootstrap)."""
    out = []
    for t, (obs, action, _, _, _) in enumerate(episode):
        ahead = episode[t : t + int(horizon) if math.isfinite(horizon) else None]
        reward = sum(gamma**k * step[2] for k, step in enumerate(ahead))
        _, _, _, next_obs, terminated = ahead[-1]
        out.append((obs, action, reward, next_obs, terminated, gamma ** len(ahead)))
    return out


def run_episode(
    env: gym.Env, agent: DQNAgent, epsilon: float, learn: bool = True
) -> tuple[float, dict[str, Any]]:
    """One episode; with `learn`, store its n-step transitions at the end (the last steps'
    sums are known only then) and take one gradient step every `train_every` of them."""
    obs, info = env.reset()
    episode: list[Step] = []
    done = False
    while not done:
        action = agent.act(obs, epsilon)
        next_obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        episode.append((obs, action, float(reward), next_obs, terminated))
        obs = next_obs
    if learn:
        for transition in n_step_transitions(episode, agent.cfg.horizon, agent.cfg.gamma):
            agent.remember(*transition)
            if agent.env_steps % agent.cfg.train_every == 0:
                for _ in range(agent.cfg.gradient_steps):
                    agent.learn()
    return sum(step[2] for step in episode), info


def train(
    env: gym.Env, agent: DQNAgent, episodes: int, eps_start: float, eps_end: float
) -> list[float]:
    """`episodes` episodes with ε decaying linearly from eps_start (first) to eps_end (last)."""
    return [
        run_episode(env, agent, epsilon_at(i, eps_start, eps_end, episodes - 1))[0]
        for i in range(episodes)
    ]


def greedy_rates(env: gym.Env, agent: DQNAgent) -> dict[str, Any]:
    """The policy's choice: one greedy episode without learning; its final info (rates etc.)."""
    return run_episode(env, agent, epsilon=0.0, learn=False)[1]


def average_weights(weights: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Plain (unweighted) mean of Q-networks: the federated averaging of the pruning policy."""
    if not weights:
        raise ValueError("average_weights needs at least one set of Q-network weights")
    first = weights[0]
    for i, w in enumerate(weights[1:], start=1):
        if set(w) != set(first):
            raise ValueError(
                f"Q-network weights {i} name arrays {sorted(w)}, the first names {sorted(first)}"
            )
        for name, value in w.items():
            if np.shape(value) != np.shape(first[name]):
                raise ValueError(
                    f"Q-network array {name!r} of weights {i} has shape {np.shape(value)}, "
                    f"the first has {np.shape(first[name])}"
                )
    return {
        name: np.mean(np.stack([w[name] for w in weights]), axis=0).astype(first[name].dtype)
        for name in first
    }
