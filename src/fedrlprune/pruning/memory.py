"""Bytes a model needs on the device: its weights plus the activations of one forward pass.

Parameter counts say little about whether a model fits a device: a compact CNN's early
activations can outweigh its weights, and an unstructured model only saves memory in a sparse
storage format. ``memory_bytes`` measures the compact (or dense) model as it runs;
``sparse_bytes`` sizes an unstructured model stored the way ``payload.encode`` sends it.
``Footprint`` is what a device budget checks of a deployed model, in either mode.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fedrlprune.errors import ConfigError
from fedrlprune.pruning.metrics import one_pass, total_flops
from fedrlprune.pruning.payload import index_dtype
from fedrlprune.state import Masks


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (BatchNorm running stats are needed to infer too)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class _Liveness(TorchDispatchMode):
    """Records, per aten op, the storages it reads and the storages it creates."""

    def __init__(self, ignore: set[int]) -> None:
        super().__init__()
        self.ignore = ignore  # weight and buffer storages: counted as weights, not activations
        self.born: dict[int, int] = {}  # storage -> op index that created it (-1: the input)
        self.last: dict[int, int] = {}  # storage -> last op index that read it
        self.size: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []  # held so no storage is freed and its address reused
        self.ops = 0

    def track(self, tensor: torch.Tensor, op: int) -> None:
        """Note ``tensor``'s storage as created at ``op`` unless it is a weight or known."""
        key = tensor.untyped_storage().data_ptr()
        if key in self.ignore or key in self.born:
            return
        self.born[key] = op
        self.last[key] = op
        self.size[key] = tensor.untyped_storage().nbytes()
        self.keep.append(tensor)

    def __torch_dispatch__(
        self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        op = self.ops
        self.ops += 1
        for arg in tree_leaves((args, kwargs or {})):
            if isinstance(arg, torch.Tensor):
                key = arg.untyped_storage().data_ptr()
                if key in self.last:
                    self.last[key] = op
        out = func(*args, **(kwargs or {}))
        for res in tree_leaves(out):
            if isinstance(res, torch.Tensor):
                self.track(res, op)
        return out

    def peak(self) -> int:
        """Largest total of storages alive at once, an op's inputs and outputs both counted."""
        change = np.zeros(self.ops + 2, dtype=np.int64)
        for key, born in self.born.items():
            change[born + 1] += self.size[key]
            change[self.last[key] + 2] -= self.size[key]
        return int(np.cumsum(change).max()) if self.born else 0


def activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Peak activation bytes of one eval-mode forward pass of one sample (see ``memory_bytes``)."""
    param = next(model.parameters(), None)
    x = torch.zeros(
        1,
        *input_shape,
        device=param.device if param is not None else None,
        dtype=param.dtype if param is not None else None,
    )
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    mode = _Liveness(weights)
    mode.track(x, -1)
    one_pass(model, x, mode)
    return mode.peak()


def memory_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Weight bytes (parameters and buffers) plus peak activation bytes at batch 1.

    "Peak" is the largest total size of activation tensors alive at once during one eager,
    eval-mode forward pass of one sample of ``input_shape``: a tensor lives from the operator
    that makes it (the input from the start) until the last operator that reads it, so an
    operator's inputs and output count together, as does a residual branch's saved input.
    Views share their base's storage and count once; in-place operators add nothing. Run it on
    the compact model (``compact_model``) for the memory of the pruned model on a device; a
    runtime that fuses operators (ONNX Runtime) may need less, and allocator overhead is not
    counted.
    """
    return weight_bytes(model) + activation_bytes(model, input_shape)


def sparse_bytes(state: Mapping[str, np.ndarray], masks: Masks) -> int:
    """Bytes of ``state`` stored as ``payload.encode`` would send it with ``masks``.

    Each masked parameter costs its kept values plus the smaller of a bitmask (one bit per entry,
    rounded up to bytes) and a list of kept flat indices (the smallest unsigned type that holds
    them); a tie goes to the bitmask, as in ``payload``. Unmasked entries are stored dense.
    """
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise ConfigError(f"masks name parameters not in the state: {', '.join(unknown)}")
    total = 0
    for name, value in state.items():
        arr = np.asarray(value)
        if name not in masks:
            total += arr.nbytes
            continue
        total += masked_bytes(int(np.count_nonzero(masks[name])), arr.size, arr.itemsize)
    return total


def masked_bytes(kept: int, size: int, itemsize: int) -> int:
    """Bytes of one masked tensor of `size` entries that keeps `kept`, as ``sparse_bytes``
    counts it: the kept values plus the smaller of a bitmask and a list of kept indices."""
    return kept * itemsize + min(math.ceil(size / 8), kept * index_dtype(size).itemsize)


def kept_weight_limit(
    byte_limit: float, dense_bytes: int, sizes: Sequence[int], itemsize: int
) -> float:
    """The most entries masked tensors of `sizes` may keep together, however they share them
    out, for their sparse storage plus `dense_bytes` to stay within `byte_limit` (negative
    when even nothing kept does not fit).

    Summed over tensors, ``masked_bytes`` is at most kept x (itemsize + the widest index) and
    at most kept x itemsize + every bitmask, so the limit is the larger of the two solutions:
    exact when one index width or the bitmasks serve every tensor, safe otherwise.
    """
    room = byte_limit - dense_bytes
    widest = max((index_dtype(n).itemsize for n in sizes), default=0)
    bitmasks = sum(math.ceil(n / 8) for n in sizes)
    return max(room / (itemsize + widest), (room - bitmasks) / itemsize)


@dataclass(frozen=True)
class Footprint:
    """What a device budget checks of a deployed model, one figure per limit.

    Structured (compact): the compact model's parameters and FLOPs, and ``memory_bytes`` of it.
    Unstructured (masked): ``params`` is the sparse storage's bytes of the parameters (values
    plus bitmasks or indices) over the bytes of one parameter, the dense parameters those bytes
    would hold; ``flops`` is theoretical (it needs sparse kernels); memory is that storage plus
    the buffers plus the dense model's peak activations (a runtime that runs from the sparse
    format is assumed: ONNX Runtime and PyTorch on a CPU hold the dense weights).
    """

    params: float
    flops: int
    memory_bytes: int


def compact_footprint(model: nn.Module, input_shape: tuple[int, ...]) -> Footprint:
    """The footprint of a model as it runs (compact when structured-pruned, or dense)."""
    params = sum(p.numel() for p in model.parameters())
    return Footprint(params, total_flops(model, input_shape), memory_bytes(model, input_shape))


def sparse_footprint(
    state: Mapping[str, np.ndarray],
    params: Sequence[str],
    masks: Masks,
    flops: int,
    activations: int,
) -> Footprint:
    """The footprint of an unstructured model: `state` (parameters named in `params`, the rest
    buffers) stored under `masks`, its theoretical `flops` and the dense `activations` bytes."""
    weights = {p: state[p] for p in params}
    stored = sparse_bytes(weights, {k: m for k, m in masks.items() if k in weights})
    itemsize = max((np.asarray(v).itemsize for v in weights.values()), default=4)
    buffers = sum(np.asarray(v).nbytes for k, v in state.items() if k not in weights)
    return Footprint(stored / itemsize, flops, stored + buffers + activations)


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one SGD step holds on the device, by what holds them."""

    weights: int  # parameters and buffers
    gradients: int  # one gradient per parameter (accumulated over micro-batches)
    optimizer: int  # momentum buffers: one per parameter when momentum is on
    activations: int  # peak of what the step's forward and backward passes hold at once

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def training_memory(
    model: nn.Module, input_shape: tuple[int, ...], batch: int, momentum: bool, core: bool = False
) -> TrainingMemory:
    """What one train-mode SGD step of `model` at `batch` samples holds: weights, gradients,
    momentum, and the peak activation bytes, measured as ``memory_bytes`` measures inference,
    over the forward pass, the loss and the backward pass (saved tensors and the gradients of
    activations live until backward reads them last). Run it on the compact model for what a
    device trains; the model's weights, buffers and gradients are left as they were.

    `core`: the step also trains a sub-network as a model of its own (`training.train`'s
    `core`), measured with every weight kept, the most any core can hold: the masked copies of
    the weights and a second forward pass count among the activations."""
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    saved = [b.detach().clone() for b in model.buffers()]
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    weights = {t.untyped_storage().data_ptr() for t in [*params, *model.buffers()]}
    mode = _Liveness(weights)
    first = params[0] if params else None
    x = torch.zeros(batch, *input_shape, dtype=first.dtype if first is not None else None)
    was_training = model.train
    training = model.training
    try:
        model.train()
        mode.track(x, -1)
        with mode:
            y = torch.zeros(batch, dtype=torch.long)
            loss = nn.functional.cross_entropy(model(x), y)
            if core:
                masked = {name: p * 1.0 for name, p in model.named_parameters()}
                loss = loss + nn.functional.cross_entropy(functional_call(model, masked, (x,)), y)
            loss.backward()
        for p in params:  # counted as gradients, not as activations
            if p.grad is not None:
                mode.born.pop(p.grad.untyped_storage().data_ptr(), None)
        peak = mode.peak()
    finally:
        was_training(training)
        for b, value in zip(model.buffers(), saved, strict=True):
            b.copy_(value)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
    return TrainingMemory(weight_bytes(model), param_bytes, param_bytes if momentum else 0, peak)
