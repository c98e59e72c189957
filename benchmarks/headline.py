"""The headline setting over seeds: structured fedrlprune against dense FedAvg and the fixed rules.

The FedAvg CNN on Fashion-MNIST (`configs/method-cnn.toml`: 20 clients, five of each device
tier, Dirichlet 0.5, two held out), structured: `fedavg` (the dense reference), `fedrlprune`
(the learned per-layer policy) and the two fixed rules on the same pipeline at the same budgets,
`uniform` and `lamp`. Each run keeps its results folder under `--out`/runs/<variant>-seed<k>;
a run whose `summary.json` is there is not run again, so the benchmark resumes where it stopped
and can span sessions. After every run the table is rewritten:

    .venv/bin/python benchmarks/headline.py --out benchmarks/results/headline

writes `headline.md` and `headline.json`: per seed and variant the deployed models' mean
accuracy on the global test set, per tier, on held-out clients, the measured latency speed-up
and budget satisfaction (checked on the compact models); then mean ± sd over the seeds and each
variant's gap to dense FedAvg, in points.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from fedrlprune.bench.section import machine_line
from fedrlprune.config import Config
from fedrlprune.devices import TIERS
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.fl.simulation import ray_session

CONFIG = "configs/method-cnn.toml"
VARIANTS = ("fedavg", "fedrlprune", "uniform", "lamp")


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures the table shows, from one run's summary."""
    per_client = summary["per_client"]
    tiers = {
        t: statistics.mean(c["accuracy_global_test"] for c in per_client if c["tier"] == t)
        for t in TIERS
        if any(c["tier"] == t for c in per_client)
    }
    return {
        "deployed": summary["deployed_accuracy_mean"],
        "heldout": summary.get("deployed_accuracy_heldout"),
        **{f"acc_{t}": a for t, a in tiers.items()},
        "speedup": summary.get("deployed_latency_speedup"),
        "budget": summary.get("budget_satisfaction"),
        "params_x": summary["dense_params"]
        / statistics.mean(c.get("compact_params", c["nonzero_params"]) for c in per_client),
        "rl_updates": summary.get("rl_updates_total"),
        "rl_share": (summary.get("rl_seconds_total") or 0) / summary["train_seconds_total"],
        "wall_s": summary["wall_seconds"],
    }


def run(variant: str, seed: int, out: Path, extra: list[str]) -> dict[str, Any]:
    """One run, or its kept summary when it already finished."""
    folder = out / "runs" / f"{variant}-seed{seed}"
    done = folder / "summary.json"
    if not done.is_file():
        cfg = Config.load(CONFIG, [f"method={variant}", f"seed={seed}", *extra])
        shutil.rmtree(folder, ignore_errors=True)
        run_experiment(cfg, out_dir=folder, live=False)
        for junk in ("checkpoint.npz", "global_model.pt"):
            (folder / junk).unlink(missing_ok=True)
    return figures(json.loads(done.read_text()))


def table(results: dict[str, dict[int, dict[str, Any]]], command: str) -> str:
    """Per-seed rows, then mean ± sd and the gap to dense FedAvg per variant."""
    keys = list(next(iter(next(iter(results.values())).values())))
    lines = [
        "# Headline: structured fedrlprune against dense FedAvg and the fixed rules",
        "",
        f"Command: `{command}`. Settings: `{CONFIG}`, structured (`prune_mode = auto`).",
        f"Machine: {machine_line()}.",
        "",
        "| variant | seed | " + " | ".join(keys) + " |",
        "| --- | --- |" + " --- |" * len(keys),
    ]
    for variant, seeds in results.items():
        for seed, row in sorted(seeds.items()):
            lines.append(f"| {variant} | {seed} | " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    lines += ["", "| variant | seeds | deployed accuracy, mean ± sd | gap to fedavg (points) "
              "| gain over uniform (points) |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for variant, seeds in results.items():
        accs = [row["deployed"] for row in seeds.values()]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        gap = paired(results.get("fedavg", {}), seeds)
        gain = paired(seeds, results.get("uniform", {}))
        lines.append(
            f"| {variant} | {len(accs)} | {statistics.mean(accs):.4f} ± {sd:.4f} | {gap} | {gain} |"
        )
    return "\n".join(lines) + "\n"


def paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> str:
    """Mean (and per-seed) of a - b in deployed accuracy points, over the seeds both ran."""
    gaps = [100 * (a[s]["deployed"] - b[s]["deployed"]) for s in sorted(a) if s in b]
    if not gaps:
        return "n/a"
    return f"{statistics.mean(gaps):.2f} ({', '.join(f'{g:.2f}' for g in gaps)})"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_finished(out: Path, variants: list[str], seeds: int, command: str) -> None:
    """headline.md and .json from the runs that finished (a benchmark still under way)."""
    kept: dict[str, dict[int, dict[str, Any]]] = {}
    for variant in variants:
        for seed in range(seeds):
            done = out / "runs" / f"{variant}-seed{seed}" / "summary.json"
            if done.is_file():
                kept.setdefault(variant, {})[seed] = figures(json.loads(done.read_text()))
    (out / "headline.json").write_text(json.dumps(kept, indent=2) + "\n")
    (out / "headline.md").write_text(table(kept, command))
    print((out / "headline.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/headline"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--table-only", action="store_true", help="write the table of the finished runs, run none"
    )
    args = parser.parse_args()
    if args.table_only:
        write_finished(args.out, args.variants, args.seeds, "python benchmarks/headline.py")
        return
    command = " ".join(["python benchmarks/headline.py", *sys.argv[1:]])
    results: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in args.variants}
    with ray_session():
        for seed in range(args.seeds):
            for variant in args.variants:
                print(f"headline: {variant} seed {seed} ...", flush=True)
                results[variant][seed] = run(variant, seed, args.out, args.extra)
                kept = {v: s for v, s in results.items() if s}
                (args.out / "headline.json").write_text(json.dumps(kept, indent=2) + "\n")
                (args.out / "headline.md").write_text(table(kept, command))
    print((args.out / "headline.md").read_text())


if __name__ == "__main__":
    main()
