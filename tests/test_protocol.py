"""What crosses the wire is checked against the model before it is used."""

import numpy as np
import pytest

from fedrlprune.config import Config
from fedrlprune.fl import protocol

REF = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def test_round_trip_is_exact_and_counts_bytes() -> None:
    state = {"w": np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32), "b": REF["b"]}
    record = protocol.state_to_record(state)
    back = protocol.record_to_state(record, REF)
    np.testing.assert_array_equal(back["w"], state["w"])
    assert protocol.record_bytes(record) >= 4 * (6 + 3)


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ({"w": REF["w"]}, ["missing", "b"]),
        ({**REF, "extra": np.zeros(1, np.float32)}, ["extra"]),
        ({"w": np.zeros((3, 2), np.float32), "b": REF["b"]}, ["w", "shape"]),
        ({"w": np.zeros((2, 3), np.float64), "b": REF["b"]}, ["w", "dtype"]),
        ({"w": np.full((2, 3), np.nan, np.float32), "b": REF["b"]}, ["w", "NaN"]),
        ({"w": np.full((2, 3), np.inf, np.float32), "b": REF["b"]}, ["w", "infinite"]),
    ],
)
def test_records_that_do_not_fit_are_refused(state: dict, words: list[str]) -> None:
    with pytest.raises(protocol.PayloadError) as err:
        protocol.record_to_state(protocol.state_to_record(state), REF)
    for word in words:
        assert word in str(err.value)


def test_config_travels_with_extras() -> None:
    cfg = Config.from_dict({"dataset": "digits", "rounds": 3})
    back, extra = protocol.config_from_record(protocol.config_record(cfg, round=2))
    assert back == cfg and extra == {"round": 2}
