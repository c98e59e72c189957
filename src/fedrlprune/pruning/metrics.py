"""Parameter and FLOP accounting shared by every pruning method, so their figures are comparable.

FLOPs follow ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add of a conv or
matmul (``2 * Cout * Hout * Wout * Cin/groups * k * k`` for a conv, ``2 * in * out`` for a
linear layer, per sample); bias adds, activations, pooling and normalisation count as 0.
"""

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedrlprune.errors import ConfigError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every conv and linear layer by qualified name, in ``named_modules`` (definition) order."""
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, PRUNABLE_TYPES)}


def classifier_name(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> str:
    """Name of the layer that makes the logits: the head pruning leaves whole by default.

    With ``input_shape`` (per sample) it is the last conv/linear layer a forward pass runs, so a
    1x1 conv before global pooling (NiN, SqueezeNet) is found wherever it is defined; without,
    the last ``nn.Linear`` in definition order, else the last conv.
    """
    layers = prunable_layers(model)
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no conv or linear layer to act as classifier head; "
            "end the model with an nn.Linear or a conv with one output channel per class"
        )
    ran = _layers_run(model, layers, input_shape) if input_shape is not None else []
    linears = [name for name, mod in layers.items() if isinstance(mod, nn.Linear)]
    return (ran or linears or list(layers))[-1]


def _layers_run(
    model: nn.Module, layers: Mapping[str, nn.Module], input_shape: tuple[int, ...]
) -> list[str]:
    """Names of ``layers`` in the order one eval-mode forward pass of a zeros sample runs them."""
    ran: list[str] = []
    handles = [
        layer.register_forward_hook(lambda *_, name=name: ran.append(name))
        for name, layer in layers.items()
    ]
    try:
        one_pass(model, _zeros(model, input_shape), contextlib.nullcontext())
    finally:
        for handle in handles:
            handle.remove()
    return ran


def _zeros(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """One zeros sample of ``input_shape`` on the model's device and in its dtype."""
    param = next(model.parameters(), None)
    return torch.zeros(
        1,
        *input_shape,
        device=param.device if param is not None else None,
        dtype=param.dtype if param is not None else None,
    )


def _count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, int], int]:
    """One counted forward pass of a zeros sample: per-prunable-layer FLOPs and the total.

    Each layer's share is the growth of the running total between its pre- and post-forward
    hooks, which is exact whatever the module's name or class and sums repeated calls.
    """
    layers = prunable_layers(model)
    per_layer = dict.fromkeys(layers, 0)
    x = _zeros(model, input_shape)
    counter = FlopCounterMode(display=False)
    start: dict[str, int] = {}
    handles = []
    for name, layer in layers.items():

        def pre(_mod: nn.Module, _args: object, name: str = name) -> None:
            start[name] = counter.get_total_flops()

        def post(_mod: nn.Module, _args: object, _out: object, name: str = name) -> None:
            per_layer[name] += counter.get_total_flops() - start[name]

        handles += [layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)]
    try:
        one_pass(model, x, counter)
    finally:
        for handle in handles:
            handle.remove()
    return per_layer, counter.get_total_flops()


def one_pass(model: nn.Module, x: torch.Tensor, mode: Any) -> None:
    """One eval-mode forward pass of one sample under `mode` (a FLOP counter, a dispatch mode);
    a model that cannot take the sample is a ConfigError naming the shape to pass."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            model(x)
    except RuntimeError as err:
        raise ConfigError(
            f"cannot run {type(model).__name__} on one sample of shape {tuple(x.shape[1:])}: "
            f"{err}. Pass the per-sample input shape (no batch dimension) the model was built for"
        ) from err
    finally:
        model.train(was_training)


def layer_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Dense FLOPs of each prunable layer for one sample of ``input_shape`` (no batch dim)."""
    return _count_flops(model, input_shape)[0]


def total_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """All FLOPs the counter sees in one forward pass of one sample."""
    return _count_flops(model, input_shape)[1]


def count_nonzero(state: Mapping[str, np.ndarray | torch.Tensor]) -> tuple[int, int]:
    """(dense, nonzero) entry counts over arrays, e.g. a state dict or Flower parameters."""
    dense = nonzero = 0
    for value in state.values():
        if isinstance(value, torch.Tensor):
            dense += value.numel()
            nonzero += int(torch.count_nonzero(value.detach()))
        else:
            dense += int(np.size(value))
            nonzero += int(np.count_nonzero(value))
    return dense, nonzero


@dataclass(frozen=True)
class ModelCost:
    """Size and compute of a (possibly sparse) model against its dense self."""

    dense_params: int
    nonzero_params: int
    dense_flops: int
    effective_flops: int
    layer_density: dict[str, float]

    @property
    def param_reduction(self) -> float:
        """Compression ratio dense / non-zero parameters (inf when every parameter is zero)."""
        return self.dense_params / self.nonzero_params if self.nonzero_params else float("inf")

    @property
    def flops_reduction(self) -> float:
        """Speed-up ratio dense / effective FLOPs (inf when nothing is left to compute)."""
        return self.dense_flops / self.effective_flops if self.effective_flops else float("inf")


def model_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    flops: dict[str, int] | None = None,
    total: int | None = None,
) -> ModelCost:
    """Cost of ``model`` as it stands; pass ``flops``/``total`` from an earlier count to skip one.

    A prunable layer's FLOPs shrink in proportion to the zeros in its weight; all other FLOPs
    (and bias, BatchNorm parameters) stay dense.
    """
    if flops is None or total is None:
        counted, counted_total = _count_flops(model, input_shape)
        flops = counted if flops is None else flops
        total = counted_total if total is None else total
    return state_cost(dict(model.named_parameters()), flops, total)


def state_cost(
    params: Mapping[str, np.ndarray | torch.Tensor], flops: Mapping[str, int], total: int
) -> ModelCost:
    """Cost of a model given as its parameters (no buffers) by name, e.g. a client's masked
    state on the server, which has no nn.Module of its own for each client."""
    dense_params, nonzero_params = count_nonzero(params)
    density: dict[str, float] = {}
    saved = 0
    for name, layer_flops_ in flops.items():
        size, nonzero = count_nonzero({name: params[f"{name}.weight"]})
        density[name] = nonzero / size
        saved += round(layer_flops_ * (size - nonzero) / size)
    return ModelCost(
        dense_params=dense_params,
        nonzero_params=nonzero_params,
        dense_flops=total,
        effective_flops=total - saved,
        layer_density=density,
    )


def chained_cost(
    params: Mapping[str, np.ndarray], flops: Mapping[str, int], total: int
) -> ModelCost:
    """Cost of a structured-pruned model as its compact form would have it: a removed output
    channel of one layer also removes the matching inputs of the next prunable layer (and of the
    classifier head), which `state_cost` would still count. Assumes the prunable layers form a
    chain in definition order (LeNet, the FedAvg CNN, MLPs, VGG), a flatten between conv and
    linear keeping channel-major order; for residual models it is an estimate (export the model
    for the exact figure)."""
    dense_params, _ = count_nonzero(params)
    layer_keys = {f"{name}.weight" for name in flops} | {f"{name}.bias" for name in flops}
    _, nonzero = count_nonzero({k: v for k, v in params.items() if k not in layer_keys})
    density: dict[str, float] = {}
    saved = 0
    kept_prev: np.ndarray | None = None  # kept output channels of the previous layer
    for name, layer_flops_ in flops.items():
        w = np.asarray(params[f"{name}.weight"])
        rows = w.reshape(w.shape[0], -1)
        kept_out = np.flatnonzero(np.any(rows != 0, axis=1))
        cols = w.reshape(w.shape[0], w.shape[1], -1)
        if kept_prev is not None and w.ndim >= 2 and w.shape[1] % kept_prev.size == 0:
            group = w.shape[1] // kept_prev.size  # inputs per previous channel (flatten)
            kept_in = np.zeros(w.shape[1], bool)
            for c in np.flatnonzero(kept_prev):
                kept_in[c * group : (c + 1) * group] = True
            cols = cols[:, kept_in]
        sub = cols[kept_out]
        nonzero += int(np.count_nonzero(sub))
        bias = params.get(f"{name}.bias")
        if bias is not None:
            nonzero += int(np.count_nonzero(np.asarray(bias)[kept_out]))
        density[name] = np.count_nonzero(sub) / w.size
        saved += round(layer_flops_ * (1 - density[name]))
        kept_prev = np.zeros(w.shape[0], bool)
        kept_prev[kept_out] = True
    return ModelCost(dense_params, nonzero, total, total - saved, density)
