"""Inference latency: a 50%-structured-pruned model compacted against its dense masked self.

For the FedAvg CNN and LeNet-5 on 1x28x28 (seed 0), every layer but the classifier head loses
half its output channels by L1 norm (``magnitude_masks`` in structured mode). The masked dense
model and its compact copy are timed side by side in one run, in PyTorch and ONNX Runtime, at
batch 1 and 64, single-threaded (see ``onnx_latency``). Measurements are interleaved in rounds
(every variant once per round, median of round medians) so load drift on a shared machine hits
all variants alike.

    .venv/bin/python benchmarks/latency.py --runs 200 --out benchmarks/results/latency.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from fedrlprune.models import build_model
from fedrlprune.pruning.compact import compact_model, export_onnx, onnx_latency, torch_latency
from fedrlprune.pruning.masks import magnitude_masks, mask_model
from fedrlprune.pruning.metrics import classifier_name, prunable_layers, total_flops

SHAPE = (1, 28, 28)
RATE = 0.5
BATCHES = (1, 64)
VARIANTS = ("torch dense", "torch compact", "ORT dense", "ORT compact")


def pruned_pair(name: str, seed: int) -> tuple[nn.Module, nn.Module, list[str]]:
    """(masked dense model, its compact copy, pruned layers): all layers but the head at RATE."""
    torch.manual_seed(seed)
    model = build_model(name, SHAPE, 10).eval()
    layers = [n for n in prunable_layers(model) if n != classifier_name(model, SHAPE)]
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    masks = magnitude_masks(state, dict.fromkeys(layers, RATE), mode="structured")
    mask_model(model, masks)
    return model, compact_model(model, masks, SHAPE).eval(), layers


def interleaved(
    measures: dict[str, Callable[[int, int], float]], runs: int, rounds: int
) -> dict[str, list[float]]:
    """Each variant's median of ``runs // rounds`` timed calls, once per round."""
    per_round = max(1, runs // rounds)
    samples: dict[str, list[float]] = {key: [] for key in measures}
    for _ in range(rounds):
        for key, measure in measures.items():
            samples[key].append(measure(per_round, max(2, per_round // 10)))
    return samples


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bench(name: str, runs: int, rounds: int, seed: int, tmp: Path) -> dict:
    """Sizes, FLOPs and the four latencies at each batch size for one model."""
    dense, compact, layers = pruned_pair(name, seed)
    paths = {
        "dense": export_onnx(dense, SHAPE, tmp / f"{name}-dense.onnx"),
        "compact": export_onnx(compact, SHAPE, tmp / f"{name}-compact.onnx"),
    }
    models = {"dense": dense, "compact": compact}
    flops = {size: total_flops(model, SHAPE) for size, model in models.items()}
    result = {
        "model": name,
        "input_shape": list(SHAPE),
        "pruned_layers": layers,
        "rate": RATE,
        "params_dense": n_params(dense),
        "params_compact": n_params(compact),
        "flops_dense": flops["dense"],
        "flops_compact": flops["compact"],
        "flops_ratio": flops["dense"] / flops["compact"],
        "batches": {},
    }
    for batch in BATCHES:
        measures: dict[str, Callable[[int, int], float]] = {}
        for size in ("dense", "compact"):
            model, path = models[size], paths[size]
            measures[f"torch {size}"] = lambda n, w, m=model, b=batch: torch_latency(
                m, SHAPE, b, runs=n, warmup=w
            )
            measures[f"ORT {size}"] = lambda n, w, p=path, b=batch: onnx_latency(
                p, SHAPE, b, runs=n, warmup=w
            )
        samples = interleaved(measures, runs, rounds)
        seconds = {key: statistics.median(samples[key]) for key in VARIANTS}
        result["batches"][str(batch)] = {
            "seconds": seconds,
            "round_medians_seconds": samples,
            "speedup_torch": seconds["torch dense"] / seconds["torch compact"],
            "speedup_ort": seconds["ORT dense"] / seconds["ORT compact"],
        }
    return result


def rows(results: list[dict]) -> list[list[str]]:
    """One table row per model and batch size: sizes, FLOPs, then the four latencies."""
    out = []
    for res in results:
        for batch, timing in res["batches"].items():
            ms = {key: f"{value * 1e3:.3f}" for key, value in timing["seconds"].items()}
            out.append(
                [
                    res["model"],
                    batch,
                    f"{res['params_dense']:,} → {res['params_compact']:,}",
                    f"{res['flops_dense'] / 1e6:.2f} → {res['flops_compact'] / 1e6:.2f} "
                    f"({res['flops_ratio']:.2f}x)",
                    ms["torch dense"],
                    ms["torch compact"],
                    f"{timing['speedup_torch']:.2f}x",
                    ms["ORT dense"],
                    ms["ORT compact"],
                    f"{timing['speedup_ort']:.2f}x",
                ]
            )
    return out


HEADER = [
    "model",
    "batch",
    "params dense → compact",
    "MFLOPs/sample dense → compact",
    "torch dense ms",
    "torch compact ms",
    "torch speedup",
    "ORT dense ms",
    "ORT compact ms",
    "ORT speedup",
]


def markdown(results: list[dict], machine: dict, runs: int, rounds: int) -> str:
    lines = [
        "# Inference latency: 50% structured pruning, dense vs compact",
        "",
        f"Every layer but the classifier pruned to {RATE:.0%} of its output channels (L1 norm), "
        "input 1x28x28, seed 0. Milliseconds per batch, median of "
        f"{rounds} interleaved rounds of {max(1, runs // rounds)} runs, one thread. "
        f"Machine: {machine['processor']}, {machine['cpu_count']} CPUs, "
        f"torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, {machine['date']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines) + "\n"


def processor() -> str:
    """CPU model name: ``platform.processor`` is just the architecture on Linux."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    return {
        "processor": processor(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed calls per variant")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency.md"))
    args = parser.parse_args()

    machine = machine_info()  # the load average tells whether other work shared the CPUs
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            bench(name, args.runs, args.rounds, args.seed, Path(tmp)) for name in ("cnn", "lenet5")
        ]
    machine["load_average_1m_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(results, machine, args.runs, args.rounds))
    payload = {"what": __doc__.splitlines()[0], "runs": args.runs, "rounds": args.rounds}
    payload |= {"machine": machine, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")

    table = Table(title="dense vs compact, ms per batch (one thread)")
    for column in HEADER:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows(results):
        table.add_row(*row)
    Console(width=max(Console().width, 150)).print(table)  # 10 columns: no squeezing
    print(f"written to {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
