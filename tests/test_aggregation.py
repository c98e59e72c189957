"""FedAvg and sparse aggregation, checked against sums worked by hand."""

import numpy as np
import pytest

from fedrlprune.federation.aggregation import aggregate_sparse, fedavg


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


# --- sparse aggregation: every expected number below is worked by hand in the comment ---


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def keep(*bits: int) -> np.ndarray:
    return np.array(bits, dtype=bool)


def test_everyone_keeping_everything_is_fedavg() -> None:
    a = {"w": f32(1, 2), "b": f32(1), "n": np.array(2, dtype=np.int64)}
    b = {"w": f32(3, 6), "b": f32(5), "n": np.array(4, dtype=np.int64)}
    masks = [{"w": keep(1, 1)}, {"w": keep(1, 1)}]
    expected = fedavg([a, b], [1, 3])  # w (1 + 9)/4 = 2.5, (2 + 18)/4 = 5 ; b 4 ; n 4
    for rule in ("vote", "hermes", "naive"):
        out, mask = aggregate_sparse([a, b], masks, [1, 3], a, rule=rule)
        for name in a:
            np.testing.assert_array_equal(out[name], expected[name])
            assert out[name].dtype == a[name].dtype
        np.testing.assert_array_equal(mask["w"], [True, True])
        assert list(mask) == ["w"]  # unmasked parameters get no mask entry
    out, _ = aggregate_sparse([a, b], masks, [1, 3], a, rule="lotteryfl")
    np.testing.assert_allclose(out["w"], [2.0, 4.0])  # unweighted: (1 + 3)/2, (2 + 6)/2
    np.testing.assert_allclose(out["b"], [4.0])  # dense parameters stay sample-weighted


def test_an_entry_kept_by_one_client_takes_its_value() -> None:
    a, b = {"w": f32(5, 1)}, {"w": f32(0, 3)}
    masks = [{"w": keep(1, 1)}, {"w": keep(0, 1)}]
    prev = {"w": f32(7, 8)}
    cases = {
        "vote": [5.0, 2.5],  # 1*5/1 ; (1*1 + 3*3)/(1 + 3)
        "lotteryfl": [5.0, 2.0],  # 5/1 ; (1 + 3)/2
        "hermes": [7.0, 2.5],  # not kept by all -> previous ; as vote
        "naive": [1.25, 2.5],  # 1*5/(1 + 3) ; as vote
    }
    for rule, expected in cases.items():
        out, _ = aggregate_sparse([a, b], masks, [1, 3], prev, rule=rule)
        np.testing.assert_allclose(out["w"], expected, err_msg=rule)


@pytest.mark.parametrize("rule", ["vote", "lotteryfl", "hermes", "naive"])
def test_an_entry_kept_by_nobody_is_previous_or_zero(rule: str) -> None:
    a, b = {"w": f32(5, 1)}, {"w": f32(6, 3)}
    masks = [{"w": keep(0, 1)}, {"w": keep(0, 1)}]
    prev = {"w": f32(7, 8)}
    out, mask = aggregate_sparse([a, b], masks, [1, 1], prev, rule=rule)
    np.testing.assert_allclose(out["w"], [7.0, 2.0])  # previous ; (1 + 3)/2
    np.testing.assert_array_equal(mask["w"], [False, True])
    out, _ = aggregate_sparse([a, b], masks, [1, 1], prev, rule=rule, unkept="zero")
    np.testing.assert_allclose(out["w"], [0.0, 2.0])


def test_two_clients_at_different_sparsity_by_hand() -> None:
    # A keeps 4/4 with 1 sample, B keeps 2/4 (entries 0 and 2) with 3 samples.
    a, b = {"w": f32(1, 2, 3, 4)}, {"w": f32(5, 0, 7, 0)}
    masks = [{"w": keep(1, 1, 1, 1)}, {"w": keep(1, 0, 1, 0)}]
    prev = {"w": f32(10, 20, 30, 40)}
    cases = {
        # (1*1 + 3*5)/4 = 4 ; 2 (A alone) ; (1*3 + 3*7)/4 = 6 ; 4 (A alone)
        "vote": [4.0, 2.0, 6.0, 4.0],
        # (1 + 5)/2 = 3 ; 2 ; (3 + 7)/2 = 5 ; 4
        "lotteryfl": [3.0, 2.0, 5.0, 4.0],
        # kept by both: as vote ; kept by A only: previous 20 and 40
        "hermes": [4.0, 20.0, 6.0, 40.0],
        # divide by all samples (4): 16/4 = 4 ; 2/4 = 0.5 ; 24/4 = 6 ; 4/4 = 1
        "naive": [4.0, 0.5, 6.0, 1.0],
    }
    for rule, expected in cases.items():
        out, mask = aggregate_sparse([a, b], masks, [1, 3], prev, rule=rule)
        np.testing.assert_allclose(out["w"], expected, err_msg=rule)
        assert out["w"].dtype == np.float32
        # shares kept 2/2, 1/2, 2/2, 1/2 are all >= 0.5, whatever the rule
        np.testing.assert_array_equal(mask["w"], [True] * 4)


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.01, [True, True, True, False]),  # union: kept by anyone
        (0.5, [True, True, False, False]),  # shares 3/3, 2/3, 1/3, 0/3
        (1.0, [True, False, False, False]),  # intersection: kept by all
        (0.0, [True, True, True, False]),  # union: kept by any; never what nobody kept
    ],
)
def test_vote_mask_threshold(threshold: float, expected: list[bool]) -> None:
    states = [{"w": f32(1, 2, 3, 4)}] * 3
    masks = [{"w": keep(1, 1, 1, 0)}, {"w": keep(1, 1, 0, 0)}, {"w": keep(1, 0, 0, 0)}]
    # sample counts do not weigh the vote: the big client alone still counts one in three
    out, mask = aggregate_sparse(states, masks, [100, 1, 1], states[0], vote_threshold=threshold)
    np.testing.assert_array_equal(mask["w"], expected)
    np.testing.assert_allclose(out["w"], [1, 2, 3, 4])  # not zeroed outside the mask


def test_a_client_without_a_mask_entry_keeps_everything() -> None:
    a, b = {"w": f32(2, 9)}, {"w": f32(4, 6)}
    masks: list[dict[str, np.ndarray]] = [{"w": keep(1, 0)}, {}]
    out, mask = aggregate_sparse([a, b], masks, [1, 1], a, vote_threshold=1.0)
    np.testing.assert_allclose(out["w"], [3.0, 6.0])  # (2 + 4)/2 ; B alone (A's 9 is pruned)
    np.testing.assert_array_equal(mask["w"], [True, False])


def test_server_repruning_to_a_target_sparsity() -> None:
    a, b = {"w": f32(1, -8, 3, 0.5), "b": f32(1)}, {"w": f32(3, 0, 0, 0), "b": f32(3)}
    masks = [{"w": keep(1, 1, 1, 1)}, {"w": keep(1, 0, 0, 0)}]
    # vote values: (1 + 3)/2 = 2 ; -8 ; 3 ; 0.5 ; all kept at threshold 0.5
    cases = {
        0.0: [True, True, True, True],
        0.5: [False, True, True, False],  # keep 2 of 4: |-8| and |3|
        0.75: [False, True, False, False],  # keep 1 of 4: |-8|
        0.9: [False, False, False, False],  # keep floor(0.1 * 4) = 0
    }
    for target, expected in cases.items():
        out, mask = aggregate_sparse([a, b], masks, [1, 1], a, target_sparsity=target)
        np.testing.assert_array_equal(mask["w"], expected, err_msg=str(target))
        np.testing.assert_allclose(out["w"], [2, -8, 3, 0.5])  # values survive for regrowth
        np.testing.assert_allclose(out["b"], [2.0])
        assert "b" not in mask
    # already sparser than the target (intersection keeps only entry 0): left as it is
    _, mask = aggregate_sparse([a, b], masks, [1, 1], a, vote_threshold=1.0, target_sparsity=0.5)
    np.testing.assert_array_equal(mask["w"], [True, False, False, False])


def test_vote_stays_between_kept_values_and_naive_does_not() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)))
        states = [{"w": rng.normal(size=shape).astype(np.float32)} for _ in range(k)]
        masks = [{"w": rng.random(shape) < rng.random()} for _ in range(k)]
        weights = rng.integers(1, 50, size=k).astype(float).tolist()
        out, _ = aggregate_sparse(states, masks, weights, states[0])
        values = np.stack([s["w"] for s in states])
        kept = np.stack([m["w"] for m in masks])
        some = kept.any(axis=0)
        low = np.where(kept, values, np.inf).min(axis=0)
        high = np.where(kept, values, -np.inf).max(axis=0)
        assert (out["w"][some] >= low[some]).all() and (out["w"][some] <= high[some]).all()
    # naive: a value kept by one client of two (equal counts) is halved, below that only value
    a, b = {"w": f32(4)}, {"w": f32(0)}
    masks = [{"w": keep(1)}, {"w": keep(0)}]
    naive, _ = aggregate_sparse([a, b], masks, [1, 1], a, rule="naive")
    vote, _ = aggregate_sparse([a, b], masks, [1, 1], a, rule="vote")
    assert naive["w"][0] == 2.0 and vote["w"][0] == 4.0


def _bad(**changes: object) -> dict:
    args: dict = {
        "states": [{"w": f32(1, 2)}, {"w": f32(3, 4)}],
        "masks": [{"w": keep(1, 0)}, {"w": keep(1, 1)}],
        "weights": [1, 1],
        "previous": {"w": f32(0, 0)},
    }
    args.update(changes)
    return args


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (_bad(states=[], masks=[], weights=[]), "at least one"),
        (_bad(masks=[{}]), "one mask dict"),
        (_bad(weights=[1]), "one weight per client"),
        (_bad(weights=[1, 0]), "positive"),
        (_bad(masks=[{"w": keep(1, 0, 1)}, {}]), "shape"),
        (_bad(masks=[{"w": np.array([1, 0], dtype=np.uint8)}, {}]), "bool"),
        (_bad(masks=[{"v": keep(1, 0)}, {}]), "no parameter"),
        (_bad(previous={}), "previous"),
        (_bad(states=[{"w": f32(1, 2)}, {"w": f32(3, 4), "b": f32(1)}]), "differ"),
        (_bad(rule="median"), "vote, lotteryfl, hermes, naive"),
        (_bad(unkept="random"), "previous, zero"),
        (_bad(vote_threshold=-0.1), "vote_threshold"),
        (_bad(vote_threshold=1.5), "vote_threshold"),
        (_bad(target_sparsity=1.0), "target_sparsity"),
        (_bad(target_sparsity=-0.1), "target_sparsity"),
    ],
)
def test_sparse_bad_input_is_refused(args: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        aggregate_sparse(**args)
