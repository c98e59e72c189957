"""Pruning masks: which weights are kept, chosen by magnitude, and kept at zero while training.

A mask set (``Masks``) maps state_dict parameter names (``"conv1.weight"``, ``"conv1.bias"``) to
bool arrays of the parameter's shape, True = kept. Only pruned layers' weights (and, in
structured mode, their biases) have entries; every other parameter is dense. Masks are numpy so
they travel and aggregate like the Flower parameters they describe.

Structured masks given the model's ``channel_groups`` (pruning/groups.py) also cover the
BatchNorm weights and biases and the residual- or depthwise-coupled layers of each channel, so a
dropped channel is exactly zero everywhere and ``compact_model`` can remove it from any CNN.
Without groups each layer is pruned on its own, which is exact only for chains without BatchNorm
(LeNet-5, the FedAvg CNN, MLPs).
"""

import math
from collections.abc import Mapping, Sequence
from numbers import Real

import numpy as np
import torch
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.pruning.groups import ChannelGroup, current_mask
from fedrlprune.pruning.metrics import classifier_name, prunable_layers
from fedrlprune.state import Masks

MODES = ("unstructured", "structured")


def pruning_targets(
    model: nn.Module,
    skip: Sequence[str] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> list[str]:
    """Prunable layers to prune, in definition order; by default the classifier head stays dense.

    A bare string in ``skip`` is one layer name, not a list of characters. ``input_shape`` (per
    sample) lets ``classifier_name`` find the head by running the model, not by its type.
    """
    layers = list(prunable_layers(model))
    if skip is None:
        skipped = {classifier_name(model, input_shape)}
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
    return current_mask(masks, key, shape).copy()


def _prune_count(rate: float, n: int) -> int:
    """floor(rate * n), never all ``n`` (a rate below 1 always keeps something)."""
    return min(math.floor(rate * n), max(n - 1, 0))


def _smallest(scores: np.ndarray, alive: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` smallest ``scores`` among ``alive``; ties go to lower index.

    ``count`` <= 0 (``current`` already prunes enough) selects nothing.
    """
    candidates = np.flatnonzero(alive)
    return candidates[np.argsort(scores[candidates], kind="stable")[: max(count, 0)]]


def _check_rate(layer: str, rate: object) -> None:
    if not isinstance(rate, Real) or not 0 <= rate < 1:
        raise ConfigError(f"pruning rate of {layer!r} is {rate!r}; set it to a sparsity in [0, 1)")


def magnitude_masks(
    state: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    mode: str = "unstructured",
    current: Masks | None = None,
    groups: Sequence[ChannelGroup] | None = None,
) -> Masks:
    """Masks that prune each layer in ``rates`` to its target sparsity by weight magnitude.

    Unstructured pruning drops the smallest ``|w|``; structured pruning drops whole output
    channels (``weight[c, ...]`` and ``bias[c]``) with the smallest L1 norm of their (already
    masked) weight slice. Pruning is monotone: what ``current`` masks stays masked and counts
    toward the rate, so a rate below what is already pruned changes nothing. Entries of
    ``current`` for layers not in ``rates`` are carried over unchanged for the same reason.

    Structured with ``groups`` (from ``channel_groups``): channels are ranked per group, by L1
    summed over the group's layers, and every member slice (BatchNorm included) is masked. A
    group takes the rate of its first layer (definition order) that ``rates`` names, since its
    layers must drop the same channels; layers of ``rates`` in no group stay dense (their
    channels are tied to a layer that must keep them, such as the classifier).
    """
    _check_mode(mode)
    out: Masks = {key: np.array(mask, dtype=bool) for key, mask in (current or {}).items()}
    for layer, rate in rates.items():
        _check_rate(layer, rate)
        weight = _layer_weight(state, layer)
        if mode == "structured" and groups is not None:
            continue  # checked here, pruned per group below
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
    if mode == "structured" and groups is not None:
        out |= _group_masks(state, rates, groups, current)
    return out


def _group_masks(
    state: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    groups: Sequence[ChannelGroup],
    current: Masks | None,
) -> Masks:
    """Structured masks cut per channel group; the per-layer rule when each group is one layer."""
    shapes = {key: np.shape(value) for key, value in state.items()}
    out: Masks = {}
    for group in groups:
        rate = group.rate(rates)
        if rate is None:
            continue
        alive = group.alive(state, current)
        extra = _prune_count(rate, group.size) - int(group.size - alive.sum())
        alive[_smallest(group.scores(state, current), alive, extra)] = False
        out |= group.masks(shapes, alive, current)
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
    """Fraction of each masked conv/linear weight that is pruned.

    Biases and norm-layer weights (1-D, masked with their channel by structured groups) are not
    counted: they follow the conv's channels and would report each BatchNorm as a layer.
    """
    return {
        key.removesuffix(".weight"): 1.0 - float(mask.mean()) if mask.size else 0.0
        for key, mask in masks.items()
        if _is_layer_weight(key, mask)
    }


def overall_sparsity(masks: Masks, state: Mapping[str, np.ndarray]) -> float:
    """Pruned fraction of all masked conv/linear weights together (size-weighted; biases and
    norm-layer weights not counted, as in ``layer_sparsity``).

    ``state`` is the model the masks are for; masks that do not fit it are refused.
    """
    _checked(masks, {key: np.shape(value) for key, value in state.items()})
    weights = [mask for key, mask in masks.items() if _is_layer_weight(key, mask)]
    total = sum(mask.size for mask in weights)
    return sum(int(mask.size - mask.sum()) for mask in weights) / total if total else 0.0


def masks_from_state(
    state: Mapping[str, np.ndarray],
    layers: Sequence[str],
    mode: str = "unstructured",
    groups: Sequence[ChannelGroup] | None = None,
) -> Masks:
    """Recover masks from the zeros of ``state``, e.g. a pruned global model received by a client.

    Structured: a channel is kept while any entry of its weight slice is non-zero, and its bias
    entry follows the channel. With ``groups``, a channel zero in any layer of its group is
    dropped from every member (BatchNorm included), so training cannot revive its shift.
    """
    _check_mode(mode)
    out: Masks = {}
    grouped: set[str] = set()
    if mode == "structured" and groups is not None:
        shapes = {key: np.shape(value) for key, value in state.items()}
        for group in groups:
            nonzero = {f"{layer}.weight": state[f"{layer}.weight"] != 0 for layer in group.layers}
            out |= group.masks(shapes, group.alive(state, nonzero), None)
            grouped.update(group.layers)
    for layer in layers:
        weight = _layer_weight(state, layer)
        if layer in grouped:
            continue
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


def _ranked(scores: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, int]:
    """(indices, dead): already-dead entries first, then live ones by score, ties to lower index."""
    live = np.flatnonzero(alive)
    order = np.concatenate([np.flatnonzero(~alive), live[np.argsort(scores[live], kind="stable")]])
    return order, int((~alive).sum())


def _cut(order: np.ndarray, dead: int, rate: float) -> np.ndarray:
    """True where ``order`` keeps an entry at ``rate`` (never fewer pruned than ``dead``)."""
    pruned = np.ones(order.size, dtype=bool)
    pruned[order[max(_prune_count(rate, order.size), dead) :]] = False
    return ~pruned


class MagnitudeRanking:
    """The order in which `magnitude_masks` prunes each layer, sorted once for many rate vectors.

    An RL episode tries a new rate per layer each time; re-sorting a million-weight layer per
    episode would cost more than evaluating the model. `masks(rates)` gives exactly what
    `magnitude_masks(state, rates, mode, current, groups)` gives, by cutting the precomputed
    order (per channel group when structured ``groups`` are given).
    """

    def __init__(
        self,
        state: Mapping[str, np.ndarray],
        layers: Sequence[str],
        mode: str = "unstructured",
        current: Masks | None = None,
        groups: Sequence[ChannelGroup] | None = None,
    ) -> None:
        _check_mode(mode)
        self.mode = mode
        self.current = {k: np.asarray(v, dtype=bool) for k, v in (current or {}).items()}
        self._order: dict[str, tuple[np.ndarray, int, np.ndarray, bool]] = {}
        self._groups: list[tuple[ChannelGroup, np.ndarray, int]] | None = None
        if mode == "structured" and groups is not None:
            for layer in layers:
                _layer_weight(state, layer)  # a naming mistake is refused as without groups
            self._shapes = {key: np.shape(value) for key, value in state.items()}
            self._groups = [
                (g, *_ranked(g.scores(state, current), g.alive(state, current))) for g in groups
            ]
            return
        for layer in layers:
            weight = _layer_weight(state, layer)
            keep = _existing(current, f"{layer}.weight", weight.shape)
            if mode == "unstructured":
                scores, alive = np.abs(weight).ravel(), keep.ravel()
            else:
                alive = keep.reshape(weight.shape[0], -1).any(axis=1)
                scores = np.where(keep, np.abs(weight), 0).reshape(weight.shape[0], -1).sum(1)
            order, dead = _ranked(scores, alive)
            has_bias = _layer_bias(state, layer, weight.shape[0]) is not None
            self._order[layer] = (order, dead, keep, has_bias)

    def masks(self, rates: Mapping[str, float]) -> Masks:
        out: Masks = {k: v.copy() for k, v in self.current.items()}
        if self._groups is not None:
            for group, order, dead in self._groups:
                rate = group.rate(rates)
                if rate is not None:
                    out |= group.masks(self._shapes, _cut(order, dead, rate), self.current)
            return out
        for layer, rate in rates.items():
            order, dead, keep, has_bias = self._order[layer]
            alive = _cut(order, dead, rate)
            if self.mode == "unstructured":
                out[f"{layer}.weight"] = alive.reshape(keep.shape)
                continue
            out[f"{layer}.weight"] = keep & alive.reshape((-1,) + (1,) * (keep.ndim - 1))
            if has_bias:
                bias = self.current.get(f"{layer}.bias", np.ones(alive.size, dtype=bool))
                out[f"{layer}.bias"] = bias & alive
        return out
