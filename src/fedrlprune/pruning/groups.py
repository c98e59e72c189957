"""Channel groups: the parameter slices that must be pruned together for a channel to vanish.

A conv's output channel is not removable on its own when a BatchNorm follows it (the BN's shift
would turn the zeroed channel into a constant), when a residual addition ties it to other convs
(every writer of the sum must drop it), or when a depthwise conv ties its input to its output.
``channel_groups`` asks torch-pruning's DependencyGraph once per model which parameter slices
each channel couples, so masks can zero all of them and ``compact_model`` can remove them exactly.
The next layer's input columns are left unmasked: the compact model removes them, and masking
them would change nothing the (already zero) channel feeds them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from fedrlprune.errors import ConfigError
from fedrlprune.pruning.metrics import PRUNABLE_TYPES, prunable_layers
from fedrlprune.state import Masks


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Channels of one or more conv/linear layers that are pruned as one, with every coupled slice.

    ``layers`` are the conv/linear layers whose output channels are tied (definition order);
    ``members`` maps each coupled parameter (their weights and biases, BatchNorm weights and
    biases) to the index, along its first axis, of each of the group's ``size`` channels.
    ``readers`` maps the weight of each conv/linear layer that reads the channels to the channel
    each of its input columns (axis 1) reads, -1 where a column reads something else: the
    entries a compact model removes with a channel, beside its own slices.
    """

    layers: tuple[str, ...]
    size: int
    members: Mapping[str, np.ndarray]
    readers: Mapping[str, np.ndarray] = field(default_factory=dict)

    def rate(self, rates: Mapping[str, float]) -> float | None:
        """The rate of the first of ``layers`` that ``rates`` names (None: leave the group)."""
        return next((rates[layer] for layer in self.layers if layer in rates), None)

    def _weights(self) -> list[str]:
        return [f"{layer}.weight" for layer in self.layers]

    def alive(self, state: Mapping[str, np.ndarray], current: Masks | None) -> np.ndarray:
        """Channels no layer of the group has lost yet: a channel gone anywhere is gone here."""
        alive = np.ones(self.size, dtype=bool)
        for key in self._weights():
            keep = current_mask(current, key, np.shape(state[key]))
            alive &= keep.reshape(keep.shape[0], -1).any(axis=1)[self.members[key]]
        return alive

    def scores(self, state: Mapping[str, np.ndarray], current: Masks | None) -> np.ndarray:
        """L1 norm of each channel's kept weights, summed over the group's conv/linear layers.

        BatchNorm parameters are left out: with one layer and no BatchNorm this is exactly the
        per-layer structured rule, and their scale is not comparable to a weight slice's L1.
        """
        total = np.zeros(self.size)
        for key in self._weights():
            weight = np.asarray(state[key])
            kept = np.where(current_mask(current, key, weight.shape), np.abs(weight), 0)
            total += kept.reshape(weight.shape[0], -1).sum(axis=1)[self.members[key]]
        return total

    def masks(
        self, shapes: Mapping[str, tuple[int, ...]], alive: np.ndarray, current: Masks | None
    ) -> Masks:
        """A mask for every member: its ``current`` mask with the dropped channels' slices off.

        ``shapes`` maps parameter names to shapes (a state's ``np.shape`` of each entry).
        """
        out: Masks = {}
        for key, index in self.members.items():
            shape = tuple(shapes[key])
            channel_alive = np.ones(shape[0], dtype=bool)
            channel_alive[index] = alive
            keep = current_mask(current, key, shape)
            out[key] = keep & channel_alive.reshape((shape[0],) + (1,) * (len(shape) - 1))
        return out

    def reader_masks(self, shapes: Mapping[str, tuple[int, ...]], alive: np.ndarray) -> Masks:
        """A mask for every reader's weight with the input columns of dropped channels off:
        what a sub-model of the ``alive`` channels holds of the layers that read them."""
        out: Masks = {}
        for key, source in self.readers.items():
            shape = tuple(shapes[key])
            columns = np.ones(shape[1], dtype=bool)
            read = source >= 0
            columns[read] = alive[source[read]]
            layout = (1, shape[1]) + (1,) * (len(shape) - 2)
            out[key] = np.broadcast_to(columns.reshape(layout), shape).copy()
        return out


def current_mask(
    masks: Mapping[str, np.ndarray] | None, key: str, shape: tuple[int, ...]
) -> np.ndarray:
    """The mask already on ``key`` (all-kept without one), checked against the parameter."""
    if masks is None or key not in masks:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(masks[key])
    if mask.dtype != np.bool_ or mask.shape != shape:
        raise ConfigError(
            f"current mask {key!r} is {mask.dtype} {mask.shape}, expected bool {shape}; "
            "pass masks made for this model"
        )
    return mask


def channel_groups(
    model: nn.Module, input_shape: tuple[int, ...], targets: Sequence[str]
) -> list[ChannelGroup]:
    """The channel group of every target layer whose channels can be pruned, in target order.

    ``input_shape`` is per sample (no batch dim); the model is traced once in eval mode, so its
    weights and BatchNorm statistics are untouched. A group is left out when it ties a target to
    a conv/linear layer not in ``targets`` (a skipped layer keeps its channels, and so everything
    tied to it) or when no layer reads its channels (they are model outputs, like the
    classifier's), so those layers stay dense under structured pruning.
    """
    layers = prunable_layers(model)
    unknown = sorted(set(targets) - set(layers))
    if unknown:
        raise ConfigError(
            f"{', '.join(map(repr, unknown))} is not a conv or linear layer of "
            f"{type(model).__name__}; name layers from: {', '.join(layers)}"
        )
    dg = _dependency_graph(model, input_shape)
    names = {module: name for name, module in model.named_modules()}
    wanted = set(targets)
    seen: set[str] = set()
    groups = []
    for name in (layer for layer in layers if layer in wanted):
        if name in seen:
            continue
        group = _group_of(dg, layers[name], names)
        if group is None:
            continue
        seen.update(group.layers)
        if set(group.layers) <= wanted:
            groups.append(group)
    return groups


def _dependency_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    """Trace ``model`` on one zero sample; eval mode keeps BatchNorm running stats as they are."""
    param = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    except RuntimeError as err:
        raise ConfigError(
            f"cannot trace {type(model).__name__} on one sample of shape {tuple(input_shape)}: "
            f"{err}. Pass the per-sample input shape the model was built for"
        ) from err
    finally:
        model.train(was_training)


def _group_of(
    dg: tp.DependencyGraph, layer: nn.Module, names: Mapping[nn.Module, str]
) -> ChannelGroup | None:
    """The group rooted at ``layer``'s output channels; None when nothing reads them."""
    pruner = dg.get_pruner_of_module(layer)
    size = pruner.get_out_channels(layer)
    group = dg.get_pruning_group(layer, pruner.prune_out_channels, list(range(size)))
    read = False
    tied: list[str] = []
    members: dict[str, np.ndarray] = {}
    readers: dict[str, np.ndarray] = {}
    for item in group:
        module, handler = item.dep.target.module, item.dep.handler
        if not dg.is_out_channel_pruning_fn(handler):
            read |= dg.is_in_channel_pruning_fn(handler)  # a later layer's input columns
            _add_reader(readers, item, module, names)
            continue
        if module not in names or not isinstance(module, nn.Module):
            continue  # an operation (addition, concatenation), no parameters of its own
        if isinstance(module, PRUNABLE_TYPES) and names[module] not in tied:
            tied.append(names[module])
        channels = dg.get_pruner_of_module(module).get_out_channels(module)
        index = np.full(size, -1)
        index[np.asarray(item.root_idxs, dtype=int)] = np.asarray(item.idxs, dtype=int)
        for pname, param in module.named_parameters(recurse=False):
            if param.ndim >= 1 and param.shape[0] == channels:
                members[f"{names[module]}.{pname}"] = index
    if not read or any((index < 0).any() for index in members.values()):
        return None  # model outputs, or a split that ties only part of the channels
    order = {name: i for i, name in enumerate(names.values())}
    return ChannelGroup(tuple(sorted(tied, key=order.__getitem__)), size, members, readers)


def _add_reader(
    readers: dict[str, np.ndarray], item: Any, module: object, names: Mapping[nn.Module, str]
) -> None:
    """Record which input columns of a conv/linear layer read which of the group's channels
    (a depthwise conv's inputs are its own channels, already a member)."""
    if not isinstance(module, PRUNABLE_TYPES) or module not in names:
        return
    if getattr(module, "groups", 1) != 1:
        return
    key = f"{names[module]}.weight"
    source = readers.setdefault(key, np.full(module.weight.shape[1], -1))
    source[np.asarray(item.idxs, dtype=int)] = np.asarray(item.root_idxs, dtype=int)
