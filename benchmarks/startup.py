"""What a simulation pays before and after its rounds, piece by piece, old way against new.

    .venv/bin/python benchmarks/startup.py

Side by side in one run, medians of `REPEATS`:
- partitions: 1000 Dirichlet clients of 60,000 labels (Fashion-MNIST's train size), read from
  the partitioner's table (today) against one flwr-datasets `load_partition` per client;
- ONNX export of LeNet-5 and the FedAvg CNN with TorchScript's exporter (tried first today)
  against torch.export's (the first call of a process, which also loads the exporter, apart);
- a worker's import of the ClientApp module, without ONNX (today) and with `onnx` and
  `onnxruntime` imported beside it (as the module did at the top before).

Writes benchmarks/results/startup.json. About a minute.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedrlprune.data import partition
from fedrlprune.models import build_model

REPEATS = 3
OUT = Path(__file__).parent / "results" / "startup.json"


def median_seconds(step: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def partitions() -> dict[str, float]:
    labels = np.random.default_rng(0).integers(0, 10, size=60_000)
    fast = median_seconds(lambda: partition.partition_indices(labels, 1000, "dirichlet"))
    table = partition._table
    partition._table = lambda *_: None  # type: ignore[assignment]  # the per-client path
    try:
        slow = median_seconds(lambda: partition.partition_indices(labels, 1000, "dirichlet"))
    finally:
        partition._table = table  # type: ignore[assignment]
    return {"table_s": fast, "load_partition_each_s": slow}


def export_seconds(name: str, dynamo: bool, folder: Path, repeats: int = REPEATS) -> float:
    model = build_model(name, (1, 28, 28), 10).eval()
    example = torch.zeros(2, 1, 28, 28)
    free: dict[str, Any] = (
        {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)}
        if dynamo
        else {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}
    )

    def step() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), folder / f"{name}.onnx", dynamo=dynamo,
                              input_names=["input"], output_names=["output"], opset_version=18,
                              **free)  # fmt: skip

    return median_seconds(step, repeats)


def exports() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        first = export_seconds("lenet5", True, Path(tmp), repeats=1)  # loads the exporter too
        return {
            "first_torch_export_call_s": first,
            **{
                f"{name}_{kind}_s": export_seconds(name, kind == "torch_export", Path(tmp))
                for name in ("lenet5", "cnn")
                for kind in ("torchscript", "torch_export")
            },
        }


def imports() -> dict[str, float]:
    def python(code: str) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, "-c", code], check=True)

    return {
        "client_app_s": median_seconds(python("import fedrlprune.fl.client_app")),
        "client_app_with_onnx_s": median_seconds(
            python("import fedrlprune.fl.client_app, onnx, onnxruntime")
        ),
    }


def main() -> None:
    result = {"partitions_1000": partitions(), "onnx_export": exports(), "import": imports()}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
