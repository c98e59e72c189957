"""Client partitioning through flwr-datasets: coverage, reproducibility, skew and errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedrlprune.data import (
    PARTITIONS,
    ClientSplit,
    partition,
    partition_indices,
    partition_stats,
    split_client,
    subsample,
)
from fedrlprune.errors import DataError

LABELS = np.random.default_rng(0).integers(0, 10, size=2000)
OWNERS = np.random.default_rng(1).integers(0, 5, size=2000)  # for `natural`; others ignore it


def mean_entropy(parts: list[np.ndarray]) -> float:
    splits = [ClientSplit(train=p, val=p[:0], test=p[:0]) for p in parts]
    stats = partition_stats(LABELS, splits, num_classes=10)
    return float(np.mean([s["label_entropy"] for s in stats]))


def assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert joined.dtype == np.int64
    assert len(joined) == len(np.unique(joined)) == n
    assert joined.min() == 0 and joined.max() == n - 1


def test_iid_even_disjoint_covering() -> None:
    parts = partition_indices(LABELS, 7, "iid", seed=1)
    assert len(parts) == 7
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert_disjoint_cover(parts, len(LABELS))
    assert mean_entropy(parts) > 0.95  # every client sees a near-uniform label mix


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_same_seed_same_partition(scheme: str) -> None:
    first = partition_indices(LABELS, 5, scheme, seed=3, owners=OWNERS)
    second = partition_indices(LABELS, 5, scheme, seed=3, owners=OWNERS)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_different_seed_different_partition(scheme: str) -> None:
    first = partition_indices(LABELS, 5, scheme, seed=0)
    second = partition_indices(LABELS, 5, scheme, seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_dirichlet_disjoint_covering_and_skewed() -> None:
    parts = partition_indices(LABELS, 10, "dirichlet", alpha=0.1, seed=0)
    assert_disjoint_cover(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 10
    iid = partition_indices(LABELS, 10, "iid", seed=0)
    assert mean_entropy(parts) < mean_entropy(iid) - 0.2


@pytest.mark.parametrize("classes_per_client", [1, 2, 3])
def test_pathological_limits_classes(classes_per_client: int) -> None:
    parts = partition_indices(
        LABELS, 12, "pathological", classes_per_client=classes_per_client, seed=0
    )
    assert_disjoint_cover(parts, len(LABELS))  # 12 clients >= 10 classes: every class is used
    for part in parts:
        assert 1 <= len(np.unique(LABELS[part])) <= classes_per_client


@pytest.mark.parametrize("classes_per_client", [0, 11])
def test_pathological_rejects_bad_classes_per_client(classes_per_client: int) -> None:
    with pytest.raises(DataError, match="between 1 and 10"):
        partition_indices(LABELS, 4, "pathological", classes_per_client=classes_per_client)


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_more_clients_than_samples(scheme: str) -> None:
    with pytest.raises(DataError, match="5 samples cannot be split across 6 clients"):
        partition_indices(np.arange(5) % 2, 6, scheme)


def test_natural_gives_each_client_exactly_its_own_samples() -> None:
    parts = partition_indices(LABELS, 5, "natural", owners=OWNERS)
    assert_disjoint_cover(parts, len(LABELS))
    for k, part in enumerate(parts):
        np.testing.assert_array_equal(part, np.flatnonzero(k == OWNERS))


def test_natural_without_owners_or_with_a_client_left_out_is_refused() -> None:
    with pytest.raises(DataError, match="which client holds each sample"):
        partition_indices(LABELS, 5, "natural")
    with pytest.raises(DataError, match="generate it for 4 clients"):
        partition_indices(LABELS, 4, "natural", owners=OWNERS)
    with pytest.raises(DataError, match="left 1 of 6 clients without samples"):
        partition_indices(LABELS, 6, "natural", owners=OWNERS)


def test_dirichlet_failure_becomes_data_error() -> None:
    labels = np.zeros(40, dtype=np.int64)  # one class: tiny alpha leaves clients with nothing
    with pytest.raises(
        DataError, match=r"fewer than 10 clients, an alpha above 0\.01 or more than 40"
    ):
        partition_indices(labels, 10, "dirichlet", alpha=0.01)


def test_dirichlet_over_many_small_clients_asks_a_smaller_minimum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    labels = np.random.default_rng(0).permutation(np.arange(30_000) % 10)  # Fashion-MNIST's half
    with caplog.at_level(logging.INFO, logger="fedrlprune"):
        parts = partition_indices(labels, 1000, "dirichlet", alpha=0.5, seed=0)
    assert len(parts) == 1000 and min(len(p) for p in parts) >= 5
    assert_disjoint_cover(parts, 30_000)
    assert "no draw gave each of 1000 clients 10 samples; the smallest hold at least 5" in (
        caplog.text
    )
    again = partition_indices(labels, 1000, "dirichlet", alpha=0.5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_pathological_too_many_clients_per_class_becomes_data_error() -> None:
    labels = np.array([0] * 3 + [1] * 30)  # class 0 cannot be shared by 5 clients
    with pytest.raises(DataError, match="fewer clients"):
        partition_indices(labels, 10, "pathological", classes_per_client=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "shards"}, "iid, dirichlet, pathological"),
        ({"scheme": "iid", "num_clients": 0}, "at least 1 client"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args = {"num_clients": 4, **kwargs}
    with pytest.raises(DataError, match=match):
        partition_indices(LABELS, **args)  # type: ignore[arg-type]


def test_float_labels_rejected() -> None:
    with pytest.raises(DataError, match="1-D integer"):
        partition_indices(LABELS.astype(float), 4, "iid")


def test_split_client_fractions_and_disjointness() -> None:
    indices = np.arange(100, 300)
    split = split_client(indices, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert (len(split.train), len(split.val), len(split.test)) == (140, 20, 40)
    joined = np.concatenate([split.train, split.val, split.test])
    assert sorted(joined.tolist()) == indices.tolist()
    assert all(part.dtype == np.int64 for part in (split.train, split.val, split.test))
    again = split_client(indices, val_fraction=0.1, test_fraction=0.2, seed=4)
    np.testing.assert_array_equal(split.val, again.val)
    other = split_client(indices, val_fraction=0.1, test_fraction=0.2, seed=5)
    assert not np.array_equal(split.val, other.val)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_split_client_tiny_clients_keep_train(n: int) -> None:
    split = split_client(np.arange(n), val_fraction=0.1, test_fraction=0.1)
    assert len(split.train) >= 1
    assert len(split.train) + len(split.val) + len(split.test) == n


def test_split_client_errors() -> None:
    with pytest.raises(DataError, match="at least one training sample"):
        split_client(np.array([], dtype=np.int64))
    with pytest.raises(DataError, match="sum to less than 1"):
        split_client(np.arange(10), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DataError, match="sum to less than 1"):
        split_client(np.arange(10), val_fraction=-0.1)


def test_subsample() -> None:
    kept = subsample(1000, 0.25, seed=0)
    assert len(kept) == 250
    assert kept.dtype == np.int64
    assert np.all(np.diff(kept) > 0)
    assert kept.min() >= 0 and kept.max() < 1000
    np.testing.assert_array_equal(kept, subsample(1000, 0.25, seed=0))
    assert not np.array_equal(kept, subsample(1000, 0.25, seed=1))
    assert len(subsample(10, 0.001, seed=0)) == 1
    np.testing.assert_array_equal(subsample(7, 1.0, seed=3), np.arange(7))


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.0), (10, 1.5), (0, 0.5)])
def test_subsample_errors(n: int, fraction: float) -> None:
    with pytest.raises(DataError):
        subsample(n, fraction, seed=0)


def test_partition_stats_sums() -> None:
    parts = partition_indices(LABELS, 4, "dirichlet", alpha=0.5, seed=2)
    splits = [split_client(p, seed=i) for i, p in enumerate(parts)]
    stats = partition_stats(LABELS, splits, num_classes=10)
    assert [s["client"] for s in stats] == [0, 1, 2, 3]
    total = np.zeros(10, dtype=np.int64)
    for stat, part in zip(stats, parts, strict=True):
        histogram = stat["label_histogram"]
        assert isinstance(histogram, list) and len(histogram) == 10
        assert sum(histogram) == stat["train"] + stat["val"] + stat["test"] == len(part)
        assert 0.0 <= stat["label_entropy"] <= 1.0  # type: ignore[operator]
        total += histogram
    np.testing.assert_array_equal(total, np.bincount(LABELS, minlength=10))


def test_partition_stats_entropy_extremes() -> None:
    labels = np.array([0, 0, 0, 0, 1, 2, 3, 4])
    single = ClientSplit(np.array([0, 1]), np.array([2]), np.array([3]))
    uniform = ClientSplit(np.array([3, 4, 5]), np.array([6]), np.array([7]))
    stats = partition_stats(labels, [single, uniform], num_classes=5)
    assert stats[0]["label_entropy"] == 0.0
    assert stats[0]["label_histogram"] == [4, 0, 0, 0, 0]
    assert stats[1]["label_entropy"] == pytest.approx(1.0)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "pathological"])
def test_reading_the_partitioners_table_gives_what_loading_each_partition_gives(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = partition_indices(LABELS, 20, scheme, seed=4)
    monkeypatch.setattr(partition, "_table", lambda *_: None)  # flwr-datasets' own API only
    slow = partition_indices(LABELS, 20, scheme, seed=4)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
