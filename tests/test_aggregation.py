"""FedAvg over states, checked against sums worked by hand."""

import numpy as np
import pytest

from fedrlprune.fl.aggregation import fedavg


def test_weighted_mean_by_hand() -> None:
    a = {"w": np.array([1.0, 2.0], dtype=np.float32), "n": np.array(2, dtype=np.int64)}
    b = {"w": np.array([3.0, 6.0], dtype=np.float32), "n": np.array(4, dtype=np.int64)}
    out = fedavg([a, b], [1, 3])
    # (1*1 + 3*3)/4 = 2.5 ; (1*2 + 3*6)/4 = 5.0 ; counter (2 + 12)/4 = 3.5 -> rounds to 4
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    assert out["w"].dtype == np.float32
    assert out["n"] == 4 and out["n"].dtype == np.int64


def test_single_client_is_returned_unchanged() -> None:
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.testing.assert_array_equal(fedavg([a], [10])["w"], a["w"])


@pytest.mark.parametrize(
    ("states", "weights"),
    [
        ([], []),
        ([{"w": np.ones(1)}], [1, 2]),
        ([{"w": np.ones(1)}], [0]),
        ([{"w": np.ones(1)}], [-1]),
    ],
)
def test_bad_input_is_refused(states: list, weights: list) -> None:
    with pytest.raises(ValueError):
        fedavg(states, weights)
