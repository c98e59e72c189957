"""Local training time: the dense model, the masked dense model, and the compact sub-model.

One client's training split (Fashion-MNIST, client 0 of ``--clients``, Dirichlet split, seed 0;
digits if Fashion-MNIST is not installed) is trained for one local epoch (batch 32, SGD with
momentum 0.9, as a client does) by the FedAvg CNN and LeNet-5 (the MLP on digits), at each
channel keep rate of the device tiers: every target layer (all but the classifier head) keeps
that share of its channels, cut per channel group by L1 norm. Three variants, side by side in
one process and interleaved per repeat so load drift hits them alike: the dense model (no mask:
the reference), the masked dense model (pruned channels held at zero, the mask enforced), and the
compact sub-model (pruned channels removed, what a structured client trains). The compact
variant's cut (``extract``) and write-back (``expand``) are timed apart from its training.
Medians over ``--repeats`` after an untimed warm-up, one thread (the work removed, not
parallelism).

    .venv/bin/python benchmarks/compact_training.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from fedrlprune.config import Config
from fedrlprune.data.loaders import load_dataset
from fedrlprune.errors import ConfigError
from fedrlprune.federation.client import client_data
from fedrlprune.methods.base import ClientData
from fedrlprune.pruning.masks import MaskEnforcer, apply_masks, magnitude_masks
from fedrlprune.pruning.metrics import total_flops
from fedrlprune.pruning.submodel import expand, extract, to_compact
from fedrlprune.state import Masks
from fedrlprune.training import get_state, set_state, train

KEEP = (1.0, 0.6, 0.4, 0.25, 0.15)  # channel keep rates spanning the tiers' budgets
WARM_UP = 128  # samples of the untimed warm-up
OPTIONS = {"epochs": 1, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "seed": 0}


def setup(dataset: str, model: str, clients: int) -> ClientData:
    cfg = Config.from_dict(
        {"dataset": dataset, "model": model, "clients": clients, "prune_mode": "structured"}
    )
    torch.manual_seed(0)
    return client_data(cfg, 0)


def keep_masks(data: ClientData, keep: float) -> Masks:
    """Every target layer keeps ``keep`` of its channels (per channel group, L1 norm)."""
    state = get_state(data.model)
    rates = dict.fromkeys(data.targets, 1.0 - keep)
    return magnitude_masks(state, rates, "structured", None, data.groups(True))


def seconds(model: torch.nn.Module, data: ClientData, masks: Masks) -> float:
    """One local epoch of ``model`` with ``masks`` enforced (none: dense)."""
    hook = MaskEnforcer(model, masks) if masks else None
    return train(model, data.x_train, data.y_train, hook=hook, **OPTIONS).seconds


def one_repeat(data: ClientData, masks: dict[float, Masks]) -> dict[str, dict[str, float]]:
    """Every variant at every keep rate once; each starts from the same initial weights."""
    initial = get_state(data.model)
    set_state(data.model, initial)
    out = {"1.0": {"dense": seconds(data.model, data, {})}}
    for keep, mask in masks.items():
        set_state(data.model, apply_masks(initial, mask))
        row = {"masked": seconds(data.model, data, mask)}
        set_state(data.model, apply_masks(initial, mask))
        start = time.perf_counter()
        sub = extract(data.model, mask, data.input_shape)
        row["extract"] = time.perf_counter() - start
        row["compact"] = seconds(sub.model, data, to_compact(mask, sub.index))
        start = time.perf_counter()
        expand(get_state(sub.model), sub.index, apply_masks(initial, mask))
        row["expand"] = time.perf_counter() - start
        out[str(keep)] = row
    set_state(data.model, initial)
    return out


def bench(dataset: str, model: str, clients: int, repeats: int) -> dict:
    data = setup(dataset, model, clients)
    masks = {keep: keep_masks(data, keep) for keep in KEEP if keep < 1.0}
    # Untimed warm-up on a slice: the first call at each shape sets up kernels and caches.
    one_repeat(replace(data, x_train=data.x_train[:WARM_UP], y_train=data.y_train[:WARM_UP]), masks)
    runs = [one_repeat(data, masks) for _ in range(repeats)]
    dense = statistics.median(r["1.0"]["dense"] for r in runs)
    flops_dense = total_flops(data.model, data.input_shape)
    rows = [{"keep": 1.0, "dense_s": dense, "flops_ratio": 1.0}]
    for keep, mask in masks.items():
        med = {k: statistics.median(r[str(keep)][k] for r in runs) for k in runs[0][str(keep)]}
        sub = extract(data.model, mask, data.input_shape)
        rows.append(
            {
                "keep": keep,
                "dense_s": dense,
                "masked_s": med["masked"],
                "compact_s": med["compact"],
                "extract_s": med["extract"],
                "expand_s": med["expand"],
                "speedup_vs_dense": dense / med["compact"],
                "speedup_vs_masked": med["masked"] / med["compact"],
                "flops_ratio": total_flops(sub.model, data.input_shape) / flops_dense,
            }
        )
    return {
        "dataset": dataset,
        "model": model,
        "samples": len(data.y_train),
        "repeats": repeats,
        "rows": rows,
        "runs": runs,
    }


def fmt(value: float | None, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


HEADER = ["model", "keep", "FLOPs", "dense s", "masked s", "compact s", "cut+back s",
          "vs dense", "vs masked"]  # fmt: skip


def table_rows(results: list[dict]) -> list[list[str]]:
    out = []
    for res in results:
        for row in res["rows"]:
            cut = row["extract_s"] + row["expand_s"] if "extract_s" in row else None
            out.append(
                [
                    res["model"],
                    f"{row['keep']:.2f}",
                    f"{row['flops_ratio']:.3f}",
                    f"{row['dense_s']:.3f}",
                    fmt(row.get("masked_s"), "{:.3f}"),
                    fmt(row.get("compact_s"), "{:.3f}"),
                    fmt(cut, "{:.3f}"),
                    fmt(row.get("speedup_vs_dense"), "{:.2f}x"),
                    fmt(row.get("speedup_vs_masked"), "{:.2f}x"),
                ]
            )
    return out


def markdown(results: list[dict], machine: dict) -> str:
    first = results[0]
    lines = [
        "# Local training: dense, masked dense and compact sub-model",
        "",
        f"One local epoch of client 0's training split ({first['dataset']}, "
        f"{first['samples']} samples), batch 32, SGD momentum 0.9, one thread; seconds are "
        f"medians of {first['repeats']} interleaved repeats. keep: the share of channels every "
        "target layer keeps; FLOPs: the compact model's share of the dense model's; cut+back: "
        "`extract` and `expand`, paid once a round besides the training. "
        f"Machine: {machine['cpu_count']} CPUs, load average {machine['load']:.1f} at the "
        f"start (shared), torch {machine['torch']}, {machine['date']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20, help="client 0 of this many")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compact-training"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        load_dataset("fashion-mnist")
        cases = [("fashion-mnist", "cnn"), ("fashion-mnist", "lenet5")]
    except ConfigError:
        cases = [("digits", "mlp")]
    machine = {
        "cpu_count": os.cpu_count(),
        "load": os.getloadavg()[0],
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    results = [bench(d, m, args.clients, args.repeats) for d, m in cases]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "options": OPTIONS, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, machine))
    table = Table(*HEADER, title="local training seconds")
    for row in table_rows(results):
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
