"""A client's side of one round, without Flower: the method prunes, the client trains, the
method finishes; at deployment the method prunes to the final budget and the client evaluates.

`fl/client_app.py` only unpacks the message, calls `train_round` or `deploy`, and packs what
they return.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedrlprune.data.federated import FederatedData, federate, federate_named
from fedrlprune.data.loaders import ArrayDataset
from fedrlprune.federation.messages import Orders
from fedrlprune.methods import METHODS
from fedrlprune.methods.base import ClientData
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.masks import pruning_targets
from fedrlprune.state import Masks, State
from fedrlprune.training import as_tensors, evaluate, get_state, round_lr, set_state, train

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
    """Prune (the method's rule), train locally with the method's step hook, finish."""
    method = METHODS[cfg.method]
    cid = int(data.stats["client"])
    pruned = method.prune(cfg, data, state, masks, orders)
    set_state(data.model, pruned.state)
    metrics = dict(pruned.metrics) | method.before_training(cfg, data, orders)
    hook = method.training_hook(cfg, data, pruned.masks, orders)
    result = train(
        data.model,
        data.x_train,
        data.y_train,
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=round_lr(cfg.lr, cfg.lr_schedule, orders.round, cfg.rounds),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed * 1_000_003 + orders.round * 10_007 + cid,
        hook=hook,
        core=core_within(orders.core, pruned.masks),
    )
    done = method.after_training(cfg, data, pruned.masks, hook, orders)
    metrics |= done.metrics | {
        "partition-id": cid,
        "num-examples": len(data.y_train),
        "epochs": cfg.local_epochs,
        "train-loss": result.loss,
        "train-seconds": result.seconds,
    }
    return Update(get_state(data.model), done.masks, metrics, pruned.policy, done.importance)


def deploy(cfg: Config, data: ClientData, state: State, masks: Masks, orders: Orders) -> Update:
    """Prune the final global model to this client's final budget (the method's rule, the policy
    as it is), evaluate it on the local test split."""
    pruned = METHODS[cfg.method].prune(cfg, data, state, masks, orders)
    set_state(data.model, pruned.state)
    loss, acc = evaluate(data.model, data.x_test, data.y_test)
    metrics = dict(pruned.metrics) | {
        "partition-id": int(data.stats["client"]),
        "num-examples": len(data.y_test),
        "test-loss": loss,
        "test-accuracy": acc,
    }
    return Update(pruned.state, pruned.masks, metrics)


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
        targets=pruning_targets(model, cfg.skip_list()),
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
