"""Sparse payloads round-trip exactly, cost bytes by what they keep, refuse what does not fit."""

import math
from collections.abc import Callable

import numpy as np
import pytest

from fedrlprune.errors import PayloadError
from fedrlprune.pruning import payload


def _mask(shape: tuple[int, ...], sparsity: float, seed: int = 0) -> np.ndarray:
    """A bool mask of ``shape`` keeping exactly ``round((1 - sparsity) * n)`` random entries."""
    n = int(np.prod(shape))
    flat = np.zeros(n, bool)
    flat[np.random.default_rng(seed).permutation(n)[: round((1 - sparsity) * n)]] = True
    return flat.reshape(shape)


def _state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> payload.State:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


def _kind(encoded: payload.Encoded, name: str) -> str:
    return "indices" if f"{name}@indices" in encoded else "bitmask"


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.99, 1.0])
def test_round_trip_is_exact(sparsity: float) -> None:
    state = _state({"conv.weight": (16, 8, 3, 3), "fc.weight": (10, 40), "fc.bias": (10,)})
    masks = {
        "conv.weight": _mask((16, 8, 3, 3), sparsity),
        "fc.weight": _mask((10, 40), sparsity, seed=1),
    }
    back, back_masks = payload.decode(payload.encode(state, masks), state)
    assert back.keys() == state.keys()
    assert back_masks.keys() == masks.keys()
    for name, mask in masks.items():
        np.testing.assert_array_equal(back_masks[name], mask)
        np.testing.assert_array_equal(back[name], np.where(mask, state[name], 0))
        assert back[name].dtype == state[name].dtype
    np.testing.assert_array_equal(back["fc.bias"], state["fc.bias"])


@pytest.mark.parametrize(
    ("sparsity", "kind"),
    # n = 10_000 -> uint16 indices: indices win once 2 * k < ceil(n / 8), i.e. density < 1/16.
    [(0.0, "bitmask"), (0.5, "bitmask"), (0.9, "bitmask"), (0.95, "indices"), (1.0, "indices")],
)
def test_encoding_switches_to_indices_as_sparsity_grows(sparsity: float, kind: str) -> None:
    state = _state({"w": (100, 100)})
    encoded = payload.encode(state, {"w": _mask((100, 100), sparsity)})
    assert _kind(encoded, "w") == kind


@pytest.mark.parametrize(
    ("n", "kept", "kind", "index_dtype"),
    [
        # n = 256: bitmask 32 bytes; uint8 indices k bytes; the tie at k = 32 goes to the bitmask.
        (256, 31, "indices", np.uint8),
        (256, 32, "bitmask", np.uint8),
        # n = 1000: bitmask 125 bytes; uint16 indices 2k bytes: 124 < 125 < 126.
        (1000, 62, "indices", np.uint16),
        (1000, 63, "bitmask", np.uint16),
        # n = 70_000: bitmask 8750 bytes; uint32 indices 4k bytes: 8748 < 8750 < 8752.
        (70_000, 2187, "indices", np.uint32),
        (70_000, 2188, "bitmask", np.uint32),
    ],
)
def test_crossover_by_hand(n: int, kept: int, kind: str, index_dtype: type) -> None:
    mask = np.zeros(n, bool)
    mask[:kept] = True
    encoded = payload.encode({"w": np.ones(n, np.float32)}, {"w": mask})
    assert _kind(encoded, "w") == kind
    assert encoded[f"w@{kind}"].nbytes == (
        kept * np.dtype(index_dtype).itemsize if kind == "indices" else math.ceil(n / 8)
    )
    assert payload.index_dtype(n) == index_dtype


def test_80_percent_sparse_float32_is_under_0_3_of_dense() -> None:
    shapes = {"conv.weight": (64, 32, 3, 3), "conv.bias": (64,)}
    state = _state(shapes)
    encoded = payload.encode(state, {"conv.weight": _mask(shapes["conv.weight"], 0.8)})
    # Bitmask wins (density 0.2 > 1/16): per weight 0.2 * 4 bytes of values + 1/8 byte of mask
    # = 0.925 of 4 bytes ~ 0.23; the 64 dense biases add ~0.003.
    ratio = payload.encoded_bytes(encoded) / payload.dense_bytes(state)
    assert _kind(encoded, "conv.weight") == "bitmask"
    assert ratio <= 0.3
    assert ratio == pytest.approx(0.925 / 4, abs=0.005)


# A reference with one parameter of each encoding; conv.weight has 27 entries, so its 4-byte
# bitmask holds 5 padding bits; fc.weight has 300, so its indices are uint16.
REF = _state({"conv.weight": (3, 3, 3), "fc.weight": (10, 30), "fc.bias": (10,)})
MASKS = {"conv.weight": _mask((3, 3, 3), 0.5), "fc.weight": _mask((10, 30), 0.97)}


def _good() -> payload.Encoded:
    encoded = payload.encode(REF, MASKS)
    assert _kind(encoded, "conv.weight") == "bitmask"
    assert encoded["fc.weight@indices"].dtype == np.uint16
    return {key: arr.copy() for key, arr in encoded.items()}


def _set(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def tamper(e: dict) -> None:
        e[key] = fn(e[key])

    return tamper


def _swap_first_two(a: np.ndarray) -> np.ndarray:
    a[[0, 1]] = a[[1, 0]]
    return a


def _with(a: np.ndarray, index: int, value: float) -> np.ndarray:
    a[index] = value
    return a


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (lambda e: e.pop("fc.bias"), ["missing", "fc.bias"]),
        (lambda e: e.update({"extra": np.zeros(1, np.float32)}), ["unknown", "extra"]),
        (lambda e: e.update({"conv.weight@mask": np.zeros(1)}), ["unknown", "conv.weight@mask"]),
        (lambda e: e.update({"fc.bias@": np.zeros(1)}), ["unknown", "fc.bias@"]),
        (
            lambda e: e.update({"conv.weight@indices": np.zeros(1, np.uint8)}),
            ["conv.weight", "exactly one encoding"],
        ),
        (lambda e: e.update({"fc.bias@values": e["fc.bias"]}), ["fc.bias", "exactly one"]),
        (lambda e: e.pop("conv.weight@bitmask"), ["conv.weight", "exactly one encoding"]),
        (_set("conv.weight@values", lambda a: a.astype(np.float64)), ["conv.weight", "dtype"]),
        (_set("conv.weight@values", lambda a: a[:, None]), ["conv.weight", "1-D"]),
        (_set("conv.weight@bitmask", lambda a: a.astype(np.int8)), ["conv.weight", "uint8"]),
        (_set("conv.weight@bitmask", lambda a: a[:-1]), ["conv.weight", "3 bytes", "need 4"]),
        (_set("conv.weight@bitmask", lambda a: a | np.uint8(1)), ["conv.weight", "padding"]),
        (_set("conv.weight@values", lambda a: a[:-1]), ["conv.weight", "keeps"]),
        (_set("fc.weight@values", lambda a: a[:-1]), ["fc.weight", "keeps"]),
        (_set("fc.weight@indices", _swap_first_two), ["fc.weight", "strictly increasing"]),
        (_set("fc.weight@indices", lambda a: _with(a, 1, a[0])), ["fc.weight", "strictly"]),
        (_set("fc.weight@indices", lambda a: _with(a, -1, 300)), ["fc.weight", "out of range"]),
        (_set("fc.weight@indices", lambda a: a.astype(np.int64)), ["fc.weight", "unsigned"]),
        (_set("conv.weight@values", lambda a: _with(a, 0, np.nan)), ["conv.weight", "NaN"]),
        (_set("fc.weight@values", lambda a: _with(a, 0, np.inf)), ["fc.weight", "infinite"]),
        (_set("fc.bias", lambda a: _with(a, 0, np.nan)), ["fc.bias", "NaN"]),
        (_set("fc.bias", lambda a: a.reshape(2, 5)), ["fc.bias", "shape"]),
        (_set("fc.bias", lambda a: a.astype(np.float16)), ["fc.bias", "dtype"]),
    ],
)
def test_payloads_that_do_not_fit_are_refused(
    tamper: Callable[[dict], object], words: list[str]
) -> None:
    encoded = _good()
    tamper(encoded)
    with pytest.raises(PayloadError) as err:
        payload.decode(encoded, REF)
    for word in words:
        assert word in str(err.value)


def test_density_above_max_density_is_refused() -> None:
    encoded = _good()
    # conv.weight keeps 14 of 27 (0.52); fc.weight keeps 9 of 300.
    payload.decode(encoded, REF, max_density=14 / 27)
    with pytest.raises(PayloadError, match=r"conv\.weight: density 0\.5185"):
        payload.decode(encoded, REF, max_density=0.5)


def test_local_misuse_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must not contain '@'"):
        payload.encode({"a@b": np.zeros(1, np.float32)}, {})
    with pytest.raises(ValueError, match="not in the state"):
        payload.encode(REF, {"nope": np.ones(1, bool)})
    with pytest.raises(ValueError, match=r"conv\.weight: mask must be bool"):
        payload.encode(REF, {"conv.weight": np.ones((3, 3), bool)})
    with pytest.raises(ValueError, match="max_density"):
        payload.decode(_good(), REF, max_density=1.5)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.99])
def test_masks_alone_round_trip_exactly(sparsity: float) -> None:
    masks = {"conv.weight": _mask((4, 3, 3, 3), sparsity), "fc.weight": _mask((10, 300), sparsity)}
    ref = _state({"conv.weight": (4, 3, 3, 3), "fc.weight": (10, 300), "fc.bias": (10,)})
    encoded = payload.encode_masks(masks)
    assert not any(key.endswith("@values") for key in encoded)  # no weights travel
    got = payload.decode_masks(encoded, ref)
    assert got.keys() == masks.keys()
    for name, mask in masks.items():
        np.testing.assert_array_equal(got[name], mask)


@pytest.mark.parametrize(
    ("key", "arr", "words"),
    [
        ("nope.weight@bitmask", np.zeros(1, np.uint8), ["nope.weight@bitmask", "does not name"]),
        ("fc.bias@values", np.zeros(10, np.float32), ["fc.bias@values", "does not name"]),
        ("fc.bias@bitmask", np.zeros(1, np.uint8), ["fc.bias", "1 bytes", "need 2"]),
        ("fc.bias@indices", np.array([3, 12], np.uint8), ["fc.bias", "out of range"]),
    ],
)
def test_masks_that_do_not_fit_are_refused(key: str, arr: np.ndarray, words: list[str]) -> None:
    ref = _state({"fc.bias": (10,)})
    with pytest.raises(PayloadError) as err:
        payload.decode_masks({key: arr}, ref)
    for word in words:
        assert word in str(err.value)
