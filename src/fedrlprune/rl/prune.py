"""A client's pruning step in method `fedrlprune`: train the policy on its own env, then prune.

The client receives the universal policy (a Q-network as arrays), builds the pruning MDP over
its current model, its validation split and its device budget, trains the policy for a few
episodes (unless it is held out), asks the policy greedily for one rate per layer, and prunes
by magnitude at those rates. Nothing here knows Flower.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from fedrlprune.devices import Budget
from fedrlprune.pruning.cost import StructuredCost
from fedrlprune.pruning.groups import ChannelGroup
from fedrlprune.pruning.masks import MagnitudeRanking
from fedrlprune.rl.agent import DQNAgent, DQNConfig, greedy_rates, train
from fedrlprune.rl.env import OBS_DIM, ClientFeatures, LayerInfo, PruningEnv
from fedrlprune.state import Masks, State
from fedrlprune.training import evaluate

# The actions: pruning rates, dense where sparsity is high (every step from 0.95 to 0.99 is a
# 5x cut in what is left) and coarse where it is low. At pruning step s of S they are scaled by
# the schedule's share of the way (cubic, as for `magnitude`), so early steps cannot prune a
# barely trained model to nothing before its accuracy can tell good choices from bad.
ACTION_RATES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class RLSettings:
    episodes: int
    eps_start: float
    eps_end: float
    reward: str
    cost_weight: float
    lr: float
    learn: bool  # False for a held-out client: it uses the policy as it is
    seed: int
    rate_scale: float = 1.0  # the schedule's share of the way at this step (1 at the end)


@dataclass(frozen=True)
class RLResult:
    masks: Masks
    rates: dict[str, float]
    policy: dict[str, np.ndarray]  # the policy after local training (unchanged if not learning)
    val_accuracy: float  # the pruned model on the validation split, before local training
    within_budget: bool
    episodes: int
    evaluations: int  # distinct pruned models evaluated on the validation split
    seconds: float


def new_agent(seed: int, lr: float = 1e-3) -> DQNAgent:
    """The Q-network every client and the server share the shape of. A client's replay buffer
    lives for one round (clients keep no state), so learning starts after a few episodes."""
    cfg = DQNConfig(lr=lr, batch_size=16, learning_starts=16)
    return DQNAgent(OBS_DIM, len(ACTION_RATES), cfg, seed=seed)


def rl_prune(
    model: nn.Module,
    state: State,
    masks: Masks,
    layers: list[LayerInfo],
    *,
    mode: str,
    total_params: int,
    total_flops: int,
    budget: Budget,
    client: ClientFeatures,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    policy: Mapping[str, np.ndarray],
    settings: RLSettings,
    groups: Sequence[ChannelGroup] | None = None,
    cost: StructuredCost | None = None,
) -> RLResult:
    """Train the policy on this client's pruning MDP (if allowed), prune greedily, return all.
    `cost`: structured mode's count of what the compact model costs (pruning/cost.py)."""
    start = time.perf_counter()
    names = [layer.name for layer in layers]
    ranking = MagnitudeRanking(state, names, mode, masks or None, groups)
    accuracy = ValAccuracy(model, state, ranking, names, x_val, y_val)
    floor = {
        name: float(1.0 - masks[f"{name}.weight"].mean()) if f"{name}.weight" in masks else 0.0
        for name in names
    }
    env = PruningEnv(
        layers,
        total_params=total_params,
        total_flops=total_flops,
        budget=budget,
        evaluate=accuracy,
        client=client,
        floor={k: min(v, max(ACTION_RATES)) for k, v in floor.items()},
        reward=settings.reward,
        cost_weight=settings.cost_weight,
        rates=[settings.rate_scale * r for r in ACTION_RATES],
        counter=cost.at_rates if cost is not None and mode == "structured" else None,
    )
    env.reset(seed=settings.seed)
    agent = new_agent(settings.seed, settings.lr)
    agent.set_weights(policy)
    if settings.learn:
        train(env, agent, settings.episodes, settings.eps_start, settings.eps_end)
    info = greedy_rates(env, agent)
    rates = {name: float(r) for name, r in info["rates"].items()}
    new_masks = ranking.masks(rates)
    return RLResult(
        masks=new_masks,
        rates=rates,
        policy=agent.get_weights(),
        val_accuracy=float(info["accuracy"]),
        within_budget=bool(info["within_budget"]),
        episodes=settings.episodes if settings.learn else 0,
        evaluations=len(accuracy.seen),
        seconds=time.perf_counter() - start,
    )


class ValAccuracy:
    """Validation accuracy of the model pruned at given rates. Greedy episodes repeat the same
    rates, so each rate vector is evaluated once; `seen` counts the distinct ones."""

    def __init__(
        self,
        model: nn.Module,
        state: State,
        ranking: MagnitudeRanking,
        names: list[str],
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> None:
        self.model, self.ranking, self.names = model, ranking, names
        self.x_val, self.y_val = x_val, y_val
        self.base = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
        self.seen: dict[tuple[float, ...], float] = {}

    def __call__(self, rates: dict[str, float]) -> float:
        key = tuple(rates[name] for name in self.names)
        if key not in self.seen:
            self.seen[key] = self._evaluate(rates)
        return self.seen[key]

    def _evaluate(self, rates: dict[str, float]) -> float:
        pruned, base = self.ranking.masks(rates), self.base
        with torch.no_grad():
            self.model.load_state_dict(
                {k: base[k] * torch.from_numpy(pruned[k]) if k in pruned else base[k] for k in base}
            )
        return evaluate(self.model, self.x_val, self.y_val)[1] if len(self.y_val) else 0.0


@cache
def policy_layout() -> State:
    """The Q-network's array names and shapes, to check a received policy against."""
    return new_agent(0).get_weights()


def client_features(
    flops_share: float, params_share: float, samples: int, label_entropy: float, progress: float
) -> ClientFeatures:
    """Client features for the policy; data size on a log scale (1 sample -> 0, 1e5 -> 1)."""
    return ClientFeatures(
        flops_budget=flops_share,
        params_budget=params_share,
        data_size=min(1.0, math.log1p(samples) / math.log1p(100_000)),
        label_entropy=label_entropy,
        round_fraction=progress,
    )
