"""A client's side of one round, without Flower: the method prunes, the client trains, the
method finishes; at deployment the method prunes to the final budget and the client evaluates.

`fl/client_app.py` only unpacks the message, calls `train_round` or `deploy`, and packs what
they return.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fedrlprune.data.federated import FederatedData, federate, federate_named
from fedrlprune.data.loaders import ArrayDataset
from fedrlprune.errors import FedRLPruneError
from fedrlprune.federation.messages import Orders
from fedrlprune.methods import METHODS
from fedrlprune.methods.base import ClientData
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.compact import pruned_channels
from fedrlprune.pruning.masks import apply_masks, pruning_targets
from fedrlprune.pruning.submodel import SubModel, expand, extract, to_compact
from fedrlprune.state import Masks, State
from fedrlprune.training import (
    as_tensors,
    evaluate,
    get_state,
    refresh_batchnorm,
    round_lr,
    set_state,
    train,
)
from fedrlprune.training_plan import fit_training

if TYPE_CHECKING:
    from fedrlprune.config import Config


@dataclass(frozen=True)
class Update:
    """What a client sends back: its model under its mask, metrics, and the method's extras."""

    state: State
    masks: Masks
    metrics: dict[str, Any]
    policy: State | None = None
    importance: State | None = None


def train_round(
    cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders
) -> Update:
    """Prune (the method's rule), train locally with the method's step hook, finish. A structured
    client trains its compact sub-model where it can (`local_training`); the dense model takes
    the trained weights back before the method finishes."""
    method = METHODS[cfg.method]
    cid = int(data.stats["client"])
    pruned = method.prune(cfg, data, state, masks, orders)
    set_state(data.model, pruned.state)
    metrics = dict(pruned.metrics) | method.before_training(cfg, data, orders)
    start = time.perf_counter()
    local = local_training(cfg, data, pruned.masks, core_within(orders.core, pruned.masks))
    hook = method.training_hook(cfg, local.data, local.masks, orders)
    compact_seconds = time.perf_counter() - start
    plan = fit_training(
        local.data.model,
        data.input_shape,
        cfg.batch_size,
        cfg.momentum,
        orders.memory or math.inf,
        local.core is not None,
    )
    result = train(
        local.data.model,
        data.x_train,
        data.y_train,
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=round_lr(cfg.lr, cfg.lr_schedule, orders.round, cfg.rounds),
        momentum=plan.momentum,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed * 1_000_003 + orders.round * 10_007 + cid,
        hook=hook,
        core=local.core if plan.core else None,
        max_grad_norm=cfg.max_grad_norm,
        micro_batch=plan.micro_batch,
    )
    refreshed = (
        refresh_batchnorm(local.data.model, data.x_train, cfg.batch_size) if cfg.bn_refresh else 0
    )
    start = time.perf_counter()
    local.write_back(data.model, apply_masks(pruned.state, pruned.masks))
    compact_seconds += time.perf_counter() - start
    done = method.after_training(cfg, data, pruned.masks, hook, orders)
    metrics |= done.metrics | {
        "partition-id": cid,
        "num-examples": len(data.y_train),
        "epochs": cfg.local_epochs,
        "train-loss": result.loss,
        "train-seconds": result.seconds,
        "bn-refresh-samples": refreshed,
        "compact-training": int(local.sub is not None),
        "compact-seconds": compact_seconds if local.sub is not None else 0.0,
        "micro-batch": plan.micro_batch,
        "train-momentum": plan.momentum,
        "train-memory-bytes": plan.memory.total,
    }
    return Update(get_state(data.model), done.masks, metrics, pruned.policy, done.importance)


@dataclass(frozen=True)
class LocalTraining:
    """What a client trains: its dense model, or the compact sub-model `sub` in its place, with
    the mask and the core in the same coordinates."""

    data: ClientData
    masks: Masks
    core: Masks | None
    sub: SubModel | None = None

    def write_back(self, model: nn.Module, base: State) -> None:
        """Put the trained sub-model into the dense `model`; `base`: the state trained from,
        masked entries zero (nothing to do when the dense model was trained)."""
        if self.sub is not None:
            set_state(model, expand(get_state(self.sub.model), self.sub.index, base))


def local_training(
    cfg: Config, data: ClientData, masks: Masks, core: Masks | None
) -> LocalTraining:
    """The compact sub-model where a structured run's method allows it (`compact_training`)
    and its masks remove a channel exactly; the masked dense model otherwise (masks not cut per
    channel group, which `compact_model` refuses, are trained that way)."""
    dense = LocalTraining(data, masks, core)
    if not (cfg.structured and METHODS[cfg.method].compact_training and masks):
        return dense
    if not any(pruned_channels(masks, data.model).values()):
        return dense
    try:
        sub = extract(data.model, masks, data.input_shape)
    except FedRLPruneError:
        return dense
    cut = None if core is None else to_compact(core, sub.index)
    view = replace(data, model=sub.model, cache={})  # nothing cached for the dense model
    return LocalTraining(view, to_compact(masks, sub.index), cut, sub)


def deploy(cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders) -> Update:
    """Prune the final global model to this client's final budget (the method's rule, the policy
    as it is), recompute its BatchNorm statistics on the local training data (`bn_refresh`:
    the merged ones mix the statistics of sub-models of other widths), evaluate it on the
    local test split."""
    pruned = METHODS[cfg.method].prune(cfg, data, state, masks, orders)
    set_state(data.model, pruned.state)
    if cfg.bn_refresh:
        refresh_batchnorm(data.model, data.x_train, cfg.batch_size)
    loss, acc = evaluate(data.model, data.x_test, data.y_test)
    metrics = dict(pruned.metrics) | {
        "partition-id": int(data.stats["client"]),
        "num-examples": len(data.y_test),
        "test-loss": loss,
        "test-accuracy": acc,
    }
    return Update(get_state(data.model), pruned.masks, metrics)


def client_data(
    cfg: Config,
    cid: int,
    model_fn: ModelFactory | None = None,
    data: ArrayDataset | None = None,
    token: str = "",
    like: ClientData | None = None,
) -> ClientData:
    """Client `cid`'s splits (from the config alone) and a fresh model. `token` names the user
    dataset, so its partition is computed once per process like a named dataset's. `like`:
    another client of this run whose model and model-derived cache (groups, layer FLOPs) to
    share, for one process that serves clients one after another."""
    fed = federate_named(cfg) if data is None else _federate_user(token, cfg, data)
    x_tr, y_tr, x_va, y_va, x_te, y_te = fed.client(cid)
    tensors: dict[str, torch.Tensor] = {}
    tensors["x_train"], tensors["y_train"] = as_tensors(x_tr, y_tr)
    tensors["x_val"], tensors["y_val"] = as_tensors(x_va, y_va)
    tensors["x_test"], tensors["y_test"] = as_tensors(x_te, y_te)
    stats = fed.client_stats(cid)
    if like is not None:
        return replace(like, **tensors, stats=stats)
    ds = fed.dataset
    factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
    model = factory(ds.input_shape, ds.num_classes)
    return ClientData(
        model,
        **tensors,
        input_shape=ds.input_shape,
        num_classes=ds.num_classes,
        stats=stats,
        targets=pruning_targets(model, cfg.skip_list(), ds.input_shape),
        factory=factory,
    )


_USER: dict[tuple[str, Config], FederatedData] = {}


def _federate_user(token: str, cfg: Config, data: ArrayDataset) -> FederatedData:
    """`federate` over a user dataset, kept for the last run only (a token per dataset)."""
    key = (token, cfg)
    if key not in _USER:
        _USER.clear()
        _USER[key] = federate(cfg, data)
    return _USER[key]


def core_within(core: Masks, masks: Masks) -> Masks | None:
    """The core sub-network to train beside the client's own model: the core the server sent,
    within the client's own mask; None when none came or it is the client's model itself."""
    if not core:
        return None
    inside = {k: m & masks[k] if k in masks else m for k, m in core.items()}
    same = inside.keys() == masks.keys() and all(
        np.array_equal(inside[k], masks[k]) for k in inside
    )
    return None if same else inside
