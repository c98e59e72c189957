"""Reinforcement learning: the pruning MDP and the DQN agent whose Q-network is federated."""

from fedrlprune.rl.agent import (
    TARGETS,
    DQNAgent,
    DQNConfig,
    QNetwork,
    ReplayBuffer,
    average_weights,
    epsilon_at,
    greedy_rates,
    n_step_transitions,
    run_episode,
    train,
)
from fedrlprune.rl.env import (
    OBS_DIM,
    RATES,
    REWARDS,
    ClientFeatures,
    LayerInfo,
    PruningEnv,
    Score,
    layer_infos,
)

__all__ = [
    "OBS_DIM",
    "RATES",
    "REWARDS",
    "TARGETS",
    "ClientFeatures",
    "DQNAgent",
    "DQNConfig",
    "LayerInfo",
    "PruningEnv",
    "QNetwork",
    "ReplayBuffer",
    "Score",
    "average_weights",
    "epsilon_at",
    "greedy_rates",
    "layer_infos",
    "n_step_transitions",
    "run_episode",
    "train",
]
