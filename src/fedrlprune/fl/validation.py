"""Every client reply is checked before it can touch the global model.

A reply is refused whole (PayloadError naming the problem) when its arrays do not fit the model
(names, shapes, dtypes, finite values, masks that match their values), when it revives weights
the server's mask for it had pruned, when it is denser than the client may be, when its sample
count is not the one its partition holds (a client claiming a million samples must not dominate
the weighted average), when its metrics are not finite numbers, or when its policy does not fit
the Q-network. A method whose masks move (FedDST's prune-and-regrow) may revive pruned weights
but never keep more of a parameter than it was sent. Only arrays and scalars are read: nothing
from a client is unpickled or run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flwr.app import RecordDict

from fedrlprune.errors import PayloadError
from fedrlprune.federation.messages import Expected, Reply
from fedrlprune.fl import protocol
from fedrlprune.state import Masks


def check_reply(content: RecordDict, expected: Expected) -> Reply:
    """Decode a train reply and check it against what this client may send; PayloadError if not."""
    for name in (protocol.ARRAYS, protocol.METRICS):
        if name not in content:
            raise PayloadError(f"the reply has no {name!r} record")
    record = content.array_records[protocol.ARRAYS]
    state, masks = protocol.unpack(record, expected.reference)
    if expected.may_move:
        check_not_denser(masks, expected.sent_masks)
    else:
        check_monotone(masks, expected.sent_masks)
    metrics = _check_metrics(dict(content.metric_records[protocol.METRICS]), expected.examples)
    policy = None
    if protocol.POLICY in content:
        if expected.policy is None:
            raise PayloadError("the reply carries a policy, but none was sent")
        policy, _ = protocol.unpack(content.array_records[protocol.POLICY], expected.policy)
    upload = protocol.record_bytes(record)
    importance = None
    if protocol.IMPORTANCE in content:
        if expected.importance is None:
            raise PayloadError("the reply carries squared gradients, but none were asked for")
        imp_record = content.array_records[protocol.IMPORTANCE]
        importance, _ = protocol.unpack(imp_record, expected.importance)
        if any((v < 0).any() for v in importance.values()):
            raise PayloadError("squared gradients must not be negative")
        upload += protocol.record_bytes(imp_record)
    return Reply(state, masks, metrics, policy, upload, importance)


def check_monotone(masks: Masks, sent: Masks) -> None:
    """Pruned stays pruned: a reply may not keep what the mask it was sent had removed."""
    for name, mask in sent.items():
        got = masks.get(name)
        if got is None:
            if not mask.all():
                raise PayloadError(f"{name}: sent dense, but the client's mask had pruned it")
            continue
        revived = int(np.count_nonzero(got & ~mask))
        if revived:
            raise PayloadError(f"{name}: keeps {revived} weights its mask had pruned")


def check_not_denser(masks: Masks, sent: Masks) -> None:
    """Masks may move, but no parameter may keep more entries than the mask it was sent."""
    for name, mask in sent.items():
        got = masks.get(name)
        kept = int(got.sum()) if got is not None else int(mask.size)  # sent back dense
        if kept > int(mask.sum()):
            raise PayloadError(f"{name}: keeps {kept} weights, its mask allowed {int(mask.sum())}")


def _check_metrics(metrics: dict[str, Any], examples: int) -> dict[str, Any]:
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise PayloadError(f"metric {key!r} is not a finite number: {value!r}")
    for key in ("num-examples", "train-loss"):
        if key not in metrics:
            raise PayloadError(f"the reply's metrics lack {key!r}")
    if metrics["num-examples"] != examples:
        raise PayloadError(
            f"num-examples is {metrics['num-examples']}, but this client holds {examples} "
            "training samples"
        )
    return metrics
