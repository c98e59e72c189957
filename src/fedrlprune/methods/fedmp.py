"""FedMP: a multi-armed bandit picks each client's pruning ratio; residual recovery on merge.

Paper: Z. Jiang, Y. Xu, H. Xu, Z. Wang, C. Qiao, Y. Zhao, "FedMP: Federated Learning through
Adaptive Model Pruning in Heterogeneous Edge Computing", IEEE ICDE 2022.

What it does. The server keeps one bandit per client (`DiscountedUCB`) whose arms are pruning
ratios. Each round it asks the bandit of every selected client for a ratio, cuts a structured
sub-model out of the dense global model at that ratio (whole channels/neurons by L1 norm, every
pruned layer at the ratio) and sends the client that sub-model, sparse. The client trains it and
reports its training loss before and after; the bandit's reward is the loss decrease per second
of the client's device-simulated round (`reward`: training progress per unit of time, FedMP's
objective). The server merges with residual recovery (the `residual` aggregation rule): a weight
a client pruned counts with the global model's value, not as zero, so the dense global model
keeps learning where small sub-models cannot reach. At the end each client deploys the global
model cut at the ratio its bandit rates best.

Where we depart from the paper, and why:
- The arms are a fixed grid of ratios (`ARMS`) and the bandit is discounted UCB (Garivier &
  Moulines 2011); the paper's E-UCB refines a continuous range of ratios into ever finer
  intervals. Over tens of rounds a fixed grid explores as much as the refinement would.
- Rewards are scaled by the largest reward a client has seen so far, so the UCB bonus stays on
  the rewards' scale (the paper normalises by design constants we do not have).
- Round time is the device-simulated time of the client's tier (`devices.py`), not measured.

Device budgets: FedMP's per-client ratios exist to fit heterogeneous devices, so we keep the
budgets: a client's arms are only the ratios whose compact sub-model fits its device budget,
parameters, FLOPs and memory measured on the compact model (`feasible_arms`; if none fits, the
largest ratio, and the miss is reported). Pruning is always structured for FedMP, whatever
`prune_mode` says, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrlprune.devices import within_budget
from fedrlprune.federation.messages import Orders, Reply
from fedrlprune.methods.base import ClientData, Finished, Method, rate_metrics
from fedrlprune.pruning.masks import magnitude_masks
from fedrlprune.state import Masks, State
from fedrlprune.training import StepHook, evaluate

if TYPE_CHECKING:
    from fedrlprune.config import Config

ARMS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # pruning ratios a bandit chooses from
DISCOUNT = 0.9  # weight of older rewards: the best ratio moves as the model trains
EXPLORE = 0.5  # UCB exploration coefficient on rewards scaled to at most 1


class DiscountedUCB:
    """Discounted UCB over `arms`: every arm once (from the least pruned), then the arm with the
    best discounted mean reward plus an exploration bonus that grows while it is not played."""

    def __init__(
        self, arms: Sequence[float], discount: float = DISCOUNT, explore: float = EXPLORE
    ) -> None:
        if not arms:
            raise ValueError("a bandit needs at least one arm")
        self.arms = tuple(arms)
        self.discount = discount
        self.explore = explore
        self.counts = np.zeros(len(arms))
        self.sums = np.zeros(len(arms))
        self.scale = 0.0  # largest |reward| seen, so scaled rewards stay within [-1, 1]

    def choose(self) -> int:
        """Index of the arm to play now."""
        untried = np.flatnonzero(self.counts == 0)
        if untried.size:
            return int(untried[0])
        total = self.counts.sum()
        means = self.sums / self.counts
        bonus = self.explore * np.sqrt(2.0 * math.log(max(total, 1.0)) / self.counts)
        return int(np.argmax(means + bonus))

    def update(self, arm: int, reward: float) -> None:
        """Discount every arm's history, then add this reward (scaled) to the played arm."""
        self.scale = max(self.scale, abs(reward))
        self.counts *= self.discount
        self.sums *= self.discount
        self.counts[arm] += 1.0
        self.sums[arm] += reward / self.scale if self.scale > 0 else 0.0

    def best(self) -> int:
        """The arm with the best discounted mean among those played (the first if none)."""
        played = self.counts > 0
        if not played.any():
            return 0
        means = np.where(played, self.sums / np.where(played, self.counts, 1.0), -np.inf)
        return int(np.argmax(means))


def reward(loss_before: float, loss_after: float, seconds: float) -> float:
    """Training progress per second of the round: the loss decrease over the round's time."""
    if not (math.isfinite(loss_before) and math.isfinite(loss_after)) or seconds <= 0:
        return 0.0
    return (loss_before - loss_after) / seconds


def feasible_arms(arms: Sequence[float], fits: Callable[[float], bool]) -> tuple[float, ...]:
    """The ratios whose sub-model fits (by `fits`); the largest ratio alone when none does."""
    ok = tuple(a for a in arms if fits(a))
    return ok or (max(arms),)


class FedMP(Method):
    """A bandit per client picks its sub-model's ratio; structured sub-models cut on the server."""

    name = "fedmp"
    summary = "FedMP: a bandit per client picks its structured sub-model's ratio"
    aggregation = "residual"
    always_structured = True
    resumable = False  # the bandits are not in the checkpoint

    def start(
        self, state: State, global_masks: Masks, train_sizes: dict[int, int]
    ) -> tuple[State, Masks]:
        cuts = {ratio: self._cut(state, ratio) for ratio in ARMS}
        sizes = {ratio: self.fleet.facts.footprint(state, cut) for ratio, cut in cuts.items()}

        def fits(cid: int, ratio: float) -> bool:
            fp, limit = sizes[ratio], self.fleet.clients[cid].budget
            return within_budget(limit, fp.flops, fp.params, fp.memory_bytes)

        self.bandits = {
            rec.cid: DiscountedUCB(feasible_arms(ARMS, partial(fits, rec.cid)))
            for rec in self.fleet.clients
        }
        self.played: dict[int, int] = {}
        return state, global_masks

    def _cut(self, state: State, ratio: float) -> Masks:
        if ratio <= 0.0:
            return {}
        rates = dict.fromkeys(self.targets, ratio)
        return magnitude_masks(state, rates, "structured", None, self.fleet.facts.groups)

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        arm = self.bandits[cid].choose()
        self.played[cid] = arm
        return self._cut(state, self.bandits[cid].arms[arm])

    def deploy_masks(self, cid: int, state: State, global_masks: Masks) -> Masks:
        bandit = self.bandits[cid]
        return self._cut(state, bandit.arms[bandit.best()])

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        return Orders(round=rnd, masks=masks, core=core, loss_delta=True)

    def observe(self, cid: int, reply: Reply, seconds: float) -> None:
        before = float(reply.metrics.get("loss-before", float("nan")))
        after = float(reply.metrics.get("loss-after", float("nan")))
        self.bandits[cid].update(self.played[cid], reward(before, after, seconds))

    @classmethod
    def before_training(cls, cfg: Config, data: ClientData, orders: Orders) -> dict[str, Any]:
        """The training loss of the sub-model as received, for the bandit's reward."""
        if not orders.loss_delta:
            return {}
        return {"loss-before": evaluate(data.model, data.x_train, data.y_train)[0]}

    @classmethod
    def after_training(
        cls, cfg: Config, data: ClientData, masks: Masks, hook: StepHook | None, orders: Orders
    ) -> Finished:
        metrics: dict[str, Any] = {}
        if orders.loss_delta:
            metrics["loss-after"] = evaluate(data.model, data.x_train, data.y_train)[0]
        return Finished(masks, metrics | rate_metrics(masks))
