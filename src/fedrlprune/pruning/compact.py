"""Turn structured masks into a physically smaller model, and time it against the dense one.

Masked weights save nothing at inference: dense kernels multiply the zeros anyway. Removing the
pruned output channels of each conv/linear (and, through torch-pruning's dependency graph, the
next layer's input channels, BatchNorm entries and residual-coupled layers with them) is what
turns a structured mask into fewer FLOPs and lower latency. ``export_onnx`` and the two latency
functions measure that on CPU.

A removed channel's output is gone, not zero: exact only when the masked model's channel
output is zero. Masking a channel's weights and bias gives zero before any normalisation; a
following BatchNorm or activation may still turn it into a constant the next layer sees, unless
its weight and bias are masked too, as structured masks built with ``channel_groups``
(pruning/groups.py) do for BatchNorm, residual and depthwise couplings. ``compact_model``
therefore checks the compact outputs against the masked model's and refuses what it cannot
remove exactly.
"""

import copy
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from fedrlprune.errors import ConfigError, FedRLPruneError
from fedrlprune.pruning.metrics import prunable_layers
from fedrlprune.state import Masks

log = logging.getLogger("fedrlprune")

# Opset 18 is what torch's dynamo exporter targets natively and onnxruntime >= 1.14 runs.
ONNX_OPSET = 18
CHECK_SAMPLES = 4


def _check_masks(masks: Mapping[str, np.ndarray], model: nn.Module) -> None:
    """Refuse masks naming parameters the model lacks or shaped unlike them."""
    params = dict(model.named_parameters())
    for key, mask in masks.items():
        if key not in params:
            raise ConfigError(
                f"mask {key!r} names no parameter of {type(model).__name__}; "
                "pass masks made for this model"
            )
        if np.shape(mask) != tuple(params[key].shape):
            raise ConfigError(
                f"mask {key!r} has shape {np.shape(mask)}, parameter has "
                f"{tuple(params[key].shape)}; pass masks made for this model"
            )


def pruned_channels(masks: Masks, model: nn.Module) -> dict[str, list[int]]:
    """Output channels of each prunable layer whose whole weight slice is masked.

    Every prunable layer has an entry (empty when nothing, or no mask, is on it).
    """
    _check_masks(masks, model)
    out: dict[str, list[int]] = {}
    for name, layer in prunable_layers(model).items():
        mask = masks.get(f"{name}.weight")
        if mask is None:
            out[name] = []
            continue
        kept = np.asarray(mask, dtype=bool).reshape(layer.weight.shape[0], -1).any(axis=1)
        out[name] = np.flatnonzero(~kept).tolist()
    return out


def _masked_copy(model: nn.Module, masks: Masks) -> nn.Module:
    """Deep copy with every masked entry set to zero (``masked_fill``: a NaN there goes too)."""
    masked = copy.deepcopy(model)
    params = dict(masked.named_parameters())
    with torch.no_grad():
        for key, mask in masks.items():
            param = params[key]
            keep = torch.as_tensor(np.asarray(mask, dtype=bool), device=param.device)
            param.masked_fill_(~keep, 0)
    return masked


def _removal_plan(
    dg: tp.DependencyGraph, layers: dict[str, nn.Module], pruned: dict[str, list[int]]
) -> list[tuple[nn.Module, Callable, list[int]]]:
    """(root layer, its out-channel pruning function, channels) per coupled group to shrink.

    Channels coupled through an addition or concatenation are removed only where every coupled
    conv/linear pruned them. Groups that no later layer reads (the model's outputs, e.g. the
    classifier head) are left whole so the output shape stays.
    """
    names = {layer: name for name, layer in layers.items()}
    seen: set[str] = set()
    plan = []
    for name, layer in layers.items():
        if not pruned[name] or name in seen:
            continue
        pruner = dg.get_pruner_of_module(layer)
        full = dg.get_pruning_group(
            layer, pruner.prune_out_channels, list(range(pruner.get_out_channels(layer)))
        )
        removable = set(range(pruner.get_out_channels(layer)))
        for item in full:
            target = item.dep.target.module
            if target in names and dg.is_out_channel_pruning_fn(item.dep.handler):
                seen.add(names[target])
                gone = set(pruned[names[target]])
                removable &= {
                    r for i, r in zip(item.idxs, item.root_idxs, strict=True) if i in gone
                }
        if not any(dg.is_in_channel_pruning_fn(item.dep.handler) for item in full):
            continue
        if removable:
            plan.append((layer, pruner.prune_out_channels, sorted(removable)))
    return plan


def _refuse_live_bias(
    group: tp.dependency.Group, dg: tp.DependencyGraph, names: dict[nn.Module, str]
) -> None:
    """A removed channel with a non-zero bias outputs a constant the next layer sees: refuse."""
    for item in group:
        layer = item.dep.target.module
        if layer not in names or not dg.is_out_channel_pruning_fn(item.dep.handler):
            continue
        bias = getattr(layer, "bias", None)
        if bias is None:
            continue
        live = [c for c in item.idxs if bias[c].item() != 0]
        if live:
            raise FedRLPruneError(
                f"output channels {live} of {names[layer]} have every weight masked but a "
                "non-zero bias, so they still feed the next layer; mask the bias with the "
                "weights (structured masks do) before compacting"
            )


def _shrink(
    model: nn.Module, pruned: dict[str, list[int]], example: torch.Tensor, refuse_live_bias: bool
) -> None:
    """Remove ``pruned`` channels from ``model`` in place, along torch-pruning's dependencies."""
    layers = prunable_layers(model)
    names = {layer: name for name, layer in layers.items()}
    with torch.enable_grad():  # the dependency graph is traced through autograd
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    for layer, prune_fn, channels in _removal_plan(dg, layers, pruned):
        group = dg.get_pruning_group(layer, prune_fn, channels)
        if refuse_live_bias:
            _refuse_live_bias(group, dg, names)
        group.prune()


def compact_model(model: nn.Module, masks: Masks, input_shape: tuple[int, ...]) -> nn.Module:
    """A deep copy of ``model`` with the masked output channels physically removed.

    ``input_shape`` is per sample (no batch dim). The result computes what the masked model
    (masked entries zeroed, eval mode) computes, checked on random input; masked entries in
    the channels that remain stay zero. Refused with FedRLPruneError: masking every channel of a
    layer, a removed channel with a live bias, and any removal that changes the outputs (e.g. a
    BatchNorm after a pruned conv whose shift is kept, making the channel a non-zero constant).
    """
    layers_before = prunable_layers(model)
    pruned = pruned_channels(masks, model)
    for name, channels in pruned.items():
        if channels and len(channels) == layers_before[name].weight.shape[0]:
            raise FedRLPruneError(
                f"the masks prune every output channel of {name}, which leaves the model "
                "nothing to compute; keep at least one channel per layer"
            )
    compact = _masked_copy(model, masks).eval()
    param = next(compact.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(CHECK_SAMPLES, *input_shape, generator=gen).to(param.device, param.dtype)
    with torch.no_grad():
        expected = compact(x)

    _shrink(compact, pruned, x[:1], refuse_live_bias=True)
    with torch.no_grad():
        got = compact(x)
    scale = max(1.0, expected.abs().max().item())
    if got.shape != expected.shape or not torch.allclose(
        got, expected, rtol=1e-4, atol=1e-5 * scale
    ):
        raise FedRLPruneError(
            f"removing the masked channels of {type(model).__name__} changes its outputs, so a "
            "pruned channel still carries a non-zero constant (e.g. a BatchNorm shift after "
            "the pruned conv); mask the following BatchNorm's weight and bias too (structured "
            "masks built with channel_groups do)"
        )
    return compact.train(model.training)


Index = dict[str, tuple[np.ndarray, ...]]  # state key -> kept indices along each dimension


def kept_indices(model: nn.Module, masks: Masks, input_shape: tuple[int, ...]) -> Index:
    """Where each state entry (parameter or buffer) of ``compact_model(model, masks, ...)``
    sits in the dense one: ``dense[np.ix_(*index[key])]`` is the compact entry.

    Found by removing the same channels from a float64 copy whose every entry holds its own
    flat index: what survives names what was kept, for any layer torch-pruning can shrink, since
    it only selects slices. Masks are not checked against the outputs here; ``compact_model`` does.
    """
    pruned = pruned_channels(masks, model)
    tags = copy.deepcopy(model).double().eval()
    shapes = {}
    with torch.no_grad():
        for key, entry in tags.state_dict(keep_vars=True).items():
            shapes[key] = tuple(entry.shape)
            if entry.is_floating_point():
                entry.copy_(torch.arange(entry.numel(), dtype=entry.dtype).reshape(entry.shape))
    example = torch.zeros(
        1, *input_shape, dtype=torch.float64, device=next(tags.parameters()).device
    )
    _shrink(tags, pruned, example, refuse_live_bias=False)
    return {key: _kept(key, value, shapes[key]) for key, value in tags.state_dict().items()}


def _kept(key: str, tags: torch.Tensor, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """The kept indices per dimension of a shrunk tag tensor (an untagged one must keep all)."""
    if not shape:
        return ()  # a scalar (BatchNorm's step counter) is kept whole
    full = np.arange(math.prod(shape)).reshape(shape)
    flat = tags.cpu().numpy().astype(np.int64) if tags.is_floating_point() else full
    index = tuple(np.unique(c) for c in np.unravel_index(flat.ravel(), shape))
    if tuple(tags.shape) != tuple(map(len, index)) or not np.array_equal(
        full[np.ix_(*index)], flat
    ):
        raise FedRLPruneError(
            f"compacting reordered or split the entries of {key!r}, so the compact model has no "
            "place in the dense one; train this model dense (masked)"
        )
    return index


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Write ``model`` (eval mode) as one self-contained ONNX file whose batch size is free.

    TorchScript's exporter first: for these static feed-forward networks it writes the same
    graph 30x faster than torch.export's (0.02 s against 0.63 s per model, 2.65 s for a process's
    first; benchmarks/startup.py), most of the end of a run and of the bench's latency timing. It is
    deprecated, so where it fails or is gone, torch.export's exporter writes the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    param = next(model.parameters())
    # Batch 2: torch.export would specialise an example batch of 1 into a constant.
    example = torch.zeros(2, *input_shape, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            try:
                _export(model, example, path, dynamo=False)
            except Exception as err:  # any failure: the supported exporter writes it
                log.debug("TorchScript ONNX export failed (%s); using torch.export", err)
                _export(model, example, path, dynamo=True)
    finally:
        model.train(was_training)
    import onnx  # here, not at the top: half a second of every simulated client's start

    onnx.checker.check_model(str(path), full_check=True)
    return path


def _export(model: nn.Module, example: torch.Tensor, path: Path, *, dynamo: bool) -> None:
    """One of torch's two ONNX exporters, the batch dimension left free."""
    if dynamo:
        # The exporter names every torchvision op it cannot register: noise, not actionable.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        free = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)}
    else:
        free = {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}
    torch.onnx.export(
        model,
        (example,),
        path,
        dynamo=dynamo,
        input_names=["input"],
        output_names=["output"],
        opset_version=ONNX_OPSET,
        external_data=False,
        verbose=False,
        **free,  # type: ignore[arg-type]
    )


class Timing(NamedTuple):
    """Wall time per call: the median, robust to scheduler noise, and the interquartile range
    of the calls, the jitter that says whether two medians differ by more than chance."""

    median: float
    iqr: float


def _time_calls(step: Callable[[], object], runs: int, warmup: int) -> Timing:
    """Seconds per call of ``step`` over ``runs`` calls, after ``warmup`` untimed calls."""
    if runs < 1 or warmup < 0:
        raise ConfigError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    q1, _, q3 = statistics.quantiles(times, n=4) if runs > 1 else (times[0],) * 3
    return Timing(statistics.median(times), q3 - q1)


def onnx_latency(
    path: Path, input_shape: tuple[int, ...], batch: int, runs: int = 200, warmup: int = 20
) -> float:
    """Median seconds per ``batch``-sample inference with onnxruntime on CPU."""
    return onnx_timing(path, input_shape, batch, runs, warmup).median


def onnx_timing(
    path: Path, input_shape: tuple[int, ...], batch: int, runs: int = 200, warmup: int = 20
) -> Timing:
    """Seconds per ``batch``-sample inference with onnxruntime on CPU: median and spread.

    One intra-op thread: a thread pool's spin-up and contention with other processes dominates
    the spread of small models' timings, and one thread compares like for like with
    ``torch_latency`` (also one thread), measuring the work removed rather than parallelism.
    """
    import onnxruntime as ort  # only where a model is timed

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)
    return _time_calls(lambda: session.run(None, {name: x}), runs, warmup)


def torch_latency(
    model: nn.Module, input_shape: tuple[int, ...], batch: int, runs: int = 200, warmup: int = 20
) -> float:
    """Median seconds per ``batch``-sample forward pass of a CPU model, eval mode, one thread.

    One thread for the reasons given in ``onnx_timing``; the thread count and the model's
    training mode are restored afterwards.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *input_shape, generator=gen)
    threads, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(1)
    model.eval()
    try:
        with torch.inference_mode():
            return _time_calls(lambda: model(x), runs, warmup).median
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
