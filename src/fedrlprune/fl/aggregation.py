"""Aggregation rules as pure functions over name -> array dicts; they know nothing of Flower."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

State = dict[str, np.ndarray]


def fedavg(states: Sequence[State], weights: Sequence[float]) -> State:
    """Weighted mean of client states (McMahan et al. 2017), weights usually sample counts.

    Sums run in float64 in the given order, so the same replies in the same order give the
    same bits; integer buffers (e.g. BatchNorm's step counter) are rounded back to integers.
    """
    if not states:
        raise ValueError("fedavg needs at least one state")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    w = w / w.sum()
    out: State = {}
    for name, first in states[0].items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for wk, state in zip(w, states, strict=True):
            acc += wk * state[name]
        out[name] = (np.rint(acc) if first.dtype.kind in "iu" else acc).astype(first.dtype)
    return out
