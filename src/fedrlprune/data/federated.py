"""The federated view of a dataset: which samples each client holds, derived from the config.

Server and clients derive it independently from the same config and seed, so nothing but the
config has to travel to say who holds what.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedrlprune.config import Config
from fedrlprune.data.loaders import DATASETS, USER_DATA, ArrayDataset, load_dataset
from fedrlprune.data.partition import (
    ClientSplit,
    partition_indices,
    partition_stats,
    split_client,
    subsample,
)
from fedrlprune.data.synthetic import synthetic_dataset
from fedrlprune.errors import DataError


@dataclass(frozen=True)
class FederatedData:
    dataset: ArrayDataset
    clients: tuple[ClientSplit, ...]  # per client: indices into dataset.x_train

    def client(self, cid: int) -> tuple[np.ndarray, ...]:
        """(x_train, y_train, x_val, y_val, x_test, y_test) of client `cid`."""
        split, ds = self.clients[cid], self.dataset
        return tuple(
            a
            for part in (split.train, split.val, split.test)
            for a in (ds.x_train[part], ds.y_train[part])
        )

    def client_stats(self, cid: int) -> dict[str, object]:
        """Sizes and label histogram of client `cid`, for the partition report."""
        ds = self.dataset
        stats = partition_stats(ds.y_train, [self.clients[cid]], ds.num_classes)[0]
        return {**stats, "client": cid}


def federate(cfg: Config, dataset: ArrayDataset) -> FederatedData:
    """Subsample (data_fraction), partition among clients and split each into train/val/test."""
    train_keep = subsample(len(dataset.y_train), cfg.data_fraction, cfg.seed)
    owners = None if dataset.owners is None else dataset.owners[train_keep]
    parts = partition_indices(
        dataset.y_train[train_keep],
        cfg.clients,
        cfg.partition,
        alpha=cfg.alpha,
        classes_per_client=cfg.classes_per_client,
        seed=cfg.seed,
        owners=owners,
    )
    splits = tuple(
        split_client(
            train_keep[p],
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            seed=cfg.seed + 7919 * (cid + 1),
        )
        for cid, p in enumerate(parts)
    )
    return FederatedData(dataset, splits)


@lru_cache(maxsize=4)
def federate_named(cfg: Config) -> FederatedData:
    """`federate` over a named dataset, cached per process: simulated clients share a worker."""
    return federate(cfg, named_dataset(cfg))


def named_dataset(cfg: Config) -> ArrayDataset:
    """The config's dataset: loaded from its files, or generated (`synthetic`) from its keys."""
    if cfg.dataset == USER_DATA:
        raise DataError(
            f"dataset {USER_DATA!r} is data given from Python, which no file holds; pass it "
            "again as data= (resume_experiment, export_results), or set dataset to one of: "
            f"{', '.join(DATASETS)}."
        )
    if cfg.dataset == "synthetic":
        return synthetic_dataset(cfg.clients, cfg.synthetic_alpha, cfg.synthetic_beta, cfg.seed)
    return load_dataset(cfg.dataset, cfg.data_path or None)


def global_test(cfg: Config, dataset: ArrayDataset | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The server's test set: the dataset's test split, with `data_fraction` applied (for
    `synthetic`, every client's held-out share, FedProx's test set)."""
    ds = dataset if dataset is not None else named_dataset(cfg)
    keep = subsample(len(ds.y_test), cfg.data_fraction, cfg.seed + 1)
    return ds.x_test[keep], ds.y_test[keep]
