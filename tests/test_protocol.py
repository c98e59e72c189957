"""What crosses the wire is checked against the model before it is used."""

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.errors import PayloadError
from fedrlprune.fl import protocol

REF = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def test_dense_round_trip_is_exact_and_counts_bytes() -> None:
    state = {"w": np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32), "b": REF["b"]}
    record = protocol.pack(state, {})
    back, masks = protocol.unpack(record, REF)
    np.testing.assert_array_equal(back["w"], state["w"])
    assert masks == {}
    assert protocol.record_bytes(record) >= 4 * (6 + 3)


def test_masked_round_trip_carries_the_mask_and_fewer_bytes() -> None:
    big = {"w": np.random.default_rng(1).normal(size=(100, 100)).astype(np.float32)}
    mask = np.abs(big["w"]) > np.quantile(np.abs(big["w"]), 0.8)  # keep the top 20%
    record = protocol.pack(big, {"w": mask})
    back, masks = protocol.unpack(record, {"w": np.zeros((100, 100), np.float32)})
    np.testing.assert_array_equal(masks["w"], mask)
    np.testing.assert_array_equal(back["w"], np.where(mask, big["w"], 0))
    dense = protocol.record_bytes(protocol.pack(big, {}))
    assert protocol.record_bytes(record) <= 0.3 * dense


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ({"w": REF["w"]}, ["missing", "b"]),
        ({**REF, "extra": np.zeros(1, np.float32)}, ["extra"]),
        ({"w": np.zeros((3, 2), np.float32), "b": REF["b"]}, ["w", "shape"]),
        ({"w": np.zeros((2, 3), np.float64), "b": REF["b"]}, ["w", "dtype"]),
        ({"w": np.full((2, 3), np.nan, np.float32), "b": REF["b"]}, ["w"]),
    ],
)
def test_records_that_do_not_fit_are_refused(state: dict, words: list[str]) -> None:
    with pytest.raises(PayloadError) as err:
        protocol.unpack(protocol.pack(state, {}), REF)
    for word in words:
        assert word in str(err.value)


def test_config_travels_with_extras_that_cannot_shadow_keys() -> None:
    cfg = Config.from_dict({"dataset": "digits", "rounds": 3, "prune_rate": 0.5})
    back, extra = protocol.config_from_record(protocol.config_record(cfg, round=2, prune_rate=0.1))
    assert back == cfg and extra == {"round": 2, "prune_rate": 0.1}


def test_zero_dimensional_buffers_keep_their_shape() -> None:
    # BatchNorm's num_batches_tracked is 0-d: it used to travel as shape (1,), and every
    # reply of a BatchNorm model was refused
    state = {"bn.num_batches_tracked": np.array(7, dtype=np.int64), "w": np.ones((2, 3))}
    got, _ = protocol.unpack(protocol.pack(state, {}), state)
    assert got["bn.num_batches_tracked"].shape == ()
    assert int(got["bn.num_batches_tracked"]) == 7
