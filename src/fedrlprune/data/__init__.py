"""Datasets as standardised arrays, and their split across federated clients."""

from fedrlprune.data.loaders import DATASETS, ArrayDataset, from_arrays, load_dataset
from fedrlprune.data.partition import (
    PARTITIONS,
    ClientSplit,
    partition_indices,
    partition_stats,
    split_client,
    subsample,
)

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "ArrayDataset",
    "ClientSplit",
    "from_arrays",
    "load_dataset",
    "partition_indices",
    "partition_stats",
    "split_client",
    "subsample",
]
