"""The pruning MDP as a gymnasium.Env: one episode walks a client's prunable layers in order.

Each step picks a pruning rate for one layer (AMC, He et al. ECCV 2018, with client features
added so one policy can serve many clients). The observation carries what the episode has
decided so far, as AMC's state does (FLOPs and weights removed and still to come, the previous
rate) and what is still to cut to meet the budget, so a bootstrapped target can value a state
without knowing the path to it. An action wall clips each rate up so the layers still to come
can meet the client's budget; pruned weights and FLOPs are counted exactly as
``fedrlprune.pruning.schedule.budget_rate`` counts them, so the env's figures match the masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from torch import nn

from fedrlprune.devices import Budget, within_budget
from fedrlprune.errors import ConfigError
from fedrlprune.pruning.metrics import layer_flops, prunable_layers
from fedrlprune.pruning.schedule import MAX_RATE

RATES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
REWARDS = ("acc_cost", "amc")
ACTIONS = ("relative", "rates")  # `rl_actions`: a factor on the uniform level, or a rate
OBS_DIM = 22


def fitting_edge(fits: Callable[[float], bool], good: float, bad: float, steps: int = 30) -> float:
    """Bisection between a point that fits (`good`) and one that does not (`bad`), for a
    monotone `fits`: the point nearest `bad` that still fits, to 2**-steps of the interval."""
    for _ in range(steps):
        middle = (good + bad) / 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return good


class Score(NamedTuple):
    """A pruned model on the client's reward sample: accuracy (0..1) and mean cross-entropy.
    The loss is the smooth part: it moves with every sample's confidence, not only with the
    few samples near the decision boundary, so it tells close candidates apart."""

    accuracy: float
    loss: float = 0.0  # 0 where only an accuracy is known (synthetic tasks)


@dataclass(frozen=True)
class LayerInfo:
    """What the policy sees of one prunable layer; linear layers have kernel and stride 1."""

    name: str
    kind: str  # "conv" | "linear"
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    weights: int
    flops: int


def layer_infos(
    model: nn.Module, input_shape: tuple[int, ...], targets: Sequence[str]
) -> list[LayerInfo]:
    """LayerInfo of each layer in `targets`, in the given order, with dense per-sample FLOPs."""
    layers = prunable_layers(model)
    unknown = [name for name in targets if name not in layers]
    if unknown:
        raise ConfigError(
            f"cannot build the pruning env for {unknown}: not prunable layers of "
            f"{type(model).__name__}; name layers from: {', '.join(layers)}"
        )
    flops = layer_flops(model, input_shape)
    infos = []
    for name in targets:
        mod = layers[name]
        if isinstance(mod, nn.Linear):
            kind, in_ch, out_ch, kernel, stride = "linear", mod.in_features, mod.out_features, 1, 1
        else:
            kind, in_ch, out_ch = "conv", mod.in_channels, mod.out_channels
            kernel, stride = max(mod.kernel_size), max(mod.stride)
        infos.append(
            LayerInfo(name, kind, in_ch, out_ch, kernel, stride, mod.weight.numel(), flops[name])
        )
    return infos


@dataclass(frozen=True)
class ClientFeatures:
    """What the policy sees of the client, so one universal policy can tell clients apart."""

    flops_budget: float  # budget share of dense FLOPs (0..1)
    params_budget: float  # budget share of dense params (0..1)
    data_size: float  # local data size, normalised to about 0..1 (e.g. n / max n)
    label_entropy: float  # normalised 0..1
    round_fraction: float  # current round / all rounds


class PruningEnv(gym.Env[np.ndarray, int]):
    """Step t sets layer t's pruning rate; the reward comes once, from the pruned model.

    `evaluate` gets {layer: rate} and returns the pruned model's `Score` on the client's reward
    sample (a float is an accuracy alone). `floor` holds each layer's current sparsity: pruning
    is progressive and monotone, so a rate below it would change nothing and is raised to it.
    `counter` gives the (params, FLOPs) of per-layer rates where counting each layer's own
    weights is not the cost (structured pruning: a removed channel also removes the next
    layer's inputs). With `fill_budget` the episode's rates are eased off at its end until the
    model uses its whole budget (`filled`). With `relative` an action is not a rate but a
    factor on the kept share of one level that fills the budget (`relative_fill`): all
    factors 1 is the uniform rule, so the policy learns where to depart from it.
    """

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        *,
        total_params: int,
        total_flops: int,
        budget: Budget,
        evaluate: Callable[[dict[str, float]], Score | float],
        client: ClientFeatures,
        floor: Mapping[str, float] | None = None,
        reward: str = "acc_cost",
        cost_weight: float = 0.5,
        rates: Sequence[float] = RATES,
        counter: Callable[[dict[str, float]], tuple[int, int]] | None = None,
        fill_budget: bool = False,
        relative: bool = False,
    ) -> None:
        if not layers:
            raise ConfigError("the pruning env needs at least one layer to prune; got none")
        if reward not in REWARDS:
            raise ConfigError(f"unknown RL reward {reward!r}; use one of: {', '.join(REWARDS)}")
        if budget.max_flops <= 0 or budget.max_params <= 0:
            raise ConfigError(f"budget limits must be positive, got {budget}")
        if total_params <= 0 or total_flops <= 0:
            raise ConfigError(
                f"total_params and total_flops must be positive, got {total_params}, {total_flops}"
            )
        if relative and not (rates and all(r > 0 for r in rates)):
            raise ConfigError(f"relative actions must be positive factors, got {rates}")
        if not relative and not (rates and all(0 <= r < 1 for r in rates)):
            raise ConfigError(f"pruning rates must be a non-empty list in [0, 1), got {rates}")
        names = [layer.name for layer in layers]
        floor = dict(floor or {})
        unknown = sorted(set(floor) - set(names))
        if unknown:
            raise ConfigError(f"floor names layers not in the env: {unknown}; use: {names}")
        bad = {name: value for name, value in floor.items() if not 0 <= value < 1}
        if bad:
            raise ConfigError(f"floor (current sparsity) must be in [0, 1), got {bad}")

        self.layers = list(layers)
        self.total_params = total_params
        self.total_flops = total_flops
        self.budget = budget
        self.evaluate = evaluate
        self.client = client
        self.floor = [floor.get(name, 0.0) for name in names]
        self.reward_kind = reward
        self.cost_weight = cost_weight
        self.rates = tuple(float(r) for r in rates)
        self.counter = counter
        self.fill_budget = fill_budget
        self.relative = relative
        self.action_space = gym.spaces.Discrete(len(self.rates))
        self.observation_space = gym.spaces.Box(0.0, 1.0, (OBS_DIM,), np.float32)

        self._chosen: list[float] = []  # effective rates of the layers done so far
        self._factors: list[float] = []  # relative: the factors chosen so far
        self._level = 1.0  # relative: the kept share at which uniform fills the budget
        self._max_in = max(layer.in_ch for layer in self.layers)
        self._max_out = max(layer.out_ch for layer in self.layers)
        self._max_kernel = max(layer.kernel for layer in self.layers)
        self._max_stride = max(layer.stride for layer in self.layers)
        self._log_max_weights = math.log1p(max(layer.weights for layer in self.layers))
        self._target_weights = sum(layer.weights for layer in self.layers)

    # -- cost counting, exactly as schedule.budget_rate ------------------------------------

    def _removed(self, rates: Sequence[float]) -> tuple[int, float]:
        """(weights, FLOPs) removed by pruning layer i at rates[i], for the first len(rates)."""
        weights, flops = 0, 0.0
        for layer, rate in zip(self.layers, rates, strict=False):
            pruned = math.floor(rate * layer.weights)
            weights += pruned
            flops += layer.flops * pruned / layer.weights
        return weights, flops

    def cost(self, rates: Sequence[float]) -> tuple[int, float]:
        """(params, FLOPs) of the model with layer i pruned at rates[i] (all layers given); by
        `counter` when given (structured: what the compact model costs, pruning/cost.py)."""
        if self.counter is not None:
            return self.counter({la.name: r for la, r in zip(self.layers, rates, strict=True)})
        weights, flops = self._removed(rates)
        return self.total_params - weights, self.total_flops - flops

    def _reachable(self, t: int, rate: float) -> bool:
        """Whether the budget can still be met with layer t at `rate` and all later at the max."""
        top = max(self.rates)
        later = [max(top, f) for f in self.floor[t + 1 :]]
        params, flops = self.cost([*self._chosen, rate, *later])
        return within_budget(self.budget, flops, params)

    def _wall(self, t: int) -> float:
        """Smallest rate that keeps the budget reachable (the max rate when none does)."""
        ok = [r for r in self.rates if self._reachable(t, max(r, self.floor[t]))]
        return min(ok) if ok else max(self.rates)

    # -- observation -------------------------------------------------------------------------

    def _observation(self) -> np.ndarray:
        t, T, layer = len(self._chosen), len(self.layers), self.layers[len(self._chosen)]
        removed_weights, removed = self._removed(self._chosen)
        rest = sum(later.flops for later in self.layers[t + 1 :])
        rest_weights = sum(later.weights for later in self.layers[t + 1 :])
        # the model as it stands: decided layers at their rate, the rest at their floor
        standing = [*self._chosen, *self.floor[t:]]
        sparse = self._removed(standing)[0]
        params, flops = self.cost(standing)
        c = self.client
        obs = [
            t / max(T - 1, 1),
            float(layer.kind == "conv"),
            layer.in_ch / self._max_in,
            layer.out_ch / self._max_out,
            layer.kernel / self._max_kernel,
            layer.stride / self._max_stride,
            math.log1p(layer.weights) / self._log_max_weights,
            layer.flops / self.total_flops,
            removed / self.total_flops,
            rest / self.total_flops,
            self._chosen[-1] if self._chosen else 0.0,
            c.flops_budget,
            c.params_budget,
            c.data_size,
            c.label_entropy,
            c.round_fraction,
            self.floor[t],
            sparse / self._target_weights,
            removed_weights / self.total_params,
            rest_weights / self.total_params,
            # what is still to cut to meet the budget, as shares of the dense model
            max(flops - self.budget.max_flops, 0.0) / self.total_flops,
            max(params - self.budget.max_params, 0.0) / self.total_params,
        ]
        return np.clip(np.asarray(obs, dtype=np.float32), 0.0, 1.0)

    # -- gymnasium API -----------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._chosen, self._factors = [], []
        if self.relative:
            self._level = self._fill_level([1.0] * len(self.layers))
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        t = len(self._chosen)
        if t >= len(self.layers):
            raise RuntimeError("the episode is over; call reset() before stepping again")
        if self.relative:  # the rate the factor gives at the uniform level, for the observation
            self._factors.append(self.rates[int(action)])
            rate = self._relative_rates(self._factors, self._level)[t]
        else:
            rate = max(self.rates[int(action)], self.floor[t], self._wall(t))
        self._chosen.append(rate)
        info: dict[str, Any] = {"rate": rate}
        if len(self._chosen) < len(self.layers):
            return self._observation(), 0.0, False, False, info

        if self.relative:
            final = self.relative_fill(self._factors)
        else:
            final = self.filled(self._chosen) if self.fill_budget else self._chosen
        rates = {layer.name: r for layer, r in zip(self.layers, final, strict=True)}
        params, flops = self.cost(final)
        score = self.evaluate(rates)
        score = score if isinstance(score, Score) else Score(float(score))
        reward = self.reward(score, flops, params)
        info |= {
            "rates": rates,
            "accuracy": score.accuracy,
            "loss": score.loss,
            "flops": flops,
            "params": params,
            "within_budget": within_budget(self.budget, flops, params),
        }
        return np.zeros(OBS_DIM, dtype=np.float32), float(reward), True, False, info

    def filled(self, chosen: Sequence[float]) -> list[float]:
        """The chosen rates eased off until the model uses its whole budget: each layer's kept
        share k becomes k**s for the smallest s in [0, 1] that still fits (never below a
        layer's floor). The policy says where to prune, the budget how much; a choice that
        prunes more than the budget asks would only cost accuracy the device does not need to
        give up. The cost falls as s falls, so a bisection finds s."""

        def at(s: float) -> list[float]:
            return [max(f, 1 - (1 - r) ** s) for r, f in zip(chosen, self.floor, strict=True)]

        def fits(rates: list[float]) -> bool:
            params, flops = self.cost(rates)
            return within_budget(self.budget, flops, params)

        if not fits(list(chosen)):
            return list(chosen)  # the budget is out of reach: keep what the wall gave
        if fits(at(0.0)):
            return at(0.0)
        return at(fitting_edge(lambda s: fits(at(s)), good=1.0, bad=0.0))

    def _relative_rates(self, factors: Sequence[float], level: float) -> list[float]:
        """Layer i keeps factors[i] x level of its units (never above what its mask keeps,
        never below 1 - MAX_RATE)."""
        return [
            min(max(1.0 - f * level, floor), MAX_RATE)
            for f, floor in zip(factors, self.floor, strict=False)
        ]

    def _fill_level(self, factors: Sequence[float]) -> float:
        """The largest level at which the factors' rates fit the budget (0 when none does)."""

        def fits(level: float) -> bool:
            params, flops = self.cost(self._relative_rates(factors, level))
            return within_budget(self.budget, flops, params)

        high = 1.0 / min(factors)
        return high if fits(high) else fitting_edge(fits, good=0.0, bad=high)

    def relative_fill(self, factors: Sequence[float]) -> list[float]:
        """The rates of `factors` at the level that uses the whole budget."""
        return self._relative_rates(factors, self._fill_level(factors))

    def reward(self, score: Score, flops: float, params: float) -> float:
        """`acc_cost`: accuracy minus loss minus `cost_weight` times the cost, the mean share of
        the budget's FLOPs and parameters the model uses (so the term spreads feasible choices
        over 0..1 whatever the budget, where shares of the dense model would differ by the
        budget's few percent); `amc`: R_FLOPs = -error * log(FLOPs), scaled to O(1)."""
        if self.reward_kind == "amc":
            return -(1.0 - score.accuracy) * math.log(max(flops, 1.0)) / math.log(self.total_flops)
        cost = (flops / self.budget.max_flops + params / self.budget.max_params) / 2
        return score.accuracy - score.loss - self.cost_weight * cost
