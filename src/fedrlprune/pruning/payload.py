"""Sparse tensors on the wire, so a pruned model costs bytes in proportion to what it keeps.

A masked parameter travels as its kept values (flattened, C order) plus where they sit, as
whichever of two forms takes fewer bytes for that parameter (a tie goes to the bitmask):

- a bitmask: ``np.packbits`` of the flattened mask (uint8, big-endian bit order, zero padding);
- the flat indices of kept entries, ascending, in the smallest unsigned dtype that holds ``n - 1``.

Parameters without a mask travel dense, as they are. The result is a flat dict of named arrays,
so it fits a Flower ``ArrayRecord`` unchanged:

- ``"<param>"``: a dense parameter;
- ``"<param>@bitmask"`` + ``"<param>@values"``, or ``"<param>@indices"`` + ``"<param>@values"``.

``@`` joins a parameter name to its part: names built from Python attributes never hold it, and
both ``encode`` and ``decode`` refuse a model whose names do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedrlprune.errors import PayloadError
from fedrlprune.state import Masks, State

Encoded = dict[str, np.ndarray]

SEP = "@"
BITMASK, INDICES, VALUES = "bitmask", "indices", "values"
DENSE = ""  # part label of a parameter sent as is (its key has no separator)
_LAYOUTS = (frozenset({DENSE}), frozenset({BITMASK, VALUES}), frozenset({INDICES, VALUES}))


def index_dtype(n: int) -> np.dtype:
    """Smallest unsigned dtype that holds every flat index of an ``n``-entry tensor."""
    return np.min_scalar_type(max(n - 1, 0))


def encode(state: State, masks: Masks) -> Encoded:
    """Encode ``state``, each masked parameter in its smaller sparse form, the rest dense.

    Only kept values travel: entries a mask prunes decode as zeros whatever they held here.
    """
    _check_names(state)
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise ValueError(f"masks for parameters not in the state: {unknown}")
    out: Encoded = {}
    for name, arr in state.items():
        mask = masks.get(name)
        if mask is None:
            out[name] = arr
            continue
        if mask.dtype != np.bool_ or mask.shape != arr.shape:
            raise ValueError(
                f"{name}: mask must be bool of shape {arr.shape}, got {mask.dtype} {mask.shape}"
            )
        flat = mask.ravel()
        out |= _where(name, flat)
        out[name + SEP + VALUES] = arr.ravel()[flat]
    return out


def _where(name: str, flat: np.ndarray) -> Encoded:
    """Where a flat mask keeps entries, as a bitmask or an index list, whichever is smaller."""
    idx_dtype = index_dtype(flat.size)
    if np.count_nonzero(flat) * idx_dtype.itemsize < math.ceil(flat.size / 8):
        return {name + SEP + INDICES: np.flatnonzero(flat).astype(idx_dtype)}
    return {name + SEP + BITMASK: np.packbits(flat)}


def encode_masks(masks: Masks) -> Encoded:
    """Masks alone (no values), each in the smaller of the two forms ``encode`` uses."""
    _check_names(masks)
    out: Encoded = {}
    for name, mask in masks.items():
        out |= _where(name, np.asarray(mask, dtype=bool).ravel())
    return out


def decode_masks(encoded: Mapping[str, np.ndarray], reference: State) -> Masks:
    """Masks sent by ``encode_masks``, each checked against the model's ``reference`` layout;
    PayloadError names the first one that does not fit."""
    masks: Masks = {}
    for key, arr in encoded.items():
        name, _, part = key.partition(SEP)
        if name not in reference or part not in (BITMASK, INDICES):
            raise PayloadError(
                f"mask {key!r} does not name a parameter of the model as "
                f"'<param>{SEP}{BITMASK}' or '<param>{SEP}{INDICES}'"
            )
        if name in masks:
            raise PayloadError(f"{name}: mask sent twice")
        ref = reference[name]
        read = _bitmask if part == BITMASK else _indices
        masks[name] = read(name, arr, ref.size).reshape(ref.shape)
    return masks


def decode(
    encoded: Mapping[str, np.ndarray], reference: State, *, max_density: float = 1.0
) -> tuple[State, Masks]:
    """Rebuild dense arrays (zeros where pruned) and the masks of the parameters sent sparse.

    Everything is checked against the model's own ``reference`` layout before anything is
    returned, so a broken or hostile peer gets a PayloadError naming the parameter instead of a
    crash inside PyTorch. ``max_density`` bounds the kept share a sparse parameter may claim;
    parameters sent dense are not bounded by it.
    """
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must lie in [0, 1], got {max_density}")
    _check_names(reference)
    state: State = {}
    masks: Masks = {}
    for name, parts in _group(encoded, reference).items():
        ref = reference[name]
        if DENSE in parts:
            state[name] = _dense(name, parts[DENSE], ref)
            continue
        if BITMASK in parts:
            mask = _bitmask(name, parts[BITMASK], ref.size)
        else:
            mask = _indices(name, parts[INDICES], ref.size)
        values = _values(name, parts[VALUES], ref)
        kept = int(np.count_nonzero(mask))
        if values.size != kept:
            raise PayloadError(
                f"{name}: the mask keeps {kept} entries but {values.size} values came"
            )
        density = kept / ref.size if ref.size else 0.0
        if density > max_density:
            raise PayloadError(f"{name}: density {density:.4f} is above the allowed {max_density}")
        dense = np.zeros(ref.size, ref.dtype)
        dense[mask] = values
        state[name] = dense.reshape(ref.shape)
        masks[name] = mask.reshape(ref.shape)
    return state, masks


def encoded_bytes(encoded: Mapping[str, np.ndarray]) -> int:
    """Payload bytes (array buffers only): the size of the model in this sparse format."""
    return sum(a.nbytes for a in encoded.values())


def dense_bytes(state: Mapping[str, np.ndarray]) -> int:
    """Bytes of the same arrays sent dense, the baseline ``encoded_bytes`` is compared with."""
    return sum(a.nbytes for a in state.values())


def _check_names(state: Mapping[str, np.ndarray]) -> None:
    """Refuse a model whose names hold the separator, so every key parses one way only."""
    bad = sorted(name for name in state if SEP in name)
    if bad:
        raise ValueError(f"parameter names must not contain {SEP!r}: {bad}")


def _group(encoded: Mapping[str, np.ndarray], reference: State) -> dict[str, dict[str, np.ndarray]]:
    """Sort keys by parameter (in reference order), checking each arrives in exactly one form."""
    found: dict[str, dict[str, np.ndarray]] = {}
    unknown = []
    for key, arr in encoded.items():
        name, sep, part = key.partition(SEP)
        if name in reference and (part in (BITMASK, INDICES, VALUES) if sep else True):
            found.setdefault(name, {})[part if sep else DENSE] = arr
        else:
            unknown.append(key)
    missing = [name for name in reference if name not in found]
    if missing or unknown:
        raise PayloadError(
            f"array names do not match the model: missing {missing}, unknown {sorted(unknown)}"
        )
    for name, parts in found.items():
        if frozenset(parts) not in _LAYOUTS:
            keys = sorted(name + SEP + p if p else name for p in parts)
            raise PayloadError(
                f"{name}: sent as {keys}; expected exactly one encoding: '{name}', or "
                f"'{name}{SEP}{VALUES}' with '{name}{SEP}{BITMASK}' or '{name}{SEP}{INDICES}'"
            )
    return {name: found[name] for name in reference}


def _check_finite(name: str, arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise PayloadError(f"{name}: {what} hold NaN or infinite values")


def _dense(name: str, arr: np.ndarray, ref: np.ndarray) -> np.ndarray:
    if arr.shape != ref.shape:
        raise PayloadError(f"{name}: shape {arr.shape}, the model has {ref.shape}")
    if arr.dtype != ref.dtype:
        raise PayloadError(f"{name}: dtype {arr.dtype}, the model has {ref.dtype}")
    _check_finite(name, arr, "dense values")
    return arr


def _values(name: str, arr: np.ndarray, ref: np.ndarray) -> np.ndarray:
    if arr.ndim != 1:
        raise PayloadError(f"{name}: values must be 1-D, got shape {arr.shape}")
    if arr.dtype != ref.dtype:
        raise PayloadError(f"{name}: values dtype {arr.dtype}, the model has {ref.dtype}")
    _check_finite(name, arr, "values")
    return arr


def _bitmask(name: str, bits: np.ndarray, n: int) -> np.ndarray:
    """The flat bool mask a bitmask stands for, once its size and padding are checked."""
    if bits.dtype != np.uint8 or bits.ndim != 1:
        raise PayloadError(f"{name}: bitmask must be 1-D uint8, got {bits.dtype} {bits.shape}")
    if bits.size != math.ceil(n / 8):
        raise PayloadError(
            f"{name}: bitmask has {bits.size} bytes, {n} entries need {math.ceil(n / 8)}"
        )
    unpacked = np.unpackbits(bits).astype(bool)
    if unpacked[n:].any():
        raise PayloadError(f"{name}: bitmask padding bits (past entry {n}) are set")
    return unpacked[:n]


def _indices(name: str, idx: np.ndarray, n: int) -> np.ndarray:
    """The flat bool mask an index list stands for, once order and range are checked."""
    if idx.dtype.kind != "u" or idx.ndim != 1:
        raise PayloadError(
            f"{name}: indices must be 1-D unsigned integers, got {idx.dtype} {idx.shape}"
        )
    if not (idx[1:] > idx[:-1]).all():
        raise PayloadError(f"{name}: indices are not strictly increasing (unsorted or repeated)")
    if idx.size and idx[-1] >= n:
        raise PayloadError(f"{name}: index {idx[-1]} is out of range for {n} entries")
    mask = np.zeros(n, bool)
    mask[idx] = True
    return mask
