"""Reinforcement learning: the pruning MDP and the DQN agent whose Q-network is federated."""

from fedrlprune.rl.agent import (
    DQNAgent,
    DQNConfig,
    QNetwork,
    ReplayBuffer,
    average_weights,
    epsilon_at,
    greedy_rates,
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
    layer_infos,
)

__all__ = [
    "OBS_DIM",
    "RATES",
    "REWARDS",
    "ClientFeatures",
    "DQNAgent",
    "DQNConfig",
    "LayerInfo",
    "PruningEnv",
    "QNetwork",
    "ReplayBuffer",
    "average_weights",
    "epsilon_at",
    "greedy_rates",
    "layer_infos",
    "run_episode",
    "train",
]
