"""Pruning masks: which weights are kept, chosen by magnitude, and kept at zero while training.

A mask set (``Masks``) maps state_dict parameter names (``"conv1.weight"``, ``"conv1.bias"``) to
bool arrays of the parameter's shape, True = kept. Only pruned layers' weights (and, in
structured mode, their biases) have entries; every other parameter is dense. Masks are numpy so
they travel and aggregate like the Flower parameters they describe.
"""

import math
from collections.abc import Mapping, Sequence
from numbers import Real

import numpy as np
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.pruning.metrics import classifier_name, prunable_layers
from fedrlprune.state import Masks

MODES = ("unstructured", "structured")


def pruning_targets(model: nn.Module, skip: Sequence[str] | None = None) -> list[str]:
    """Prunable layers to prune, in definition order; by default the classifier head stays dense.

    A bare string in ``skip`` is one layer name, not a list of characters.
    """
    layers = list(prunable_layers(model))
    if skip is None:
        skipped = {classifier_name(model)}
    else:
        skipped = {skip} if isinstance(skip, str) else set(skip)
    unknown = sorted(skipped - set(layers))
    if unknown:
        raise ConfigError(
            f"cannot skip {', '.join(map(repr, unknown))}: not a prunable layer of "
            f"{type(model).__name__}; name layers from: {', '.join(layers)}"
        )
    return [name for name in layers if name not in skipped]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown pruning mode {mode!r}; use one of: {', '.join(MODES)}")


def _layer_weight(state: Mapping[str, np.ndarray], layer: str) -> np.ndarray:
    """The conv/linear weight of ``layer`` in ``state``; anything else is a naming mistake."""
    weight = state.get(f"{layer}.weight")
    if weight is None or np.ndim(weight) < 2:
        layers = [k.removesuffix(".weight") for k, v in state.items() if _is_layer_weight(k, v)]
        raise ConfigError(
            f"{layer!r} is not a conv or linear layer of this model; "
            f"name layers from: {', '.join(layers)}"
        )
    return np.asarray(weight)


def _is_layer_weight(key: str, value: np.ndarray) -> bool:
    """Conv and linear weights are the ``.weight`` entries with 2+ dims (norm layers have 1)."""
    return key.endswith(".weight") and np.ndim(value) >= 2


def _layer_bias(state: Mapping[str, np.ndarray], layer: str, channels: int) -> np.ndarray | None:
    bias = state.get(f"{layer}.bias")
    if bias is not None and np.shape(bias) != (channels,):
        raise ConfigError(
            f"{layer}.bias has shape {np.shape(bias)}, expected ({channels},) to match "
            f"{layer}.weight; pass the state_dict of a single model"
        )
    return bias


def _existing(
    masks: Mapping[str, np.ndarray] | None, key: str, shape: tuple[int, ...]
) -> np.ndarray:
    """A copy of the mask already on ``key`` (all-kept when there is none), checked for shape."""
    if masks is None or key not in masks:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(masks[key])
    if mask.dtype != np.bool_ or mask.shape != shape:
        raise ConfigError(
            f"current mask {key!r} is {mask.dtype} {mask.shape}, expected bool {shape}; "
            "pass masks made for this model"
        )
    return mask.copy()


def _prune_count(rate: float, n: int) -> int:
    """floor(rate * n), never all ``n`` (a rate below 1 always keeps something)."""
    return min(math.floor(rate * n), max(n - 1, 0))


def _smallest(scores: np.ndarray, alive: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` smallest ``scores`` among ``alive``; ties go to lower index.

    ``count`` <= 0 (``current`` already prunes enough) selects nothing.
    """
    candidates = np.flatnonzero(alive)
    return candidates[np.argsort(scores[candidates], kind="stable")[: max(count, 0)]]


def magnitude_masks(
    state: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    mode: str = "unstructured",
    current: Masks | None = None,
) -> Masks:
    """Masks that prune each layer in ``rates`` to its target sparsity by weight magnitude.

    Unstructured pruning drops the smallest ``|w|``; structured pruning drops whole output
    channels (``weight[c, ...]`` and ``bias[c]``) with the smallest L1 norm of their (already
    masked) weight slice. Pruning is monotone: what ``current`` masks stays masked and counts
    toward the rate, so a rate below what is already pruned changes nothing. Entries of
    ``current`` for layers not in ``rates`` are carried over unchanged for the same reason.
    """
    _check_mode(mode)
    out: Masks = {key: np.array(mask, dtype=bool) for key, mask in (current or {}).items()}
    for layer, rate in rates.items():
        if not isinstance(rate, Real) or not 0 <= rate < 1:
            raise ConfigError(
                f"pruning rate of {layer!r} is {rate!r}; set it to a sparsity in [0, 1)"
            )
        weight = _layer_weight(state, layer)
        keep = _existing(current, f"{layer}.weight", weight.shape)
        if mode == "unstructured":
            magnitude = np.abs(weight).ravel()
            extra = _prune_count(rate, magnitude.size) - int(magnitude.size - keep.sum())
            keep.ravel()[_smallest(magnitude, keep.ravel(), extra)] = False
            out[f"{layer}.weight"] = keep
            continue
        channels = weight.shape[0]
        alive = keep.reshape(channels, -1).any(axis=1)
        norms = np.where(keep, np.abs(weight), 0).reshape(channels, -1).sum(axis=1)
        extra = _prune_count(rate, channels) - int(channels - alive.sum())
        alive[_smallest(norms, alive, extra)] = False
        out[f"{layer}.weight"] = keep & alive.reshape((channels,) + (1,) * (weight.ndim - 1))
        if _layer_bias(state, layer, channels) is not None:
            out[f"{layer}.bias"] = _existing(current, f"{layer}.bias", (channels,)) & alive
    return out


def _checked(masks: Masks, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse masks that name a parameter the model lacks or have the wrong shape or dtype."""
    for key, mask in masks.items():
        if key not in shapes:
            raise ConfigError(
                f"mask {key!r} names no parameter of this model; "
                f"mask parameters from: {', '.join(shapes)}"
            )
        if mask.dtype != np.bool_ or mask.shape != shapes[key]:
            raise ConfigError(
                f"mask {key!r} is {mask.dtype} {mask.shape}, expected bool {shapes[key]}; "
                "pass masks made for this model"
            )


def apply_masks(state: Mapping[str, np.ndarray], masks: Masks) -> dict[str, np.ndarray]:
    """A copy of ``state`` with masked entries set to (positive) zero; ``state`` is untouched."""
    _checked(masks, {key: np.shape(value) for key, value in state.items()})
    return {
        key: np.where(masks[key], value, 0).astype(np.asarray(value).dtype)
        if key in masks
        else np.array(value, copy=True)
        for key, value in state.items()
    }


def _pruned_tensors(model: nn.Module, masks: Masks) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, True-where-pruned tensor on its device) for each mask that prunes something."""
    params = dict(model.named_parameters())
    _checked(masks, {key: tuple(p.shape) for key, p in params.items()})
    return [
        (params[key], torch.from_numpy(~mask).to(params[key].device))
        for key, mask in masks.items()
        if not mask.all()
    ]


def mask_model(model: nn.Module, masks: Masks) -> None:
    """Zero the masked entries of ``model``'s parameters in place."""
    with torch.no_grad():
        for param, pruned in _pruned_tensors(model, masks):
            param.masked_fill_(pruned, 0.0)


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training.

    Call ``before_step`` between ``backward`` and ``optimizer.step`` and ``after_step`` right
    after it. Zeroing grads keeps momentum / Adam state from building up on pruned weights;
    zeroing weights after the step stops weight decay or momentum left from before pruning
    from reviving them. Masks are moved to the parameters' device here, so build the enforcer
    after moving the model (and ``mask_model`` it first: construction changes no weight).
    """

    def __init__(self, model: nn.Module, masks: Masks) -> None:
        self._pruned = _pruned_tensors(model, masks)

    def before_step(self) -> None:
        for param, pruned in self._pruned:
            if param.grad is not None:
                param.grad.masked_fill_(pruned, 0.0)

    def after_step(self) -> None:
        with torch.no_grad():
            for param, pruned in self._pruned:
                param.masked_fill_(pruned, 0.0)


def layer_sparsity(masks: Masks) -> dict[str, float]:
    """Fraction of each masked layer's weight that is pruned (biases are not counted)."""
    return {
        key.removesuffix(".weight"): 1.0 - float(mask.mean()) if mask.size else 0.0
        for key, mask in masks.items()
        if key.endswith(".weight")
    }


def overall_sparsity(masks: Masks, state: Mapping[str, np.ndarray]) -> float:
    """Pruned fraction of all masked weights together (size-weighted, biases not counted).

    ``state`` is the model the masks are for; masks that do not fit it are refused.
    """
    _checked(masks, {key: np.shape(value) for key, value in state.items()})
    weights = [mask for key, mask in masks.items() if key.endswith(".weight")]
    total = sum(mask.size for mask in weights)
    return sum(int(mask.size - mask.sum()) for mask in weights) / total if total else 0.0


def masks_from_state(
    state: Mapping[str, np.ndarray], layers: Sequence[str], mode: str = "unstructured"
) -> Masks:
    """Recover masks from the zeros of ``state``, e.g. a pruned global model received by a client.

    Structured: a channel is kept while any entry of its weight slice is non-zero, and its bias
    entry follows the channel.
    """
    _check_mode(mode)
    out: Masks = {}
    for layer in layers:
        weight = _layer_weight(state, layer)
        if mode == "unstructured":
            out[f"{layer}.weight"] = weight != 0
            continue
        channels = weight.shape[0]
        alive = (weight != 0).reshape(channels, -1).any(axis=1)
        out[f"{layer}.weight"] = np.broadcast_to(
            alive.reshape((channels,) + (1,) * (weight.ndim - 1)), weight.shape
        ).copy()
        if _layer_bias(state, layer, channels) is not None:
            out[f"{layer}.bias"] = alive
    return out


class MagnitudeRanking:
    """The order in which `magnitude_masks` prunes each layer, sorted once for many rate vectors.

    An RL episode tries a new rate per layer each time; re-sorting a million-weight layer per
    episode would cost more than evaluating the model. `masks(rates)` gives exactly what
    `magnitude_masks(state, rates, mode, current)` gives, by cutting the precomputed order.
    """

    def __init__(
        self,
        state: Mapping[str, np.ndarray],
        layers: Sequence[str],
        mode: str = "unstructured",
        current: Masks | None = None,
    ) -> None:
        _check_mode(mode)
        self.mode = mode
        self.current = {k: np.asarray(v, dtype=bool) for k, v in (current or {}).items()}
        self._order: dict[str, tuple[np.ndarray, int, np.ndarray, bool]] = {}
        for layer in layers:
            weight = _layer_weight(state, layer)
            keep = _existing(current, f"{layer}.weight", weight.shape)
            if mode == "unstructured":
                scores, alive = np.abs(weight).ravel(), keep.ravel()
            else:
                alive = keep.reshape(weight.shape[0], -1).any(axis=1)
                scores = np.where(keep, np.abs(weight), 0).reshape(weight.shape[0], -1).sum(1)
            live = np.flatnonzero(alive)
            order = np.concatenate(
                [np.flatnonzero(~alive), live[np.argsort(scores[live], kind="stable")]]
            )
            has_bias = _layer_bias(state, layer, weight.shape[0]) is not None
            self._order[layer] = (order, int((~alive).sum()), keep, has_bias)

    def masks(self, rates: Mapping[str, float]) -> Masks:
        out: Masks = {k: v.copy() for k, v in self.current.items()}
        for layer, rate in rates.items():
            order, dead, keep, has_bias = self._order[layer]
            pruned = np.ones(order.size, dtype=bool)
            pruned[order[max(_prune_count(rate, order.size), dead) :]] = False
            if self.mode == "unstructured":
                out[f"{layer}.weight"] = ~pruned.reshape(keep.shape)
                continue
            alive = ~pruned
            out[f"{layer}.weight"] = keep & alive.reshape((-1,) + (1,) * (keep.ndim - 1))
            if has_bias:
                bias = self.current.get(f"{layer}.bias", np.ones(alive.size, dtype=bool))
                out[f"{layer}.bias"] = bias & alive
        return out
