"""HeteroFL: nested sub-models, each client keeps the first channels of every hidden layer.

Paper: E. Diao, J. Ding, V. Tarokh, "HeteroFL: Computation and Communication Efficient Federated
Learning for Heterogeneous Clients", ICLR 2021. Official code: github.com/diaoenmao/
HeteroFL-Computation-and-Communication-Efficient-Federated-Learning-for-Heterogeneous-Clients
(`src/fed.py`: `split_model`, `combine`; `src/models/conv.py`, `resnet.py`; `src/modules`:
`Scaler`; `src/train_classifier_fed.py`: `stats`).

What it does. Each client has a width rate r: every hidden layer keeps its first ceil(r * C)
of C output channels (`split_model`: `torch.arange(output_size)[:local_output_size]`), the next
layer keeps the matching input columns, and the classifier keeps all its outputs. Sub-models
are nested: a narrower client holds a corner of a wider one's. The server merges each entry
over the clients that held it, unweighted (`combine`: `count += 1`; the `lotteryfl` rule with
every held entry kept); an entry nobody held keeps its global value, and the global model stays
dense. At the end each client deploys the global model cut to its width.

The rate. The paper hands out fixed levels (1, 1/2, 1/4, 1/8, 1/16) in set proportions. Here a
client's device budget sets it: the largest rate whose compact sub-model (channels removed)
fits the budget in parameters and FLOPs both (`largest_fitting` over `width_rates`, every rate
where some layer's width changes), so clients of one tier share a width. The paper's ladder
would leave most of a budget unused (docs/methods.md has the figures for the FedAvg CNN).

Where we depart from the official code, and why:
- Coupled channels (BatchNorm, residual additions, depthwise convs) are cut together through
  `channel_groups`, for any model; the official `split_model` is written per architecture
  (conv, resnet, transformer) from parameter names.
- No `Scaler`: the official models divide each layer's output by the rate while training (not
  at test). It is a module inside their models; ours are zoo or user models we do not rewrite.
- No static BatchNorm (sBN): the official models train without running statistics and, before
  each test, recompute them for the full-width global model in one pass over the whole training
  set (`stats`). Our server holds no training data and a round has no extra pass over the
  clients, so running statistics are tracked in local training and each channel's are merged
  over the clients that held it, like the weights. A narrow sub-model's statistics therefore
  mix widths. With `bn_refresh` (the default, for every method) each client
  recomputes its statistics after local training and again before it deploys, on its own
  data: the nearest a server without data comes to sBN.
- No label masking: the official clients mask the logits of labels they lack and the server
  merges only those classifier rows; here every client trains and sends the whole head, as in
  every other method. Parameters no mask covers (the head's bias, BatchNorm's step counter)
  take the sample-weighted mean, as everywhere else.
- Rates come from the device budgets (above), not from hand-set levels and proportions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from fedrlprune.devices import Budget, within_budget
from fedrlprune.federation.aggregation import aggregate_sparse
from fedrlprune.federation.messages import Orders, Reply
from fedrlprune.methods.base import ANY_VOTE, ClientData, Finished, Method, rate_metrics
from fedrlprune.pruning.cost import StructuredCost
from fedrlprune.pruning.groups import ChannelGroup
from fedrlprune.state import Masks, State
from fedrlprune.training import StepHook

if TYPE_CHECKING:
    from fedrlprune.config import Config

Select = Callable[[int, int, int], np.ndarray]  # (channels, width, round) -> kept channels
RUNNING_STATS = ("running_mean", "running_var")  # BatchNorm buffers that follow a channel


def width_channels(rate: float, size: int) -> int:
    """Channels a layer of `size` keeps at width `rate`: ceil(rate * size), at least one (the
    official `int(np.ceil(output_size * rate))`; the 1e-9 absorbs float error in rate * size)."""
    return min(size, max(1, math.ceil(rate * size - 1e-9)))


def first_channels(size: int, width: int, rnd: int) -> np.ndarray:
    """HeteroFL's rule: the first `width` channels, whatever the round."""
    return np.arange(size) < width


def width_masks(
    state: State, groups: Sequence[ChannelGroup], rate: float, kept: Select, rnd: int
) -> Masks:
    """The sub-model of width `rate` in round `rnd`: each group's channels chosen by `kept`,
    off in every member slice and in the input columns of every layer that reads them."""
    shapes = {key: np.shape(value) for key, value in state.items()}
    out: Masks = {}
    for group in groups:
        alive = kept(group.size, width_channels(rate, group.size), rnd)
        for part in (group.masks(shapes, alive, None), group.reader_masks(shapes, alive)):
            for key, mask in part.items():
                out[key] = out[key] & mask if key in out else mask
    return out


def width_rates(groups: Sequence[ChannelGroup]) -> list[float]:
    """Every rate at which some group's width changes (j / C), in increasing order: between two
    of them every layer keeps the same channels, so the largest fitting rate is one of them."""
    return sorted({j / g.size for g in groups for j in range(1, g.size + 1)} | {1.0})


def largest_fitting(rates: Sequence[float], fits: Callable[[float], bool]) -> float:
    """The largest of the increasing `rates` that `fits`, by bisection (a wider sub-model only
    costs more); the smallest when none fits, and the deployment summary reports the miss."""
    low, high = 0, len(rates) - 1
    if not fits(rates[low]):
        return rates[low]
    while low < high:
        middle = (low + high + 1) // 2
        if fits(rates[middle]):
            low = middle
        else:
            high = middle - 1
    return rates[low]


def with_running_stats(masks: Masks, state: State) -> Masks:
    """`masks` plus the BatchNorm running statistics of each masked BatchNorm, held with their
    channel: what the merge counts a client as holding."""
    out = dict(masks)
    for key, mask in masks.items():
        if mask.ndim != 1 or not key.endswith(".weight"):
            continue
        for buffer in RUNNING_STATS:
            name = f"{key.removesuffix('.weight')}.{buffer}"
            if name in state and np.shape(state[name]) == mask.shape:
                out[name] = mask
    return out


class HeteroFL(Method):
    """Nested width-scaled sub-models sized by each device's budget; merged by who held what."""

    name = "heterofl"
    summary = "HeteroFL: each tier trains the first channels of every layer that fit its budget"
    aggregation = "lotteryfl"  # the official `combine`: each entry over its holders, unweighted
    always_structured = True

    def kept(self, size: int, width: int, rnd: int) -> np.ndarray:
        """The channels a sub-model of `width` keeps in round `rnd`."""
        return first_channels(size, width, rnd)

    def start(
        self, state: State, global_masks: Masks, train_sizes: dict[int, int]
    ) -> tuple[State, Masks]:
        """Each tier's width: the largest whose compact sub-model fits its budget (memory folded
        into the parameter limit, `Fleet.pruning_budget`), counted by pruning/cost.py."""
        facts = self.fleet.facts
        counter = StructuredCost.of(facts.template, facts.input_shape, self._groups())
        rates = width_rates(self._groups())
        by_tier: dict[str, float] = {}
        for rec in self.fleet.clients:
            if rec.tier not in by_tier:
                limit = self.fleet.pruning_budget(rec.cid)
                by_tier[rec.tier] = largest_fitting(rates, partial(self.fits, counter, limit))
        self.rates = {rec.cid: by_tier[rec.tier] for rec in self.fleet.clients}
        return state, {}

    def _groups(self) -> tuple[ChannelGroup, ...]:
        return self.fleet.facts.groups or ()

    def fits(self, counter: StructuredCost, limit: Budget, rate: float) -> bool:
        """Whether the compact sub-model of width `rate` fits `limit` (params and FLOPs)."""
        groups = self._groups()
        params, flops = counter.cost([g.size - width_channels(rate, g.size) for g in groups])
        return within_budget(limit, flops, params)

    def cut(self, state: State, rate: float, rnd: int) -> Masks:
        """The masks of the sub-model of width `rate` in round `rnd`."""
        return width_masks(state, self._groups(), rate, self.kept, rnd)

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        return self.cut(state, self.rates[cid], rnd)

    def deploy_masks(self, cid: int, state: State, global_masks: Masks) -> Masks:
        """The global model cut to the client's width (as in the last round, for FedRolex)."""
        return self.cut(state, self.rates[cid], self.cfg.rounds)

    def merge(self, rnd: int, state: State, replies: dict[int, Reply]) -> tuple[State, Masks]:
        """Each entry averaged over the clients that held it; the global model stays dense."""
        merged, _ = aggregate_sparse(
            [r.state for r in replies.values()],
            [with_running_stats(r.masks, state) for r in replies.values()],
            [float(r.metrics["num-examples"]) for r in replies.values()],
            state,
            rule=self.cfg.aggregation_rule(),
            unkept="previous",
            vote_threshold=ANY_VOTE,
        )
        return merged, {}

    @classmethod
    def after_training(
        cls, cfg: Config, data: ClientData, masks: Masks, hook: StepHook | None, orders: Orders
    ) -> Finished:
        """Each layer's share of cut weights, for rates.csv."""
        return Finished(masks, dict(rate_metrics(masks)))
