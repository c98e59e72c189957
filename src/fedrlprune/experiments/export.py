"""Deployable models from a results folder: the global model and one model per device tier.

A run leaves `checkpoint.npz` (the global weights, the global mask and every client's mask,
arrays only; see checkpoint.py). `export_results` rebuilds each deployed model (global weights
under a mask), compacts it when the mask is structured (whole channels gone, so it is
physically smaller and faster), writes it as ONNX, and tabulates what each costs in
parameters, FLOPs and bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fedrlprune.config import Config
from fedrlprune.data.federated import named_dataset
from fedrlprune.data.user import UserData, user_dataset
from fedrlprune.errors import FedRLPruneError
from fedrlprune.experiments.latency import deployable, in_ms, latency_fields
from fedrlprune.federation.checkpoint import CHECKPOINT
from fedrlprune.models import ModelFactory, build_model
from fedrlprune.pruning.compact import export_onnx, onnx_timing
from fedrlprune.pruning.masks import apply_masks
from fedrlprune.pruning.memory import memory_bytes
from fedrlprune.pruning.metrics import model_cost
from fedrlprune.pruning.payload import encode, encoded_bytes
from fedrlprune.state import Masks, State


def load_checkpoint(path: Path) -> tuple[State, Masks, dict[int, Masks]]:
    """The global weights, the global mask and each client's mask of a checkpoint (the other
    entries, which only resuming needs, are skipped)."""
    if not path.is_file():
        raise FedRLPruneError(f"{path} is missing: is this the results folder of a finished run?")
    state: State = {}
    global_masks: Masks = {}
    client_masks: dict[int, Masks] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            kind, _, rest = key.partition("/")
            if kind == "state":
                state[rest] = data[key]
                continue
            if kind != "mask":
                continue
            who, _, name = rest.partition("/")
            if who == "global":
                global_masks[name] = data[key]
            elif match := re.fullmatch(r"client(\d+)", who):
                client_masks.setdefault(int(match.group(1)), {})[name] = data[key]
    return state, global_masks, client_masks


def export_results(
    results: Path,
    *,
    model_fn: ModelFactory | None = None,
    data: UserData | None = None,
) -> list[dict[str, Any]]:
    """Write `export/` in the results folder: ONNX models and `export.md`; return the rows.

    `model_fn` and `data` take what `run_experiment` took (data: the four arrays, a (train,
    test) pair of torch Datasets, or an ArrayDataset), so a run is exported with its own inputs.
    """
    cfg = Config.load(results / "config.toml")
    summary = json.loads((results / "summary.json").read_text())
    if summary.get("model") == "user" and model_fn is None:
        raise FedRLPruneError(
            "this run used your own model: export it from Python with "
            "export_results(path, model_fn=..., data=...)"
        )
    dataset = user_dataset(data) if data is not None else named_dataset(cfg)
    shape = dataset.input_shape
    factory = model_fn or (lambda s, c: build_model(cfg.model, s, c))
    state, global_masks, client_masks = load_checkpoint(results / CHECKPOINT)

    targets: dict[str, Masks] = {"dense": {}, "global": global_masks}
    for entry in summary["per_client"]:  # the first client of each tier stands for its tier
        name = f"tier-{entry['tier']}"
        if name not in targets:
            targets[name] = client_masks.get(entry["client"], global_masks)

    out = results / "export"
    out.mkdir(exist_ok=True)
    rows, timings = [], []
    model = factory(shape, dataset.num_classes)
    for name, masks in targets.items():
        structured = cfg.structured and bool(masks)
        runnable = deployable(model, state, masks, shape, structured)
        path = export_onnx(runnable, shape, out / f"{name}.onnx")
        cost = model_cost(runnable, shape)
        timings.append(in_ms(onnx_timing(path, shape, batch=1, runs=cfg.latency_runs or 200)))
        rows.append(
            {
                "model": name,
                "form": _form(masks, structured),
                "params_in_file": cost.dense_params,
                "nonzero_params": cost.nonzero_params,
                "effective_flops": cost.effective_flops,
                "file_bytes": path.stat().st_size,
                "sparse_bytes": encoded_bytes(encode(apply_masks(state, masks), masks)),
                "memory_bytes": memory_bytes(runnable, shape),
                "latency_ms": timings[-1].median,
                "latency_iqr_ms": timings[-1].iqr,
            }
        )
    for row, timing in zip(rows, timings, strict=True):  # side by side in this one call
        row.update(latency_fields(timings[0], timing))
        row["flops_ratio"] = rows[0]["effective_flops"] / row["effective_flops"]
    _write_table(out / "export.md", rows, structured=cfg.structured)
    return rows


def _form(masks: Masks, structured: bool) -> str:
    if not masks:
        return "dense"
    return "compact (channels removed)" if structured else "masked (sparse weights)"


def _write_table(path: Path, rows: list[dict[str, Any]], structured: bool) -> None:
    head = list(rows[0])
    kind = "compact" if structured else "theoretical"
    labels = [f"{h} ({kind})" if h in ("effective_flops", "flops_ratio") else h for h in head]
    lines = ["| " + " | ".join(labels) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(_cell(r[h]) for h in head) + " |" for r in rows]
    note = (
        "Structured masks: each model is rebuilt without its pruned channels, so FLOPs, the "
        "file and the latency shrink."
        if structured
        else "Unstructured masks: the ONNX file keeps dense shapes (zeros inside), so it runs at "
        "the dense model's speed on a CPU; its FLOPs figure is theoretical (it needs sparse "
        "kernels). `sparse_bytes` is the size in our sparse storage format (bitmask or indices "
        "+ values)."
    )
    note += (
        " `memory_bytes`: what running the exported model needs at batch 1, its weights and "
        "buffers plus its peak activations (`fedrlprune.pruning.memory_bytes`): the compact "
        "model's when structured, the dense model's when unstructured (the file keeps dense "
        "shapes; summary.json's per-client `memory_bytes` counts the sparse storage format "
        "instead)."
        " Latency: ONNX Runtime on this CPU, one thread, batch 1, the median of many calls "
        "after a warm-up (`latency_iqr_ms`: the interquartile range of those calls); "
        "`latency_speedup` and `flops_ratio` are against the dense model, and "
        "`latency_within_noise` is true where the two medians differ by less than their "
        "interquartile ranges together: within the timing noise, another run may reverse it."
    )
    path.write_text("# Exported models\n\n" + "\n".join(lines) + "\n\n" + note + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
