"""A client's side of a round without Flower: the core it trains beside its own model."""

import numpy as np

from fedrlprune.federation.client import core_within


def test_the_core_is_taken_within_the_clients_own_mask() -> None:
    own = {"w": np.array([[1, 1, 0], [1, 1, 1]], bool)}
    core = {"w": np.array([[1, 0, 1], [0, 0, 1]], bool)}
    got = core_within(core, own)
    assert got is not None
    np.testing.assert_array_equal(got["w"], [[1, 0, 0], [0, 0, 1]])


def test_no_core_when_none_was_sent_or_it_is_the_clients_own_model() -> None:
    own = {"w": np.array([[1, 0, 0], [0, 0, 1]], bool)}
    assert core_within({}, own) is None
    wider = {"w": np.array([[1, 1, 0], [0, 1, 1]], bool)}  # within `own`, the same model
    assert core_within(wider, own) is None
