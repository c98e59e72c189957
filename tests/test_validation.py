"""Hostile or broken client replies are refused whole, each with the reason named."""

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from fedrlprune.errors import PayloadError
from fedrlprune.fl import protocol
from fedrlprune.fl.validation import Expected, check_reply
from fedrlprune.rl.prune import new_agent

RNG = np.random.default_rng(0)
REF = {"w": RNG.normal(size=(8, 8)).astype(np.float32), "b": np.zeros(8, np.float32)}
SENT = {"w": np.abs(REF["w"]) > 0.5}  # the client's current mask
POLICY = new_agent(0).get_weights()
EXPECTED = Expected(REF, SENT, examples=120, policy=POLICY)


def good() -> RecordDict:
    masks = {"w": SENT["w"] & (np.abs(REF["w"]) > 0.8)}  # prunes further: allowed
    return RecordDict(
        {
            protocol.ARRAYS: protocol.pack(REF, masks),
            protocol.METRICS: MetricRecord({"num-examples": 120, "train-loss": 0.5}),
            protocol.POLICY: protocol.pack(POLICY, {}),
        }
    )


def test_a_good_reply_passes() -> None:
    reply = check_reply(good(), EXPECTED)
    assert reply.metrics["num-examples"] == 120
    assert reply.policy is not None and reply.upload_bytes > 0
    assert not (reply.masks["w"] & ~SENT["w"]).any()


def _replace(name: str, value: object) -> Callable[[RecordDict], None]:
    def edit(content: RecordDict) -> None:
        content[name] = value  # type: ignore[assignment]

    return edit


def _arrays(edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[RecordDict], None]:
    def apply(content: RecordDict) -> None:
        arrays = {k: v.numpy() for k, v in content[protocol.ARRAYS].items()}
        edit(arrays)
        content[protocol.ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})

    return apply


def _metrics(**values: object) -> Callable[[RecordDict], None]:
    return _replace(
        protocol.METRICS, MetricRecord({"num-examples": 120, "train-loss": 0.5, **values})
    )  # type: ignore[dict-item]


BAD: dict[str, tuple[Callable[[RecordDict], None], str]] = {
    "no arrays": (lambda c: c.pop(protocol.ARRAYS), "no 'arrays'"),
    "unknown array name": (_arrays(lambda a: a.update(extra=np.zeros(2, np.float32))), "extra"),
    "missing array": (_arrays(lambda a: a.pop("b")), "b"),
    "wrong shape": (_arrays(lambda a: a.update(b=np.zeros(9, np.float32))), "shape"),
    "wrong dtype": (_arrays(lambda a: a.update(b=np.zeros(8, np.float64))), "dtype"),
    "NaN weights": (_arrays(lambda a: a.update(b=np.full(8, np.nan, np.float32))), "b"),
    "mask and values disagree": (
        _arrays(lambda a: a.update({"w@values": a["w@values"][:-1]})),
        "values",
    ),
    "revives pruned weights": (
        _replace(protocol.ARRAYS, protocol.pack(REF, {"w": np.ones((8, 8), bool)})),
        "its mask had pruned",
    ),
    "sent dense after pruning": (_replace(protocol.ARRAYS, protocol.pack(REF, {})), "sent dense"),
    "inflated sample count": (_metrics(**{"num-examples": 1_000_000}), "holds 120"),
    "NaN loss": (_metrics(**{"train-loss": float("nan")}), "train-loss"),
    "no metrics": (lambda c: c.pop(protocol.METRICS), "no 'metrics'"),
    "policy of the wrong shape": (
        _replace(protocol.POLICY, protocol.pack({"q.0.weight": np.zeros((2, 2), np.float32)}, {})),
        "q.0.weight",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_replies_are_refused_with_the_reason(kind: str) -> None:
    edit, words = BAD[kind]
    content = good()
    edit(content)
    with pytest.raises(PayloadError) as err:
        check_reply(content, EXPECTED)
    assert words in str(err.value), kind


def test_a_policy_nobody_asked_for_is_refused() -> None:
    with pytest.raises(PayloadError, match="none was sent"):
        check_reply(good(), Expected(REF, SENT, examples=120, policy=None))
