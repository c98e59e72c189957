"""Measured latency of the models the clients deploy, beside the dense model's, on this CPU.

Each deployed model is written as ONNX the way a device gets it (compact, without its pruned
channels, when the masks are structured; dense shapes with zeros inside when they are not)
and timed with ONNX Runtime: one thread, batch 1, warm-up, then the median of `runs` calls,
with their interquartile range: a speed-up smaller than that jitter is marked as noise.
Models of the same shape run the same kernels at the same speed, so clients whose models have
one shape share one measurement (an unstructured model always has the dense model's shape:
that is why its latency is the dense model's, whatever its sparsity).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from fedrlprune.pruning.compact import Timing, compact_model, export_onnx, onnx_timing
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.state import Masks, State
from fedrlprune.training import set_state

Shape = tuple[tuple[str, tuple[int, ...]], ...]


def deployable(
    model: nn.Module, state: State, masks: Masks, input_shape: tuple[int, ...], structured: bool
) -> nn.Module:
    """The model a device runs: `state` under `masks`, compacted when the masks are structured
    (`model` is only a template of the architecture; it is left as it was given)."""
    set_state(model, apply_masks(state, masks))
    model.eval()
    return compact_model(model, masks, input_shape) if structured and masks else model


def shape_of(model: nn.Module) -> Shape:
    return tuple((name, tuple(t.shape)) for name, t in model.state_dict().items())


def deployed_latency(
    model: nn.Module,
    state: State,
    masks_by_client: dict[int, Masks],
    input_shape: tuple[int, ...],
    structured: bool,
    runs: int = 200,
) -> tuple[Timing, dict[int, Timing]]:
    """Milliseconds per sample of the dense model, and of each client's deployed model."""
    measured: dict[Shape, Timing] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def time_ms(runnable: nn.Module) -> Timing:
            key = shape_of(runnable)
            if key not in measured:
                path = export_onnx(runnable, input_shape, Path(tmp) / f"m{len(measured)}.onnx")
                measured[key] = in_ms(onnx_timing(path, input_shape, batch=1, runs=runs))
            return measured[key]

        dense = time_ms(deployable(model, state, {}, input_shape, structured))
        per_client = {
            cid: time_ms(deployable(model, state, masks, input_shape, structured))
            for cid, masks in masks_by_client.items()
        }
    return dense, per_client


def in_ms(timing: Timing) -> Timing:
    return Timing(1e3 * timing.median, 1e3 * timing.iqr)


def latency_fields(dense: Timing, model: Timing) -> dict[str, Any]:
    """A deployed model's latency, its speed-up over the dense model, and whether that
    speed-up is within the timing noise: the medians differ by less than the two timings'
    interquartile ranges together, a gap the calls' own jitter makes (and another run may
    reverse), most often for models that run in microseconds."""
    return {
        "latency_ms": model.median,
        "latency_speedup": dense.median / model.median,
        "latency_within_noise": abs(dense.median - model.median) <= dense.iqr + model.iqr,
    }
