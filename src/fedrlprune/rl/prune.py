"""A client's pruning step in method `fedrlprune`: train the policy on its own env, then prune.

The client receives the universal policy (a Q-network as arrays), builds the pruning MDP over
its current model, its reward sample and its device budget, trains the policy for a few
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
from fedrlprune.rl.env import OBS_DIM, ClientFeatures, LayerInfo, PruningEnv, Score
from fedrlprune.state import Masks, State

# The actions: pruning rates, dense where sparsity is high (every step from 0.95 to 0.99 is a
# 5x cut in what is left) and coarse where it is low. At pruning step s of S they are scaled by
# the schedule's share of the way (cubic, as for `magnitude`), so early steps cannot prune a
# barely trained model to nothing before its accuracy can tell good choices from bad.
ACTION_RATES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
# `rl_actions = "relative"` (the default): an action is a factor on a layer's kept share at the
# level where one rate for all layers fills the budget (1: the `uniform` rule). As many as the
# rates, so one Q-network serves both; finer near 1, where good departures lie.
ACTION_FACTORS = (0.3, 0.45, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0)
# Samples every candidate is scored on: the same ones all episodes, so two candidates differ by
# what they prune and not by which samples they drew (benchmarks/reward_noise.py measures it).
# Scoring is most of the agent's cost, so this is as few as keep candidates apart.
REWARD_SAMPLES = 128


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
    targets: str = "bootstrap"  # the agent's targets (`rl_targets`)
    actions: str = "relative"  # what an action is (`rl_actions`)


@dataclass(frozen=True)
class RLResult:
    masks: Masks
    rates: dict[str, float]
    policy: dict[str, np.ndarray]  # the policy after local training (unchanged if not learning)
    val_accuracy: float  # the pruned model on the reward sample (nan: not scored)
    within_budget: bool
    episodes: int
    updates: int  # gradient steps the agent took
    evaluations: int  # distinct pruned models scored on the reward sample
    seconds: float


def new_agent(seed: int, lr: float = 1e-3, targets: str = "bootstrap") -> DQNAgent:
    """The Q-network every client and the server share the shape of. A client's replay buffer
    lives for one round (clients keep no state), so learning starts after a few episodes, each
    stored transition is replayed in 8 gradient steps (they cost far less than scoring one
    candidate), and the target net follows the online one every 32, several times a round."""
    cfg = DQNConfig(
        lr=lr,
        batch_size=16,
        learning_starts=16,
        gradient_steps=8,
        target_every=32,
        targets=targets,
    )
    return DQNAgent(OBS_DIM, len(ACTION_RATES), cfg, seed=seed)


# How much more the initial policy values the factor 1 (the uniform rule) than any other: an
# untrained policy then prunes as `uniform` does, and departs from it only where an explored
# factor earned more; the learned Q-values replace the prior as the visited ones converge.
UNIFORM_PRIOR = 1.0


def initial_policy(seed: int, actions: str = "relative") -> dict[str, np.ndarray]:
    """The universal policy before any client trained it (relative: leaning to uniform)."""
    weights = new_agent(seed).get_weights()
    if actions == "relative":
        bias = list(weights)[-1]  # the output layer's bias: one entry per action
        weights[bias] = weights[bias].copy()
        weights[bias][ACTION_FACTORS.index(1.0)] += UNIFORM_PRIOR
    return weights


def reward_sample(
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    size: int = REWARD_SAMPLES,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed sample of `size` to score candidates on: the validation split, cut to `size` or
    filled up from the training split (a seeded draw) when it holds fewer. A few dozen held-out
    samples move accuracy by a point each; the model has seen the training samples, but every
    candidate is scored on the same ones, so they still rank candidates."""
    rng = np.random.default_rng(seed)
    if len(y_val) >= size:
        idx = torch.from_numpy(np.sort(rng.choice(len(y_val), size, replace=False)))
        return x_val[idx], y_val[idx]
    fill = min(size - len(y_val), len(y_train))
    idx = torch.from_numpy(np.sort(rng.choice(len(y_train), fill, replace=False)))
    return torch.cat([x_val, x_train[idx]]), torch.cat([y_val, y_train[idx]])


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
    sample: tuple[torch.Tensor, torch.Tensor],
    policy: Mapping[str, np.ndarray],
    settings: RLSettings,
    groups: Sequence[ChannelGroup] | None = None,
    cost: StructuredCost | None = None,
) -> RLResult:
    """Train the policy on this client's pruning MDP (if allowed), prune greedily, return all;
    candidates are scored on `sample` (see `reward_sample`). `cost`: structured mode's count of
    what the compact model costs (pruning/cost.py)."""
    start = time.perf_counter()
    names = [layer.name for layer in layers]
    ranking = MagnitudeRanking(state, names, mode, masks or None, groups)
    score = SampleScore(model, state, ranking, names, *sample)
    floor = {
        name: float(1.0 - masks[f"{name}.weight"].mean()) if f"{name}.weight" in masks else 0.0
        for name in names
    }
    env = PruningEnv(
        layers,
        total_params=total_params,
        total_flops=total_flops,
        budget=budget,
        evaluate=score,
        client=client,
        floor={k: min(v, max(ACTION_RATES)) for k, v in floor.items()},
        reward=settings.reward,
        cost_weight=settings.cost_weight,
        rates=(
            ACTION_FACTORS
            if settings.actions == "relative"
            else [settings.rate_scale * r for r in ACTION_RATES]
        ),
        counter=cost.at_rates if cost is not None and mode == "structured" else None,
        fill_budget=True,
        relative=settings.actions == "relative",
    )
    env.reset(seed=settings.seed)
    agent = new_agent(settings.seed, settings.lr, settings.targets)
    agent.set_weights(policy)
    if settings.learn:
        train(env, agent, settings.episodes, settings.eps_start, settings.eps_end)
    else:
        score.scoring = False  # a client that does not learn needs the rates, not their score
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
        updates=agent.learn_steps,
        evaluations=len(score.seen),
        seconds=time.perf_counter() - start,
    )


class SampleScore:
    """The `Score` (accuracy, loss) of the model pruned at given rates on the reward sample,
    in one batched pass. Greedy episodes repeat the same rates, so each rate vector is scored
    once; `seen` counts the distinct ones. With `scoring` off an unseen one scores nan."""

    def __init__(
        self,
        model: nn.Module,
        state: State,
        ranking: MagnitudeRanking,
        names: list[str],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        self.model, self.ranking, self.names = model, ranking, names
        self.x, self.y = x, y
        self.base = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
        self.seen: dict[tuple[float, ...], Score] = {}
        self.scoring = True

    def __call__(self, rates: dict[str, float]) -> Score:
        key = tuple(rates[name] for name in self.names)
        if key not in self.seen and not self.scoring:
            return Score(math.nan, math.nan)
        if key not in self.seen:
            self.seen[key] = self._evaluate(rates)
        return self.seen[key]

    def _evaluate(self, rates: dict[str, float]) -> Score:
        if not len(self.y):
            return Score(0.0)
        pruned, base = self.ranking.masks(rates), self.base
        with torch.no_grad():
            self.model.load_state_dict(
                {k: base[k] * torch.from_numpy(pruned[k]) if k in pruned else base[k] for k in base}
            )
            was_training = self.model.training
            self.model.eval()
            logits = self.model(self.x)
            self.model.train(was_training)
        return Score(*capped_score(logits, self.y))


def capped_score(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) with each sample's loss capped at that of the uniform
    guess, log(classes): beyond it a loss says no more than that guess, and uncapped a model
    pruned down to a constant output would score better than a partly pruned one that is
    confidently wrong on a few samples, and the agent would learn to prune everything."""
    cap = math.log(logits.shape[1])
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none").clamp(max=cap)
    accuracy = (logits.argmax(1) == y).float().mean()
    return float(accuracy), float(losses.mean())


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
