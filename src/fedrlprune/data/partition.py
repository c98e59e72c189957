"""Split a labelled dataset across simulated clients with flwr-datasets partitioners."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
)
from flwr_datasets.partitioner.partitioner import Partitioner

from fedrlprune.errors import DataError

# `natural`: each client keeps the samples the dataset says are its own (synthetic's split).
PARTITIONS = ("iid", "dirichlet", "pathological", "natural")
# The smallest Dirichlet client asked for, in turn, until one can be drawn (capped at n / clients).
MIN_SIZES = (10, 5, 2, 1)

log = logging.getLogger("fedrlprune")


@dataclass(frozen=True, eq=False)
class ClientSplit:
    """One client's int64 indices into the dataset's train arrays, split for local use."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def partition_indices(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    *,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    seed: int = 0,
    owners: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Disjoint, sorted int64 index arrays, one per client; same inputs give the same result.

    Pathological partitioning drops the samples of classes that no client was assigned
    (only possible with fewer clients than classes). `natural` gives client k the samples whose
    `owners` entry is k.
    """
    labels = _check_labels(labels)
    if scheme not in PARTITIONS:
        raise DataError(
            f"Unknown partition scheme {scheme!r}; use one of: {', '.join(PARTITIONS)}."
        )
    if num_clients < 1:
        raise DataError(f"num_clients is {num_clients}; use at least 1 client.")
    if len(labels) < num_clients:
        raise DataError(
            f"{len(labels)} samples cannot be split across {num_clients} clients; use at most "
            f"{len(labels)} clients or a larger data_fraction."
        )
    if scheme == "natural":
        return _non_empty(_natural(owners, len(labels), num_clients), scheme, num_clients)
    # Shuffle first: IidPartitioner shards contiguously, so without this it would split by order.
    order = np.random.default_rng(seed).permutation(len(labels))
    # Arrow format: flwr-datasets reads the label column whole, which is slow row by row.
    rows = np.arange(len(labels))
    dataset = Dataset.from_dict({"label": labels[order], "row": rows}).with_format("arrow")
    if scheme == "dirichlet":
        return _dirichlet(dataset, order, num_clients, alpha, seed)
    partitioner = _make_partitioner(labels, num_clients, scheme, classes_per_client, seed)
    try:
        parts = _draw(partitioner, dataset, num_clients, order)
    except ValueError as exc:
        raise DataError(
            f"Cannot build a {scheme!r} partition of {len(labels)} samples over {num_clients} "
            f"clients ({exc}); use fewer clients, fewer classes_per_client (pathological) or a "
            "larger data_fraction."
        ) from exc
    return _non_empty(parts, scheme, num_clients)


def _dirichlet(
    dataset: Dataset, order: np.ndarray, num_clients: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Dirichlet parts with the largest smallest client of `MIN_SIZES` that can be drawn.

    flwr-datasets redraws up to 10 times while a client is below `min_partition_size`, then
    gives up: 1000 clients over 30,000 samples at alpha 0.5 never reach 10 each, so smaller
    minimums are asked in turn, each drawn afresh from `seed`.
    """
    if not alpha > 0:
        raise DataError(f"alpha is {alpha}; the Dirichlet alpha must be > 0 (e.g. 0.5).")
    n = len(order)
    sizes = sorted({min(size, n // num_clients) for size in MIN_SIZES}, reverse=True)
    for size in sizes:
        partitioner = DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=size,
            self_balancing=True,
            seed=seed,
        )
        try:
            parts = _draw(partitioner, dataset, num_clients, order)
        except ValueError:
            continue
        if size < sizes[0]:
            log.info(
                "dirichlet partition: no draw gave each of %d clients %d samples; "
                "the smallest hold at least %d",
                num_clients, sizes[0], size,
            )  # fmt: skip
        return parts
    raise DataError(
        f"Cannot build a 'dirichlet' partition of {n} samples over {num_clients} clients at "
        f"alpha {alpha}: every draw left a client without samples; use fewer than "
        f"{num_clients} clients, an alpha above {alpha} or more than {n} samples (a larger "
        "data_fraction)."
    )


def _draw(
    partitioner: Partitioner, dataset: Dataset, num_clients: int, order: np.ndarray
) -> list[np.ndarray]:
    """`partitioner`'s parts of `dataset` (rows of the shuffled `order`) as sorted indices;
    ValueError when it cannot draw them."""
    partitioner.dataset = dataset
    with warnings.catch_warnings():
        # flwr-datasets warns on every Dirichlet redraw; the caller reports a failure instead.
        warnings.simplefilter("ignore", UserWarning)
        return _load_all(partitioner, num_clients, order)


def _load_all(partitioner: Partitioner, num_clients: int, order: np.ndarray) -> list[np.ndarray]:
    """Every client's sorted indices: partition 0 through the public API (which decides them
    all), the others from the partitioner's table when it has one (see `_table`)."""
    first = _rows(partitioner, 0)
    table = _table(partitioner, num_clients)
    rows = [first] + [
        np.asarray(table[i], dtype=np.int64) if table else _rows(partitioner, i)
        for i in range(1, num_clients)
    ]
    return [np.sort(order[r]) for r in rows]  # `order` is int64, so are the indices


def _table(partitioner: Partitioner, num_clients: int) -> dict[int, list[int]] | None:
    """The rows of every partition: IID's contiguous shards, or the table Dirichlet and
    pathological partitioners keep once decided; None for another partitioner or a
    flwr-datasets that keeps it elsewhere (then each partition is loaded). Read
    because a `load_partition` per client costs 1.5 ms of Arrow selection and fingerprinting
    on an idle machine: 1.5 s of a 1000-client run's start (0.02 s from the table;
    benchmarks/startup.py), in the server and again in every worker."""
    if isinstance(partitioner, IidPartitioner):  # contiguous shards, as `Dataset.shard` cuts
        n = partitioner.dataset.num_rows
        return dict(enumerate(a.tolist() for a in np.array_split(np.arange(n), num_clients)))
    table = getattr(partitioner, "_partition_id_to_indices", None)
    if isinstance(table, dict) and sorted(table) == list(range(num_clients)):
        return table
    return None


def _rows(partitioner: Partitioner, i: int) -> np.ndarray:
    """Partition `i`'s rows of the shuffled dataset, through the public API."""
    # `[:]` reads the column in one batch; datasets 4 iterates a bare column row by row.
    part = partitioner.load_partition(i).with_format("numpy")[:]
    return np.asarray(part["row"], dtype=np.int64)


def _non_empty(parts: list[np.ndarray], scheme: str, num_clients: int) -> list[np.ndarray]:
    """The parts, or an error when a client got no samples (it could not train)."""
    sizes = [len(part) for part in parts]
    fix = "" if scheme == "natural" else "a larger alpha or "
    if min(sizes) == 0:
        raise DataError(
            f"The {scheme!r} partition left {sizes.count(0)} of {num_clients} clients without "
            f"samples (sizes {sizes}); use fewer clients, {fix}a larger data_fraction."
        )
    return parts


def _natural(owners: np.ndarray | None, n: int, num_clients: int) -> list[np.ndarray]:
    """Client k's samples are those the dataset says are k's own."""
    if owners is None:
        raise DataError(
            "partition 'natural' needs a dataset that says which client holds each sample "
            "(dataset 'synthetic' does); use another partition for this dataset."
        )
    owners = np.asarray(owners)
    if owners.shape != (n,) or owners.min() < 0 or owners.max() >= num_clients:
        raise DataError(
            f"the dataset's owners ({owners.shape}, clients {owners.min()}..{owners.max()}) do "
            f"not fit {n} samples over {num_clients} clients; generate it for {num_clients} "
            "clients."
        )
    return [np.flatnonzero(owners == k).astype(np.int64) for k in range(num_clients)]


def split_client(
    indices: np.ndarray,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> ClientSplit:
    """Shuffle a client's indices and cut off val/test; rounding down keeps >= 1 train sample."""
    indices = np.asarray(indices, dtype=np.int64)
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must each be in "
            "[0, 1) and sum to less than 1 so that training data remains; lower them."
        )
    if indices.ndim != 1 or len(indices) == 0:
        raise DataError(
            f"A client got {indices.size} samples; every client needs at least one training "
            "sample, so use fewer clients or a larger data_fraction."
        )
    shuffled = np.random.default_rng(seed).permutation(indices)
    n_val = math.floor(val_fraction * len(indices))
    n_test = math.floor(test_fraction * len(indices))
    return ClientSplit(
        train=np.sort(shuffled[n_val + n_test :]),
        val=np.sort(shuffled[:n_val]),
        test=np.sort(shuffled[n_val : n_val + n_test]),
    )


def subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices keeping round(fraction * n), at least 1, of range(n): `data_fraction`."""
    if not 0 < fraction <= 1:
        raise DataError(f"data_fraction is {fraction}; it must be in (0, 1], e.g. 0.1 or 1.0.")
    if n < 1:
        raise DataError(
            f"Cannot subsample {n} samples: the dataset is empty; load a non-empty one."
        )
    keep = max(1, round(fraction * n))
    chosen = np.random.default_rng(seed).choice(n, size=keep, replace=False)
    return np.sort(chosen).astype(np.int64)


def partition_stats(
    labels: np.ndarray, splits: list[ClientSplit], num_classes: int
) -> list[dict[str, object]]:
    """Per-client sizes and label skew, so a run's heterogeneity can be reported and checked."""
    labels = np.asarray(labels)
    stats: list[dict[str, object]] = []
    for client, split in enumerate(splits):
        held = np.concatenate([split.train, split.val, split.test])
        histogram = np.bincount(labels[held], minlength=num_classes)
        stats.append(
            {
                "client": client,
                "train": len(split.train),
                "val": len(split.val),
                "test": len(split.test),
                "label_histogram": histogram.tolist(),
                "label_entropy": _normalised_entropy(histogram),
            }
        )
    return stats


def _normalised_entropy(histogram: np.ndarray) -> float:
    """Shannon entropy / log(K): 1 for a uniform label mix, 0 for a single class."""
    total = histogram.sum()
    if total == 0 or len(histogram) < 2:
        return 0.0
    p = histogram[histogram > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(len(histogram)))


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Partitioners need a 1-D array of integer class ids."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be a 1-D integer array, got shape {labels.shape} and dtype "
            f"{labels.dtype}; pass the dataset's y_train."
        )
    return labels.astype(np.int64, copy=False)


def _make_partitioner(
    labels: np.ndarray, num_clients: int, scheme: str, classes_per_client: int, seed: int
) -> Partitioner:
    """The flwr-datasets partitioner for `iid` or `pathological`, with arguments checked first."""
    if scheme == "iid":
        return IidPartitioner(num_partitions=num_clients)
    num_classes = len(np.unique(labels))
    if not 1 <= classes_per_client <= num_classes:
        raise DataError(
            f"classes_per_client is {classes_per_client} but the data has {num_classes} "
            f"classes; use a value between 1 and {num_classes}."
        )
    return PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        num_classes_per_partition=classes_per_client,
        class_assignment_mode="first-deterministic",
        seed=seed,
    )
