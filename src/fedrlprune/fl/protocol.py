"""What travels between ServerApp and ClientApp: record names, and arrays checked on arrival.

Only arrays and scalar records cross the wire (no pickle). Every array record is checked
against the model's own layout before it is used, so a broken or hostile peer gets a clear
refusal instead of a crash deep inside PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedrlprune.config import Config
from fedrlprune.errors import PayloadError

# Record names inside a Message's RecordDict.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

# Message types beside Flower's "train" and "evaluate": a handshake that asks each node which
# partition (client id) it holds, so the server can sample clients reproducibly by client id.
QUERY = "query"

State = dict[str, np.ndarray]


def config_record(cfg: Config, **extra: int | float | str) -> ConfigRecord:
    """The run config (so clients need nothing else to rebuild their data) plus per-call values."""
    return ConfigRecord({**cfg.to_dict(), **extra})


def config_from_record(record: ConfigRecord) -> tuple[Config, dict[str, Any]]:
    """Split a config record back into the Config and the per-call extras."""
    values = dict(record)
    keys = set(Config.__dataclass_fields__)
    cfg = Config.from_dict({k: v for k, v in values.items() if k in keys})
    return cfg, {k: v for k, v in values.items() if k not in keys}


def state_to_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in state.items()})


def record_to_state(record: ArrayRecord, reference: Mapping[str, np.ndarray]) -> State:
    """Decode `record` and check it has exactly the reference's names, shapes, dtypes, finite."""
    got, want = set(record.keys()), set(reference)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        raise PayloadError(f"array names do not match the model: missing {missing}, extra {extra}")
    state: State = {}
    for name, ref in reference.items():
        arr = record[name].numpy()
        if arr.shape != ref.shape:
            raise PayloadError(f"{name}: shape {arr.shape}, the model has {ref.shape}")
        if arr.dtype != ref.dtype:
            raise PayloadError(f"{name}: dtype {arr.dtype}, the model has {ref.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise PayloadError(f"{name}: holds NaN or infinite values")
        state[name] = arr
    return state


def record_bytes(record: ArrayRecord) -> int:
    """Bytes of the record as Flower serialises it (array buffers plus their names)."""
    return record.count_bytes()
