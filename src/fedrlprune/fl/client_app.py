"""The Flower ClientApp: a thin adapter that moves records in and out of local work.

Each message carries the whole run config, so a client (simulated or a real SuperNode) needs
only its partition id (`partition-id` in its node config) to rebuild its own data split. The
work itself: `prune` (the method's rule: magnitude, the DQN policy, or a baseline's step from
`baselines/client.py`), then `train` with the mask enforced (and the baseline's hooks around
it); at the end, `deploy` prunes to the final budget and evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedrlprune.baselines import client as baselines
from fedrlprune.config import BASELINES, Config
from fedrlprune.data.federated import FederatedData, federate, federate_named
from fedrlprune.data.loaders import ArrayDataset
from fedrlprune.devices import Budget
from fedrlprune.errors import FedRLPruneError
from fedrlprune.fl import protocol
from fedrlprune.fl.training import as_tensors, evaluate, get_state, round_lr, set_state, train
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.masks import apply_masks, magnitude_masks, pruning_targets
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.rl.env import LayerInfo, layer_infos
from fedrlprune.rl.prune import RLSettings, client_features, policy_layout, rl_prune
from fedrlprune.state import Masks, State


@dataclass
class _Local:
    """What one client keeps between messages in this worker: its tensors and a model."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: nn.Module
    input_shape: tuple[int, ...]
    stats: dict[str, Any]  # sizes and label histogram, for the partition report
    layers: list[LayerInfo] = field(default_factory=list)  # counted on first RL use
    total_flops: int = 0
    initial: State | None = None  # the run's initial weights (LotteryFL rewinds to them)

    def baseline(self, targets: list[str]) -> baselines.ClientData:
        return baselines.ClientData(
            self.model,
            self.x_train,
            self.y_train,
            self.x_val,
            self.y_val,
            targets,
            self.initial,
        )


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
            x_tr, y_tr, x_va, y_va, x_te, y_te = fed.client(cid)
            ds = fed.dataset
            factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
            cache[key] = _Local(
                *as_tensors(x_tr, y_tr),
                *as_tensors(x_va, y_va),
                *as_tensors(x_te, y_te),
                factory(ds.input_shape, ds.num_classes),
                ds.input_shape,
                fed.client_stats(cid),
            )
            if cfg.method == "lotteryfl":
                cache[key].initial = baselines.initial_state(
                    factory, ds.input_shape, ds.num_classes, cfg.seed
                )
        return cid, cache[key]

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        cfg, _ = protocol.config_from_record(msg.content.config_records[protocol.CONFIG])
        _, loc = local(cfg, context)
        return Message(RecordDict({protocol.METRICS: MetricRecord(loc.stats)}), reply_to=msg)

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        cfg, extra = protocol.config_from_record(msg.content.config_records[protocol.CONFIG])
        cid, loc = local(cfg, context)
        state, masks = protocol.unpack(
            msg.content.array_records[protocol.ARRAYS], get_state(loc.model)
        )
        state, masks, metrics, policy = prune(cfg, loc, state, masks, extra, msg, cid)
        set_state(loc.model, state)
        targets = pruning_targets(loc.model, cfg.skip_list())
        metrics |= baselines.before_training(cfg, loc.baseline(targets), extra)
        hook = baselines.training_hook(cfg, loc.model, masks, targets, extra)
        core = _core(msg.content, state, masks)
        rnd = int(extra["round"])
        result = train(
            loc.model,
            loc.x_train,
            loc.y_train,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=round_lr(cfg.lr, cfg.lr_schedule, rnd, cfg.rounds),
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed * 1_000_003 + rnd * 10_007 + cid,
            hook=hook,
            core=core,
        )
        importance = None
        if cfg.method in BASELINES:
            masks, more, importance = baselines.after_training(
                cfg, loc.baseline(targets), masks, hook, extra
            )
            metrics |= more
        metrics |= {
            "partition-id": cid,
            "num-examples": len(loc.y_train),
            "epochs": cfg.local_epochs,
            "train-loss": result.loss,
            "train-seconds": result.seconds,
        }
        content: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
            protocol.ARRAYS: protocol.pack(get_state(loc.model), masks),
            protocol.METRICS: MetricRecord(metrics),
        }
        if policy is not None:
            content[protocol.POLICY] = protocol.pack(policy, {})
        if importance is not None:
            content[protocol.IMPORTANCE] = protocol.pack(importance, {})
        return Message(RecordDict(content), reply_to=msg)

    @app.evaluate()
    def deploy(msg: Message, context: Context) -> Message:
        """Prune the final global model to this client's final budget (the method's rule, with
        the policy as it is: no training), evaluate it on the local test split, send it back."""
        cfg, extra = protocol.config_from_record(msg.content.config_records[protocol.CONFIG])
        cid, loc = local(cfg, context)
        state, masks = protocol.unpack(
            msg.content.array_records[protocol.ARRAYS], get_state(loc.model)
        )
        state, masks, metrics, _ = prune(cfg, loc, state, masks, extra, msg, cid)
        set_state(loc.model, state)
        loss, acc = evaluate(loc.model, loc.x_test, loc.y_test)
        metrics |= {
            "partition-id": cid,
            "num-examples": len(loc.y_test),
            "test-loss": loss,
            "test-accuracy": acc,
        }
        content: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
            protocol.ARRAYS: protocol.pack(state, masks),
            protocol.METRICS: MetricRecord(metrics),
        }
        return Message(RecordDict(content), reply_to=msg)

    return app


def prune(
    cfg: Config,
    loc: _Local,
    state: State,
    masks: Masks,
    extra: dict[str, Any],
    msg: Message,
    cid: int,
) -> tuple[State, Masks, dict[str, Any], dict[str, np.ndarray] | None]:
    """The method's pruning rule for this call: (state, masks, metrics, trained policy)."""
    targets = pruning_targets(loc.model, cfg.skip_list())
    if cfg.method in BASELINES:
        state, masks, found = baselines.prune(cfg, loc.baseline(targets), state, masks, extra)
        return state, masks, found, None
    rate = float(extra.get("prune_rate", 0.0))
    if rate > 0.0:
        masks = magnitude_masks(state, dict.fromkeys(targets, rate), cfg.prune_mode, masks)
        return apply_masks(state, masks), masks, {}, None
    if protocol.POLICY not in msg.content:
        return state, masks, {}, None
    if not loc.layers:
        loc.layers = layer_infos(loc.model, loc.input_shape, targets)
        loc.total_flops = total_flops(loc.model, loc.input_shape)
    policy, _ = protocol.unpack(msg.content.array_records[protocol.POLICY], policy_layout())
    result = rl_prune(
        loc.model,
        state,
        masks,
        loc.layers,
        mode=cfg.prune_mode,
        total_params=sum(p.numel() for p in loc.model.parameters()),
        total_flops=loc.total_flops,
        budget=Budget(float(extra["budget_flops"]), float(extra["budget_params"])),
        client=client_features(
            float(extra["flops_share"]),
            float(extra["params_share"]),
            len(loc.y_train),
            float(loc.stats["label_entropy"]),
            float(extra["progress"]),
        ),
        x_val=loc.x_val,
        y_val=loc.y_val,
        policy=policy,
        settings=RLSettings(
            episodes=cfg.rl_episodes,
            eps_start=float(extra["eps_start"]),
            eps_end=float(extra["eps_end"]),
            reward=cfg.rl_reward,
            cost_weight=cfg.rl_cost_weight,
            lr=cfg.rl_lr,
            learn=bool(extra["learn"]),
            rate_scale=float(extra["rate_scale"]),
            seed=cfg.seed * 7_919 + int(extra["round"]) * 101 + cid,
        ),
    )
    metrics: dict[str, Any] = {f"rate/{layer}": r for layer, r in result.rates.items()}
    metrics |= {
        "rl-seconds": result.seconds,
        "rl-episodes": result.episodes,
        "rl-evaluations": result.evaluations,
        "rl-val-accuracy": result.val_accuracy,
        "rl-within-budget": int(result.within_budget),
    }
    trained = result.policy if result.episodes else None
    return apply_masks(state, result.masks), result.masks, metrics, trained


def _core(content: RecordDict, reference: State, masks: Masks) -> Masks | None:
    """The core sub-network to train beside the client's own model: the core the server sent,
    within the client's own mask; None when none came or it is the client's model itself."""
    if protocol.CORE not in content:
        return None
    core = protocol.unpack_masks(content.array_records[protocol.CORE], reference)
    core = {k: m & masks[k] if k in masks else m for k, m in core.items()}
    same = core.keys() == masks.keys() and all(np.array_equal(core[k], masks[k]) for k in core)
    return None if same else core


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
