"""PruneFL: one shared mask, readjusted by gradient importance per unit of round time.

Paper: Y. Jiang, S. Wang, V. Valls, B. J. Ko, W.-H. Lee, K. K. Leung, L. Tassiulas, "Model
Pruning Enables Efficient Federated Learning on Edge Devices", IEEE TNNLS 2022 (code:
github.com/jiangyuang/PruneFL, `control/algorithm.py`, `bases/fl/simulation/adaptive.py`,
`configs/*.py`). We run it as that code runs it.

What it does. Every client trains the same sparse model (the server's mask). In each round it
sums the gradient of every parameter over its local steps, pruned weights included (their
gradient says what regrowing them would buy), and its importance for the round is that sum
squared times the samples it processed (`round_importance`; `AdaptiveClient.main`). The
server adds these up over the clients and over every round since the last readjustment
(`ControlModule.accumulate`) and readjusts the mask at the next one (`readjust`): in each layer
the kept weights of smallest magnitude (`decrease_share`: 30%, halving every `HALF_LIFE`
rounds) become candidates for removal beside every pruned weight; then the candidates are
taken back in order of importance per second of round time, as long as each one raises the
ratio (importance kept) / (round time) (`architecture_search`). The importance of the weights
that are never candidates (biases, layers not pruned) counts in the kept importance. A
weight's time is what it adds to a round on the slowest device tier of the run (training FLOPs
over the tier's speed plus its 32 bits up and down over the tier's links,
`seconds_per_weight`), the paper's per-parameter computation and communication coefficients.

Where we depart from the official code, and why:
- Initial pruning is the first readjustment, done after the dense rounds before `prune_start`
  with the importance the clients accumulated over them. The official code prunes first on
  one client's data on the server, readjusting every 50 steps until the density settles; our
  runner has no round without federated training, and the dense rounds give the same signal.
- Readjustments happen at the pruning rounds of the schedule (`prune_start`, `prune_until`,
  `prune_every`). The official interval, 50 rounds over 10,000, gives no readjustment at all
  in our 20-40 round runs; `prune_every` sets ours, and the importance still covers every
  round since the previous readjustment.
- Time coefficients come from the device profiles (`devices.py`), not from timing the real
  hardware; the fixed part of a round (layers that are not pruned) is counted the same way.
- Our clients keep nothing between rounds, so the server, not the client, sums a client's
  rounds: a client sends its importance in every round before the last readjustment (its
  bytes are counted in the upload), where the official client uploads its sum once per
  interval. The sum is the same.
- The official client adds `param.grad` into a dict that holds the first step's gradient
  tensor itself, which `model.zero_grad()` zeroes in place before PyTorch 2.0 (leaving twice
  the last step's gradient); we sum the gradients of every step, as the code plainly means.

Device budgets: PruneFL has one model for every client and no notion of per-client capacity; it
sizes the model for round time, not for the weakest device. We do not force budgets on it, and
`budget_satisfaction` reports honestly how many deployed models fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fedrlprune.devices import TIERS, DeviceProfile, training_flops
from fedrlprune.federation.messages import Orders, Reply
from fedrlprune.methods.base import ClientData, Finished, Method, rate_metrics
from fedrlprune.pruning.masks import MaskEnforcer, apply_masks
from fedrlprune.state import Masks, State
from fedrlprune.training import StepHook

if TYPE_CHECKING:
    from fedrlprune.config import Config
    from fedrlprune.federation.fleet import Fleet

# Share of a layer's kept weights that may be dropped per readjustment, halving every HALF_LIFE
# rounds (`MAX_DEC_DIFF` and `ADJ_HALF_LIFE` of every dataset in the official `configs/*.py`).
DECREASE_SHARE = 0.3
HALF_LIFE = 10_000
BYTES_PER_WEIGHT = 4  # float32 on the wire


def seconds_per_weight(
    layer_flops: Mapping[str, int],
    weights: Mapping[str, int],
    profile: DeviceProfile,
    samples: int,
) -> dict[str, float]:
    """Seconds one kept weight of each layer adds to a round on `profile`: its share of the
    layer's training FLOPs over `samples` samples, plus its bytes up and down."""
    link = BYTES_PER_WEIGHT * 8 * (1.0 / profile.up_bps + 1.0 / profile.down_bps)
    return {
        layer: training_flops(layer_flops[layer] / n, samples) / profile.flops_per_second + link
        for layer, n in weights.items()
    }


def fixed_seconds(
    total_flops: int,
    dense_params: int,
    layer_flops: Mapping[str, int],
    weights: Mapping[str, int],
    profile: DeviceProfile,
    samples: int,
) -> float:
    """Seconds of a round spent on what is never pruned (the head, biases, other layers)."""
    flops = total_flops - sum(layer_flops[layer] for layer in weights)
    params = dense_params - sum(weights.values())
    link = params * BYTES_PER_WEIGHT * 8 * (1.0 / profile.up_bps + 1.0 / profile.down_bps)
    return max(training_flops(flops, samples) / profile.flops_per_second + link, 1e-12)


def readjust(
    weights: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    importance: Mapping[str, np.ndarray],
    seconds: Mapping[str, float],
    base_seconds: float,
    base_importance: float = 0.0,
    decrease: float = DECREASE_SHARE,
) -> dict[str, np.ndarray]:
    """PruneFL's mask readjustment over layers (keys: layer names; values: weight arrays).

    In each layer the `decrease` share of kept weights with the smallest |w| and every pruned
    weight are candidates; the rest stay. Candidates are then added back in decreasing order of
    importance / seconds while each one raises sum(importance kept) / round seconds, where the
    round seconds are `base_seconds` plus `seconds[layer]` per kept weight (the greedy of the
    paper's `architecture_search`). Ties keep the lower flat index first, so it is
    deterministic. Returns the new masks (True = kept).
    """
    numerator = float(base_importance)
    denominator = float(base_seconds)
    new: dict[str, np.ndarray] = {}
    cand_ratio, cand_value, cand_cost, cand_where = [], [], [], []
    for layer, w in weights.items():
        kept = np.asarray(masks.get(layer, np.ones(w.shape, bool)), dtype=bool).ravel()
        imp = np.asarray(importance[layer], dtype=np.float64).ravel()
        alive = np.flatnonzero(kept)
        n_drop = int(decrease * alive.size)
        order = alive[np.argsort(np.abs(w.ravel()[alive]), kind="stable")]
        stay = np.zeros(kept.size, bool)
        stay[order[n_drop:]] = True
        new[layer] = stay
        numerator += float(imp[stay].sum())
        denominator += seconds[layer] * int(stay.sum())
        where = np.flatnonzero(~stay)
        cand_ratio.append(imp[where] / seconds[layer])
        cand_value.append(imp[where])
        cand_cost.append(np.full(where.size, seconds[layer]))
        cand_where.append([(layer, int(i)) for i in where])
    ratio = np.concatenate(cand_ratio) if cand_ratio else np.zeros(0)
    value = np.concatenate(cand_value) if cand_value else np.zeros(0)
    cost = np.concatenate(cand_cost) if cand_cost else np.zeros(0)
    where_all = [pos for layer_pos in cand_where for pos in layer_pos]
    for k in np.argsort(-ratio, kind="stable"):
        if ratio[k] <= numerator / denominator:
            break  # sorted: no later candidate raises the ratio either
        numerator += value[k]
        denominator += cost[k]
        layer, index = where_all[k]
        new[layer][index] = True
    return {layer: new[layer].reshape(np.shape(w)) for layer, w in weights.items()}


def summed_importance(replies: list[State]) -> State:
    """The server's importance: the clients' squared gradients summed, in client order."""
    out: State = {}
    for reply in replies:
        for name, value in reply.items():
            out[name] = out.get(name, 0.0) + value.astype(np.float64)
    return out


def round_importance(summed_grads: Mapping[str, np.ndarray], samples: int) -> State:
    """A client's importance for one round: its gradient summed over the round's local steps,
    squared, times the samples it processed (`(grad ** 2) * num_proc_data` in the official
    `AdaptiveClient.main`)."""
    return {n: np.square(np.asarray(g, np.float64)) * samples for n, g in summed_grads.items()}


def decrease_share(rnd: int) -> float:
    """The share of kept weights that may be dropped in round `rnd`: `MAX_DEC_DIFF * 0.5 **
    (idx / ADJ_HALF_LIFE)` of the official `AdaptiveServer.main`, idx its 0-based round."""
    return DECREASE_SHARE * 0.5 ** ((rnd - 1) / HALF_LIFE)


def as_layer_masks(masks: Masks, layers: list[str]) -> dict[str, np.ndarray]:
    """`{layer: mask}` from the state-dict keyed masks (`layer.weight`)."""
    return {layer: masks[f"{layer}.weight"] for layer in layers if f"{layer}.weight" in masks}


class PruneFL(Method):
    """One shared mask, readjusted at the pruning rounds from the clients' importance."""

    name = "prunefl"
    summary = "PruneFL: one mask readjusted by gradient importance per second of round time"
    modes = ("unstructured",)
    keeps_own_masks = False
    compact_training = False  # the importance hook sums gradients in dense coordinates

    def __init__(self, cfg: Config, fleet: Fleet) -> None:
        super().__init__(cfg, fleet)
        self.masks: Masks = {}
        self.pending: State = {}  # importance summed over clients and rounds since a readjustment
        self.pending_rest = 0.0  # the same for every parameter that is never a candidate

    def start(
        self, state: State, global_masks: Masks, train_sizes: dict[int, int]
    ) -> tuple[State, Masks]:
        # The round time PruneFL minimises is the slowest client's: the slowest tier present,
        # training the average client's samples for the run's local epochs.
        facts = self.fleet.facts
        tiers = {rec.tier for rec in self.fleet.clients}
        slowest = min((TIERS[t] for t in tiers), key=lambda p: p.flops_per_second)
        samples = int(np.mean(list(train_sizes.values()))) * self.cfg.local_epochs
        weights = {t: facts.weights[t] for t in self.targets}
        self.seconds = seconds_per_weight(facts.layer_flops, weights, slowest, samples)
        self.base_seconds = fixed_seconds(
            facts.total_flops, facts.dense_params, facts.layer_flops, weights, slowest, samples
        )
        self.reference = {f"{t}.weight": state[f"{t}.weight"] for t in self.targets}
        return state, dict(self.masks)  # a resumed run keeps its restored mask

    def importance_layout(self, rnd: int) -> State | None:
        """Every round before the last readjustment adds to the importance of the next one."""
        later = any(p > rnd for p in self.fleet.prune_rounds)
        return self.reference if later else None

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        return self.masks

    def deploy_masks(self, cid: int, state: State, global_masks: Masks) -> Masks:
        return self.masks

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        asked = self.importance_layout(rnd) is not None
        return Orders(round=rnd, masks=masks, core=core, importance=asked)

    def observe(self, cid: int, reply: Reply, seconds: float) -> None:
        if reply.importance is not None:
            self.pending = summed_importance([self.pending, reply.importance])
            self.pending_rest += float(reply.metrics.get("importance-rest", 0.0))

    def before_round(self, rnd: int, state: State, global_masks: Masks) -> tuple[State, Masks]:
        if rnd not in self.fleet.prune_rounds or not self.pending:
            return state, global_masks
        state = apply_masks(state, self.masks)  # regrown weights start from zero
        layers = readjust(
            {t: state[f"{t}.weight"] for t in self.targets},
            as_layer_masks(self.masks, self.targets),
            {t: self.pending[f"{t}.weight"] for t in self.targets},
            self.seconds,
            self.base_seconds,
            base_importance=self.pending_rest,
            decrease=decrease_share(rnd),
        )
        self.masks = {f"{t}.weight": mask for t, mask in layers.items()}
        self.pending, self.pending_rest = {}, 0.0
        return apply_masks(state, self.masks), dict(self.masks)

    def merge(self, rnd: int, state: State, replies: dict[int, Reply]) -> tuple[State, Masks]:
        state, _ = super().merge(rnd, state, replies)
        return state, dict(self.masks)

    def snapshot(self) -> dict[str, np.ndarray]:
        """The shared mask and the importance gathered since the last readjustment."""
        return {
            **{f"mask/{n}": m for n, m in self.masks.items()},
            **{f"pending/{n}": v for n, v in self.pending.items()},
            "pending-rest": np.array(self.pending_rest),
        }

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.masks = {k[5:]: v.astype(bool) for k, v in arrays.items() if k.startswith("mask/")}
        self.pending = {k[8:]: v for k, v in arrays.items() if k.startswith("pending/")}
        self.pending_rest = float(arrays.get("pending-rest", 0.0))

    @classmethod
    def training_hook(
        cls, cfg: Config, data: ClientData, masks: Masks, orders: Orders
    ) -> StepHook | None:
        if orders.importance:
            return ImportanceHook(data.model, masks, [f"{t}.weight" for t in data.targets])
        return super().training_hook(cfg, data, masks, orders)

    @classmethod
    def after_training(
        cls, cfg: Config, data: ClientData, masks: Masks, hook: StepHook | None, orders: Orders
    ) -> Finished:
        metrics: dict[str, Any] = rate_metrics(masks)
        if not isinstance(hook, ImportanceHook):
            return Finished(masks, metrics)
        samples = len(data.y_train) * cfg.local_epochs  # `train` passes over every sample
        summed = {n: t.detach().cpu().numpy() for n, t in hook.sums.items()}
        rest = round_importance({n: t.cpu().numpy() for n, t in hook.rest.items()}, samples)
        metrics["importance-rest"] = float(sum(v.sum() for v in rest.values()))
        importance = {n: v.astype(np.float32) for n, v in round_importance(summed, samples).items()}
        return Finished(masks, metrics, importance)


@dataclass
class ImportanceHook:
    """Sums every parameter's gradient over the round's local steps, pruned weights included
    (read before the mask zeroes their gradient), then enforces the mask."""

    model: nn.Module
    masks: Masks
    names: list[str]
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # the pruned layers' weights
    rest: dict[str, torch.Tensor] = field(default_factory=dict)  # every other parameter

    def __post_init__(self) -> None:
        self.enforcer = MaskEnforcer(self.model, self.masks) if self.masks else None
        self.params = dict(self.model.named_parameters())
        self.sums = {n: torch.zeros_like(self.params[n]) for n in self.names}
        self.rest = {n: torch.zeros_like(p) for n, p in self.params.items() if n not in self.sums}

    def before_step(self) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                if param.grad is not None:
                    (self.sums if name in self.sums else self.rest)[name] += param.grad
        if self.enforcer is not None:
            self.enforcer.before_step()

    def after_step(self) -> None:
        if self.enforcer is not None:
            self.enforcer.after_step()
