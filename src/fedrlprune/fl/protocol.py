"""What travels between ServerApp and ClientApp: record names, and arrays checked on arrival.

Only arrays and scalar records cross the wire (no pickle). Every array record is checked
against the model's own layout before it is used, so a broken or hostile peer gets a clear
refusal instead of a crash deep inside PyTorch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedrlprune.config import Config
from fedrlprune.federation.messages import Orders, RLOrders
from fedrlprune.pruning import payload
from fedrlprune.rl.prune import policy_layout
from fedrlprune.state import Masks, State

# Record names inside a Message's RecordDict.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
POLICY = "policy"  # the pruning policy's Q-network, on its own path beside the model
IMPORTANCE = "importance"  # PruneFL: a client's accumulated squared gradients of pruned layers
CORE = "core"  # fedrlprune: the mask of the weights every client keeps, trained as a model too

# Message types beside Flower's "train" and "evaluate": a handshake that asks each node which
# partition (client id) it holds, so the server can sample clients reproducibly by client id.
QUERY = "query"


PARTITION = "partition"  # per-call value: the client a simulated message is for
EXTRA = "call."  # prefix of per-call values, so they can never shadow a config key
RL = "rl."  # prefix of the `RLOrders` fields among the per-call values
_ARRAY_PARTS = ("masks", "core", "policy", "rl")  # Orders fields that are not plain scalars


def pack_orders(
    cfg: Config, orders: Orders, state: State, partition: int | None = None
) -> RecordDict:
    """One client's message content: the global model under `orders.masks`, the core and the
    policy when the orders carry them, and the config with the orders' scalars. `partition`
    names the client the message is for (simulation: any simulated node can serve any client;
    a real device holds its own partition and gets none)."""
    records: dict[str, ArrayRecord | ConfigRecord] = {ARRAYS: pack(state, orders.masks)}
    if orders.core:
        records[CORE] = pack_masks(orders.core)
    if orders.policy is not None:
        records[POLICY] = pack(orders.policy, {})
    scalars = {
        f.name: getattr(orders, f.name)
        for f in dataclasses.fields(orders)
        if f.name not in _ARRAY_PARTS
    }
    if orders.rl is not None:
        scalars |= {RL + k: v for k, v in dataclasses.asdict(orders.rl).items()}
    if partition is not None:
        scalars[PARTITION] = partition
    records[CONFIG] = config_record(cfg, **scalars)
    return RecordDict(records)


def config_of(content: RecordDict) -> tuple[Config, dict[str, Any], int | None]:
    """A message's run config, its per-call values (read once per message) and the client it
    names, if any (`pack_orders`' `partition`)."""
    cfg, extra = config_from_record(content.config_records[CONFIG])
    partition = extra.pop(PARTITION, None)
    return cfg, extra, None if partition is None else int(partition)


def unpack_orders(
    content: RecordDict, extra: dict[str, Any], reference: State
) -> tuple[Orders, State]:
    """The orders and the global model (under the orders' masks) of a message, given its
    per-call values (`config_of`); PayloadError when an array does not fit the model."""
    state, masks = unpack(content.array_records[ARRAYS], reference)
    core = unpack_masks(content.array_records[CORE], reference) if CORE in content else {}
    policy = None
    if POLICY in content:
        policy, _ = unpack(content.array_records[POLICY], policy_layout())
    rl_values = {k.removeprefix(RL): v for k, v in extra.items() if k.startswith(RL)}
    rl = RLOrders(**rl_values) if rl_values else None
    scalars = {k: v for k, v in extra.items() if not k.startswith(RL)}
    orders = Orders(masks=masks, core=core, policy=policy, rl=rl, **scalars)
    return orders, state


def config_record(cfg: Config, **extra: int | float | str | bool) -> ConfigRecord:
    """The run config (so clients need nothing else to rebuild their data) plus per-call values."""
    return ConfigRecord({**cfg.to_dict(), **{EXTRA + k: v for k, v in extra.items()}})


def config_from_record(record: ConfigRecord) -> tuple[Config, dict[str, Any]]:
    """Split a config record back into the Config and the per-call extras."""
    values = dict(record)
    extras = {k.removeprefix(EXTRA): v for k, v in values.items() if k.startswith(EXTRA)}
    cfg = Config.from_dict({k: v for k, v in values.items() if not k.startswith(EXTRA)})
    return cfg, extras


def pack(state: Mapping[str, np.ndarray], masks: Masks) -> ArrayRecord:
    """A model as it travels: masked parameters sparse (see pruning/payload.py), the rest dense."""
    encoded = payload.encode(dict(state), masks)
    return ArrayRecord({name: _array(a) for name, a in encoded.items()})


def unpack(
    record: ArrayRecord, reference: Mapping[str, np.ndarray], max_density: float = 1.0
) -> tuple[State, Masks]:
    """Decode and check a received model against the reference layout; PayloadError if unfit."""
    return payload.decode(
        {name: arr.numpy() for name, arr in record.items()},
        dict(reference),
        max_density=max_density,
    )


def pack_masks(masks: Masks) -> ArrayRecord:
    """Masks without values (bitmask or index list each, whichever is smaller)."""
    return ArrayRecord({k: _array(a) for k, a in payload.encode_masks(masks).items()})


def _array(a: np.ndarray) -> Array:
    """A Flower Array of `a` in C order, shape kept: `np.ascontiguousarray` alone turns a 0-d
    buffer (BatchNorm's `num_batches_tracked`) into shape (1,), which the checks then refuse."""
    return Array(np.ascontiguousarray(a).reshape(a.shape))


def unpack_masks(record: ArrayRecord, reference: Mapping[str, np.ndarray]) -> Masks:
    """Decode masks and check them against the reference layout; PayloadError if unfit."""
    return payload.decode_masks({k: a.numpy() for k, a in record.items()}, dict(reference))


def record_bytes(record: ArrayRecord) -> int:
    """Bytes of the record as Flower serialises it (array buffers plus their names)."""
    return record.count_bytes()


def download_bytes(content: RecordDict) -> int:
    """Bytes of every array record a message carries (the model, and the core and policy)."""
    return sum(record_bytes(r) for r in content.array_records.values())
