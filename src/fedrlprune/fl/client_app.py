"""The Flower ClientApp: a thin adapter that moves records in and out of local training.

Each message carries the whole run config, so a client (simulated or a real SuperNode) needs
only its partition id (`partition-id` in its node config) to rebuild its own data split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedrlprune.config import Config
from fedrlprune.data.federated import FederatedData, federate, federate_named
from fedrlprune.data.loaders import ArrayDataset
from fedrlprune.errors import FedRLPruneError
from fedrlprune.fl import protocol
from fedrlprune.fl.training import as_tensors, evaluate, get_state, set_state, train
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.masks import MaskEnforcer, apply_masks, magnitude_masks, pruning_targets


@dataclass
class _Local:
    """What one client keeps between messages in this worker: its tensors and a model."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: nn.Module
    stats: dict[str, Any]  # sizes and label histogram, for the partition report


def make_client_app(
    model_fn: ModelFactory | None = None, data: ArrayDataset | None = None
) -> ClientApp:
    """A ClientApp for the config each message carries; a user model or dataset may replace the
    registry's and the named dataset (the Python API's way to bring your own)."""
    app = ClientApp()
    cache: dict[tuple[Config, int], _Local] = {}

    def local(cfg: Config, context: Context) -> tuple[int, _Local]:
        cid = partition_id(context, cfg)
        key = (cfg, cid)
        if key not in cache:
            if any(k[0] != cfg for k in cache):
                cache.clear()  # a new run in this worker: drop the last run's clients
            fed: FederatedData = federate(cfg, data) if data is not None else federate_named(cfg)
            x_tr, y_tr, _, _, x_te, y_te = fed.client(cid)
            ds = fed.dataset
            factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
            cache[key] = _Local(
                *as_tensors(x_tr, y_tr),
                *as_tensors(x_te, y_te),
                factory(ds.input_shape, ds.num_classes),
                fed.client_stats(cid),
            )
        return cid, cache[key]

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        cfg, _ = protocol.config_from_record(msg.content[protocol.CONFIG])
        _, loc = local(cfg, context)
        return Message(RecordDict({protocol.METRICS: MetricRecord(loc.stats)}), reply_to=msg)

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        cfg, extra = protocol.config_from_record(msg.content[protocol.CONFIG])
        cid, loc = local(cfg, context)
        state, masks = protocol.unpack(msg.content[protocol.ARRAYS], get_state(loc.model))
        rate = float(extra.get("prune_rate", 0.0))
        if rate > 0.0:
            targets = pruning_targets(loc.model, cfg.skip_list())
            masks = magnitude_masks(state, dict.fromkeys(targets, rate), cfg.prune_mode, masks)
            state = apply_masks(state, masks)
        set_state(loc.model, state)
        result = train(
            loc.model,
            loc.x_train,
            loc.y_train,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed * 1_000_003 + int(extra["round"]) * 10_007 + cid,
            hook=MaskEnforcer(loc.model, masks) if masks else None,
        )
        metrics = {
            "partition-id": cid,
            "num-examples": len(loc.y_train),
            "epochs": cfg.local_epochs,
            "train-loss": result.loss,
            "train-seconds": result.seconds,
        }
        content = RecordDict(
            {
                protocol.ARRAYS: protocol.pack(get_state(loc.model), masks),
                protocol.METRICS: MetricRecord(metrics),
            }
        )
        return Message(content, reply_to=msg)

    @app.evaluate()
    def score(msg: Message, context: Context) -> Message:
        """Evaluate the model this client deploys (sent under its own mask) on its test split."""
        cfg, _ = protocol.config_from_record(msg.content[protocol.CONFIG])
        cid, loc = local(cfg, context)
        state, _ = protocol.unpack(msg.content[protocol.ARRAYS], get_state(loc.model))
        set_state(loc.model, state)
        loss, acc = evaluate(loc.model, loc.x_test, loc.y_test)
        metrics = {
            "partition-id": cid,
            "num-examples": len(loc.y_test),
            "test-loss": loss,
            "test-accuracy": acc,
        }
        return Message(RecordDict({protocol.METRICS: MetricRecord(metrics)}), reply_to=msg)

    return app


def partition_id(context: Context, cfg: Config) -> int:
    """This node's client id, from its node config (`partition-id`), checked against the run."""
    node = context.node_config
    if "partition-id" not in node:
        raise FedRLPruneError(
            "this SuperNode has no `partition-id` in its node config; start it with "
            '--node-config "partition-id=K num-partitions=N" (K in 0..N-1)'
        )
    cid = int(node["partition-id"])
    if not 0 <= cid < cfg.clients:
        raise FedRLPruneError(
            f"partition-id={cid} but the run has clients={cfg.clients}; "
            f"give each SuperNode a partition-id in 0..{cfg.clients - 1}"
        )
    return cid


# The ClientApp that `flwr run` loads (see [tool.flwr.app.components] in pyproject.toml).
app = make_client_app()
