"""Bring your own data: arrays or torch Datasets, turned into the ArrayDataset every run uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fedrlprune.data.loaders import ArrayDataset, from_arrays
from fedrlprune.errors import DataError

UserData = ArrayDataset | tuple[Any, ...] | Sequence[Any]


def user_dataset(data: UserData) -> ArrayDataset:
    """Accept an ArrayDataset, (x_train, y_train, x_test, y_test), or (train, test) Datasets."""
    if isinstance(data, ArrayDataset):
        return data
    items = tuple(data)
    if len(items) == 4:
        x_train, y_train, x_test, y_test = (np.asarray(a) for a in items)
        return from_arrays(x_train, y_train, x_test, y_test, name="user-arrays")
    if len(items) == 2 and all(isinstance(d, Dataset) for d in items):
        x_train, y_train = _stack(items[0], "train")
        x_test, y_test = _stack(items[1], "test")
        return from_arrays(x_train, y_train, x_test, y_test, name="user-dataset")
    raise DataError(
        "data must be (x_train, y_train, x_test, y_test) arrays, a (train, test) pair of "
        f"torch Datasets, or an ArrayDataset; got a {type(data).__name__} of {len(items)} items"
    )


def _stack(ds: Dataset[Any], which: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a map-style Dataset of (x, y) samples into two arrays, once, up front."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"the {which} Dataset has no len(); give a map-style Dataset") from None
    if n == 0:
        raise DataError(f"the {which} Dataset is empty")
    xs, ys = [], []
    for i in range(n):
        sample = ds[i]
        if not (isinstance(sample, tuple | list) and len(sample) == 2):
            raise DataError(f"the {which} Dataset must yield (x, y) pairs; item {i} does not")
        x, y = sample
        xs.append(x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x))
        ys.append(int(y))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
