"""Aggregation rules as pure functions over name -> array dicts; they know nothing of Flower."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedrlprune.state import Masks, State

RULES = ("vote", "lotteryfl", "hermes", "naive", "residual")
UNKEPT = ("previous", "zero")


def _cast(acc: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the parameter's dtype; integer buffers are rounded, not truncated."""
    return (np.rint(acc) if dtype.kind in "iu" else acc).astype(dtype)


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
        out[name] = _cast(acc, first.dtype)
    return out


def aggregate_sparse(
    states: Sequence[State],
    masks: Sequence[Masks],
    weights: Sequence[float],
    previous: State,
    *,
    rule: str = "vote",
    unkept: str = "previous",
    vote_threshold: float = 0.5,
    target_sparsity: float | None = None,
) -> tuple[State, Masks]:
    """Merge differently sparse client models into a global state and a global mask.

    Per entry j of a masked parameter, with m_kj the client's mask (a client with no entry for
    a parameter keeps all of it; its values under a False mask count as zero whatever it sent)
    and n_k = weights[k] (sample counts; all ones for uniform):

    - ``vote`` (FedDST, Bibikar et al. AAAI 2022): sum_k n_k m_kj w_kj / sum_k n_k m_kj, so a
      value kept by few clients is not diluted by the zeros of those that pruned it.
    - ``lotteryfl`` (LotteryFL, Li et al. 2020): the same, unweighted (divide by the count).
    - ``hermes`` (Hermes, Li et al. MobiCom 2021): entries kept by every client are averaged
      (sample-weighted); entries kept by some take ``previous``. The paper lets each client keep
      its own values there; a server holds one model, so we keep the previous global value.
    - ``naive`` (ablation): sum_k n_k m_kj w_kj / sum_k n_k, FedAvg over zero-filled weights,
      which shrinks weights kept by few clients toward zero: what the other rules fix.
    - ``residual`` (FedMP's residual recovery, Jiang et al. ICDE 2022): a client's pruned
      entries are recovered from ``previous`` before averaging, sum_k n_k (m_kj w_kj +
      (1 - m_kj) previous_j) / sum_k n_k; the global model stays dense (its mask keeps all),
      since each client's sub-model is cut from it afresh every round.

    Where no client kept j, ``unkept`` decides for every rule: ``previous`` keeps previous[j],
    ``zero`` gives 0. The global mask keeps j when the share of clients keeping it (a count,
    not sample-weighted) is >= ``vote_threshold`` (0: kept by any client, the union);
    ``target_sparsity`` then drops the smallest |w| kept entries of each masked parameter until
    it is at least that sparse. Values outside the global mask are not zeroed: the mask says
    what is deployed, and the values survive so pruned weights can regrow later. Unmasked
    parameters (biases, BatchNorm, the head) take plain `fedavg`. Sums run in float64 in the
    given order and are cast back to each parameter's dtype, so the result is deterministic.
    Bad input raises ValueError.
    """
    _check_args(states, masks, weights, rule, unkept, vote_threshold, target_sparsity)
    masked = [name for name in states[0] if any(name in m for m in masks)]
    _check_masked(states, masks, previous, masked)
    dense = [name for name in states[0] if name not in masked]
    merged = fedavg([{name: s[name] for name in dense} for s in states], weights)
    global_masks: Masks = {}
    for name in masked:
        value, count = _merge(name, states, masks, weights, previous, rule, unkept)
        merged[name] = _cast(value, states[0][name].dtype)
        keep = (count > 0) & (count / len(states) >= vote_threshold)
        if rule == "residual":
            keep = np.ones_like(keep)
        if target_sparsity is not None:
            keep = _reprune(merged[name], keep, target_sparsity)
        global_masks[name] = keep
    return {name: merged[name] for name in states[0]}, global_masks


def _merge(
    name: str,
    states: Sequence[State],
    masks: Sequence[Masks],
    weights: Sequence[float],
    previous: State,
    rule: str,
    unkept: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One masked parameter under `rule`, in float64; also how many clients kept each entry."""
    shape = states[0][name].shape
    num = np.zeros(shape, dtype=np.float64)
    den = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.int64)
    for nk, state, mask in zip(weights, states, masks, strict=True):
        kept = mask.get(name, np.ones(shape, dtype=bool))
        coef = 1.0 if rule == "lotteryfl" else float(nk)
        fill = previous[name].astype(np.float64) if rule == "residual" else 0.0
        num += coef * np.where(kept, state[name].astype(np.float64), fill)
        den += coef * kept
        count += kept
    averaged = count == len(states) if rule == "hermes" else count > 0
    if rule == "residual":
        averaged = np.ones(shape, dtype=bool)
    if rule in ("naive", "residual"):
        den = np.full(shape, float(np.sum(np.asarray(weights, dtype=np.float64))))
    prev = previous[name].astype(np.float64)
    fallback = np.where(count > 0, prev, 0.0 if unkept == "zero" else prev)
    return np.where(averaged, num / np.where(averaged, den, 1.0), fallback), count


def _reprune(value: np.ndarray, keep: np.ndarray, target: float) -> np.ndarray:
    """Keep at most floor((1 - target) * size) entries of `keep`: those of largest |value|.

    Ties go by position (a stable sort), so the result is deterministic.
    """
    allowed = int(np.floor((1.0 - target) * keep.size + 1e-9))  # 1e-9: (1 - 0.9) * 10 < 1
    if keep.sum() <= allowed:
        return keep
    magnitude = np.where(keep, np.abs(value.astype(np.float64)), -np.inf).ravel()
    order = np.argsort(magnitude, kind="stable")
    out = np.zeros(keep.size, dtype=bool)
    out[order[keep.size - allowed :]] = True
    return out.reshape(keep.shape)


def _check_args(
    states: Sequence[State],
    masks: Sequence[Masks],
    weights: Sequence[float],
    rule: str,
    unkept: str,
    vote_threshold: float,
    target_sparsity: float | None,
) -> None:
    """Refuse arguments that would give a silently wrong merge."""
    if not states:
        raise ValueError("aggregate_sparse needs at least one client state")
    if not len(states) == len(masks) == len(weights):
        raise ValueError(
            f"{len(states)} states, {len(masks)} masks and {len(weights)} weights: "
            "give one mask dict and one weight per client"
        )
    if not all(np.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"weights must be positive sample counts, got {list(weights)}")
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; use one of {', '.join(RULES)}")
    if unkept not in UNKEPT:
        raise ValueError(f"unknown unkept policy {unkept!r}; use one of {', '.join(UNKEPT)}")
    if not 0.0 <= vote_threshold <= 1.0:
        raise ValueError(f"vote_threshold must be in [0, 1], got {vote_threshold}")
    if target_sparsity is not None and not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1) or None, got {target_sparsity}")
    names = set(states[0])
    for k, state in enumerate(states):
        if set(state) != names:
            odd = sorted(set(state) ^ names)
            raise ValueError(f"client {k} and client 0 differ in parameters {odd}")


def _check_masked(
    states: Sequence[State], masks: Sequence[Masks], previous: State, masked: list[str]
) -> None:
    """Every mask must be a bool array shaped like its parameter, and `previous` must cover it."""
    for k, mask in enumerate(masks):
        for name, m in mask.items():
            if name not in states[k]:
                raise ValueError(f"client {k} has a mask for {name!r}, which is no parameter")
            if not isinstance(m, np.ndarray) or m.dtype != np.bool_:
                raise ValueError(f"client {k}'s mask for {name!r} must be a bool array")
            if m.shape != states[k][name].shape:
                raise ValueError(
                    f"client {k}'s mask for {name!r} has shape {m.shape}, "
                    f"its array {states[k][name].shape}"
                )
    for name in masked:
        shape = states[0][name].shape
        if any(state[name].shape != shape for state in states):
            raise ValueError(f"clients send {name!r} in different shapes")
        if name not in previous or previous[name].shape != shape:
            raise ValueError(f"previous global state lacks {name!r} in shape {shape}")
