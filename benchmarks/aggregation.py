"""Does the sparse aggregation rule matter? The same pruned run under each rule, side by side.

Every run has the same data, seed, clients and pruning (method `magnitude`, one rate for
everyone so all rules see the same sparsity); only `aggregation` changes. Naive FedAvg over
zero-filled sparse weights is the ablation: it shrinks a weight that only some clients kept.

    .venv/bin/python benchmarks/aggregation.py --out benchmarks/results/aggregation.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from fedrlprune.config import AGGREGATIONS, Config
from fedrlprune.experiments.runner import run_experiment

BASE = {
    "method": "magnitude",
    "prune_rate": 0.8,
    "respect_budgets": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="vote,naive", help=f"from {', '.join(AGGREGATIONS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/aggregation.md"))
    args = parser.parse_args()

    rows = []
    for rule in args.rules.split(","):
        cfg = Config.load(None, [f"{k}={v}" for k, v in BASE.items()] + args.overrides)
        cfg = Config.from_dict({"aggregation": rule}, base=cfg)
        with tempfile.TemporaryDirectory() as tmp:
            s = run_experiment(cfg, out_dir=Path(tmp) / rule, live=False)
        rows.append(
            {
                "aggregation": rule,
                "final_accuracy": s["final_accuracy"],
                "best_accuracy": s["best_accuracy"],
                "pruned_layers_density": s["pruned_layers_density"],
                "nonzero_params": s["nonzero_params"],
                "upload_MB": s["upload_bytes_total"] / 1e6,
                "wall_seconds": s["wall_seconds"],
            }
        )
        print(json.dumps(rows[-1]))
    settings = ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items() if k != "aggregation")
    head = list(rows[0])
    lines = [
        "# Aggregation rule ablation",
        "",
        f"Command: `.venv/bin/python benchmarks/aggregation.py {' '.join(_argv(args))}`".rstrip(),
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values())
            + " |"
        )
    lines += ["", f"Settings: {settings}.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {args.out}")


def _argv(args: argparse.Namespace) -> list[str]:
    out = [f"--rules {args.rules}"] if args.rules != "vote,naive" else []
    return out + [f"--set {o}" for o in args.overrides]


if __name__ == "__main__":
    main()
