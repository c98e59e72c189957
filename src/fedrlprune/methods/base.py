"""The method interface: every federated method is one subclass of `Method`, in one module.

Server side (an instance per run, holding the method's own state): the initial global model,
the mask and orders each selected client gets in a round, what the server learns from a reply,
how accepted replies merge into the new global state, the orders for deployment, and what the
checkpoint keeps. Client side (class methods: a client keeps no method state between
messages): prune before training, the hook around every optimiser step, and the work before and
after training. The defaults are FedAvg's: no pruning, the mask-vote merge. The round loop that
calls these hooks is `federation/server.py` (server) and `federation/client.py` (client).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from fedrlprune.federation.aggregation import aggregate_sparse
from fedrlprune.federation.messages import Orders, Reply
from fedrlprune.pruning.cost import StructuredCost
from fedrlprune.pruning.groups import ChannelGroup, channel_groups
from fedrlprune.pruning.masks import MaskEnforcer, layer_sparsity
from fedrlprune.state import Masks, State
from fedrlprune.training import StepHook, get_state

if TYPE_CHECKING:
    from fedrlprune.config import Config
    from fedrlprune.federation.fleet import Fleet
    from fedrlprune.models import ModelFactory

ANY_VOTE = 1e-9  # vote threshold that keeps every weight at least one client kept


@dataclass
class ClientData:
    """One client's splits and model, as its worker holds them between messages."""

    model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    stats: dict[str, Any]  # sizes and label histogram, for the partition report
    targets: list[str]  # the layers that get pruned
    factory: ModelFactory
    cache: dict[str, Any] = field(default_factory=dict)  # what a method counts once per client

    def groups(self, structured: bool) -> list[ChannelGroup] | None:
        """The coupled channels (BatchNorm, residual additions) structured masks cut together;
        traced once per client. None in unstructured mode."""
        if not structured:
            return None
        if "groups" not in self.cache:
            self.cache["groups"] = channel_groups(self.model, self.input_shape, self.targets)
        return self.cache["groups"]

    def structured_cost(self) -> StructuredCost:
        """What the compact model costs for any channels removed (pruning/cost.py); counted
        once per client."""
        if "cost" not in self.cache:
            groups = self.groups(True) or []
            self.cache["cost"] = StructuredCost.of(self.model, self.input_shape, groups)
        return self.cache["cost"]

    def initial_state(self, seed: int) -> State:
        """The run's initial weights, rebuilt the way the server builds them (same seed, same
        factory), so they never travel (LotteryFL rewinds to them)."""
        if "initial" not in self.cache:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                self.cache["initial"] = get_state(self.factory(self.input_shape, self.num_classes))
        return self.cache["initial"]


@dataclass(frozen=True)
class Pruned:
    """A client's model after the method's pruning step, and what it says about it."""

    state: State
    masks: Masks
    metrics: dict[str, Any] = field(default_factory=dict)
    policy: State | None = None  # `fedrlprune`: the policy it trained, to send back


@dataclass(frozen=True)
class Finished:
    """What a client sends after training, beside its model."""

    masks: Masks
    metrics: dict[str, Any] = field(default_factory=dict)
    importance: State | None = None


class Method:
    """FedAvg's behaviour; each method overrides the hooks its rule needs."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `fedrlprune keys` and the docs
    aggregation: ClassVar[str] = "vote"  # the merge rule of `aggregation = "auto"`
    modes: ClassVar[tuple[str, ...]] = ("unstructured", "structured")  # allowed `prune_mode`s
    default_mode: ClassVar[str] = "unstructured"  # what `prune_mode = "auto"` runs
    always_structured: ClassVar[bool] = False  # masks remove channels whatever `prune_mode` says
    resumable: ClassVar[bool] = True  # its server state is all in the checkpoint
    keeps_own_masks: ClassVar[bool] = True  # False: every client follows the server's mask
    may_move: ClassVar[bool] = False  # client masks may move at constant density
    # Structured runs: the client trains the compact sub-model (pruned channels removed) and
    # writes it back. False for a method whose `training_hook` needs the dense coordinates
    # (e.g. accumulates dense gradients); `after_training` always sees the dense model.
    compact_training: ClassVar[bool] = True

    def __init__(self, cfg: Config, fleet: Fleet) -> None:
        self.cfg = cfg
        self.fleet = fleet
        self.targets = list(fleet.facts.targets)

    # --------------------------------------------------------------------------- server side

    def start(
        self, state: State, global_masks: Masks, train_sizes: dict[int, int]
    ) -> tuple[State, Masks]:
        """The global model and mask to start from, once the clients' sizes are known: the
        initial ones (no mask yet), or a resumed run's, which a method must keep."""
        return state, global_masks

    def before_round(self, rnd: int, state: State, global_masks: Masks) -> tuple[State, Masks]:
        return state, global_masks

    def masks_for(self, cid: int, rnd: int, state: State, global_masks: Masks) -> Masks:
        """The mask client `cid` trains under in round `rnd`: its own, or the global one
        before it has pruned."""
        own = self.fleet.clients[cid].masks
        return global_masks if own is None else own

    def core(self) -> Masks:
        """A sub-network every selected client trains beside its own model (none here)."""
        return {}

    def orders(self, cid: int, rnd: int, state: State, masks: Masks, core: Masks) -> Orders:
        return Orders(round=rnd, masks=masks, core=core)

    def deploy_masks(self, cid: int, state: State, global_masks: Masks) -> Masks:
        """The mask of the model client `cid` deploys: the global mask and its own together."""
        return self.fleet.deploy_masks(cid, global_masks)

    def deploy_orders(self, cid: int, state: State, masks: Masks) -> Orders:
        return Orders(round=self.cfg.rounds, masks=masks, deploy=True)

    def importance_layout(self, rnd: int) -> State | None:
        """Layout of the squared gradients the clients send this round, if asked for."""
        return None

    def observe(self, cid: int, reply: Reply, seconds: float) -> None:
        """What the server learns from an accepted reply (`seconds`: its simulated round)."""

    def merge(self, rnd: int, state: State, replies: dict[int, Reply]) -> tuple[State, Masks]:
        """The new global model and mask from this round's accepted replies."""
        return aggregate_sparse(
            [r.state for r in replies.values()],
            [r.masks for r in replies.values()],
            [float(r.metrics["num-examples"]) for r in replies.values()],
            state,
            rule=self.cfg.aggregation_rule(),
            unkept=self.cfg.unkept,
            **self.merge_options(),
        )

    def merge_options(self) -> dict[str, Any]:
        """Keyword arguments of `aggregate_sparse` beside the states and the rule."""
        return {
            "vote_threshold": self.cfg.vote_threshold,
            "target_sparsity": self.cfg.server_sparsity or None,
        }

    def snapshot(self) -> dict[str, np.ndarray]:
        """The method's server state as named arrays, for the checkpoint."""
        return {}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back what `snapshot` gave, when a run resumes."""

    def artifacts(self) -> dict[str, State]:
        """Extra results files of a finished run: file name -> named arrays (.npz)."""
        return {}

    # --------------------------------------------------------------------------- client side

    @classmethod
    def prune(
        cls, cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders
    ) -> Pruned:
        """The method's pruning step before training (and at deployment)."""
        return Pruned(state, masks)

    @classmethod
    def before_training(cls, cfg: Config, data: ClientData, orders: Orders) -> dict[str, Any]:
        return {}

    @classmethod
    def training_hook(
        cls, cfg: Config, data: ClientData, masks: Masks, orders: Orders
    ) -> StepHook | None:
        """Called around every optimiser step: by default, keeps pruned weights at zero. With
        `compact_training` in a structured run, `data.model` and `masks` are the compact
        sub-model's."""
        return MaskEnforcer(data.model, masks) if masks else None

    @classmethod
    def after_training(
        cls, cfg: Config, data: ClientData, masks: Masks, hook: StepHook | None, orders: Orders
    ) -> Finished:
        return Finished(masks)


def rate_metrics(masks: Masks) -> dict[str, float]:
    """Each layer's sparsity as `rate/<layer>` metrics, for rates.csv."""
    return {f"rate/{layer}": rate for layer, rate in layer_sparsity(masks).items()}
