"""Side-by-side runs that differ in named settings only: ablations with one command.

Every variant shares the base settings (`--set`), so data, seed, clients and devices match and
the only difference is the variant's own overrides. Two ablations ship as presets:

    .venv/bin/python benchmarks/compare.py --preset aggregation    # sparse rule vs naive FedAvg
    .venv/bin/python benchmarks/compare.py --preset policy         # federated, local, central
    .venv/bin/python benchmarks/compare.py --preset method         # against dense FedAvg

`--variants` runs some variants only; `--keep DIR` keeps each variant's results folder (report,
metrics, rates, summary with per-client figures) as DIR/<variant>, less the checkpoint and the
saved model.

Writes a markdown table and JSON to benchmarks/results/<preset>.md / .json. Methods side by
side over seeds and suites are `fedrlprune bench` (src/fedrlprune/bench/); this script shares
its Ray session (one Ray instance and its client actors for all variants) and machine line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedrlprune.bench.section import machine_line
from fedrlprune.config import Config
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.fl.simulation import ray_session

PRESETS: dict[str, dict[str, Any]] = {
    # Clients prune to their own device budgets, so their masks differ: with one rate for
    # everyone all masks are equal and the two rules compute the same average. The global mask
    # keeps what half the clients keep (the union would hide how naive averaging shrinks weights
    # only some clients kept behind a denser model).
    "aggregation": {
        "base": [
            "method=magnitude",
            "prune_rate=0.8",
            "respect_budgets=true",
            "vote_threshold=0.5",
        ],
        "variants": {"vote": ["aggregation=vote"], "naive": ["aggregation=naive"]},
    },
    # The method against dense FedAvg on the FedAvg CNN, 20 clients of mixed device tiers.
    "method": {
        "config": "configs/method-cnn.toml",
        "base": [],
        "variants": {
            "fedavg": ["method=fedavg"],
            "fedrlprune": ["method=fedrlprune"],
            # the ablation of the core: clients train their own sub-network only
            "fedrlprune-nocore": ["method=fedrlprune", "train_core=false"],
        },
    },
    # The universal policy against one agent per client that never shares what it learned, and
    # against one agent trained on a single client and used by all (a centralised pruner).
    "policy": {
        "base": ["method=fedrlprune", "heldout_clients=2"],
        "variants": {
            "federated": ["rl_policy=federated"],
            "local": ["rl_policy=local"],
            "central": ["rl_policy=central"],
        },
    },
}
COLUMNS = (
    "final_accuracy",
    "deployed_accuracy_mean",
    "deployed_accuracy_heldout",
    "budget_satisfaction",
    "budget_satisfaction_heldout",
    "pruned_layers_density",
    "deployed_param_reduction",
    "deployed_flops_reduction",
    "rl_seconds_total",
    "train_seconds_total",
    "sim_seconds_total",
    "upload_bytes_total",
    "upload_vs_dense_last_round",
    "wall_seconds",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/<preset>.md")
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="default: all")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep results as DIR/<variant>")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    out = args.out or Path("benchmarks/results") / f"{args.preset}.md"
    wanted = args.variants or list(preset["variants"])
    unknown = sorted(set(wanted) - set(preset["variants"]))
    if unknown:
        parser.error(f"unknown variants {unknown}; {args.preset} has {sorted(preset['variants'])}")
    variants = {n: c for n, c in preset["variants"].items() if n in wanted}

    rows = []
    machine = machine_line()
    with ray_session():
        for name, changes in variants.items():
            cfg = Config.load(preset.get("config"), [*preset["base"], *args.overrides, *changes])
            with tempfile.TemporaryDirectory() as tmp:
                summary = run_experiment(cfg, out_dir=Path(tmp) / name, live=False)
                if args.keep is not None:
                    shutil.rmtree(args.keep / name, ignore_errors=True)
                    shutil.copytree(
                        Path(tmp) / name,
                        args.keep / name,
                        ignore=shutil.ignore_patterns("checkpoint.npz", "*.pt"),
                    )
            rows.append({"variant": name, **{c: summary.get(c) for c in COLUMNS}})
            print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"# Ablation: {args.preset}",
        "",
        f"Command: `.venv/bin/python benchmarks/compare.py {shlex.join(sys.argv[1:])}`",
        f"Machine: {machine}; date {time.strftime('%Y-%m-%d')}.",
        f"Base settings: {preset.get('config') or 'defaults'}, "
        f"{', '.join(preset['base'] + args.overrides) or 'nothing more'}; variants: "
        + "; ".join(f"{n}: {', '.join(c)}" for n, c in variants.items())
        + ".",
        "",
        "| variant | " + " | ".join(COLUMNS) + " |",
        "| --- |" + " --- |" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in row.values()) + " |" for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {out}")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    main()
