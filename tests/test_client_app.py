"""The ClientApp's reading of what the server sends beside the model: the core to train."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, RecordDict

from fedrlprune.errors import PayloadError
from fedrlprune.fl import protocol
from fedrlprune.fl.client_app import _core

REF = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}


def _content(**records: ArrayRecord) -> RecordDict:
    return RecordDict(records)


def test_the_core_is_taken_within_the_clients_own_mask() -> None:
    own = {"w": np.array([[1, 1, 0], [1, 1, 1]], bool)}
    core = {"w": np.array([[1, 0, 1], [0, 0, 1]], bool)}
    got = _core(_content(**{protocol.CORE: protocol.pack_masks(core)}), REF, own)
    assert got is not None
    np.testing.assert_array_equal(got["w"], [[1, 0, 0], [0, 0, 1]])


def test_no_core_when_none_was_sent_or_it_is_the_clients_own_model() -> None:
    own = {"w": np.array([[1, 0, 0], [0, 0, 1]], bool)}
    assert _core(_content(), REF, own) is None
    wider = {"w": np.array([[1, 1, 0], [0, 1, 1]], bool)}  # within `own`, the same model
    assert _core(_content(**{protocol.CORE: protocol.pack_masks(wider)}), REF, own) is None


def test_a_core_that_does_not_fit_the_model_is_refused() -> None:
    bad = ArrayRecord({"w@bitmask": Array(np.zeros(5, np.uint8))})  # 6 entries need 1 byte
    with pytest.raises(PayloadError, match="w: bitmask has 5 bytes"):
        _core(_content(**{protocol.CORE: bad}), REF, {})
