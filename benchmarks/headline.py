"""The headline setting over seeds: structured fedrlprune against every peer at the same budgets.

The FedAvg CNN on Fashion-MNIST (`configs/method-cnn.toml`: 20 clients, five of each device
tier, Dirichlet 0.5, two held out), every client training within its device's limits from
round 1: `fedavg` (the dense reference, over the small devices' limits), `fedrlprune` (the
learned per-layer policy), the two fixed rules on the same pipeline, `uniform` and `lamp`, the
width-scaled peers `heterofl` and `fedrolex`, `fedmp`, and `smallest` (FedAvg of the model the
microcontroller can train, trained by everyone). The table adds each run's share of
client-rounds trained within every limit, the microcontrollers' peak training memory, bytes
per round (both ways) and the device-simulated seconds until the global model reaches 95% of
dense FedAvg's final accuracy at the same seed. Each run keeps its results folder under
`--out`/runs/<variant>-seed<k>;
a run whose `summary.json` is there is not run again, so the benchmark resumes where it stopped
and can span sessions. After every run the table is rewritten:

    .venv/bin/python benchmarks/headline.py --out benchmarks/results/headline-budget

writes `headline.md` and `headline.json`: per seed and variant the deployed models' mean
accuracy on the global test set, per tier, on held-out clients, the measured latency speed-up
and budget satisfaction (checked on the compact models); then mean ± sd over the seeds and each
variant's gap to dense FedAvg, in points. `--variants local heldout_sbc heldout_sbc_local
central monte_carlo` runs issue 14's ablations (`ABLATIONS`, each fedrlprune with one setting
changed) into the same folder; the table shows every finished run there.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any

from fedrlprune.bench.section import machine_line
from fedrlprune.config import Config
from fedrlprune.devices import TIERS
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.fl.simulation import ray_session

CONFIG = "configs/method-cnn.toml"
# Every budget-keeping method at the same budgets, the small-model reference and dense FedAvg.
VARIANTS = ("fedavg", "fedrlprune", "uniform", "lamp", "heterofl", "fedrolex", "fedmp", "smallest")
PEERS: tuple[str, ...] = ()  # run on request only: none today
# The questions the table answers, each a pair of variants run on the same seeds.
PAIRS = (
    ("learned against the one-rate rule", "fedrlprune", "uniform"),
    ("learned against LAMP's rates", "fedrlprune", "lamp"),
    ("learned against HeteroFL's nested widths", "fedrlprune", "heterofl"),
    ("learned against FedRolex's rolling widths", "fedrlprune", "fedrolex"),
    ("federated policy against local agents", "fedrlprune", "local"),
    ("federated against one agent on one client", "fedrlprune", "central"),
    ("bootstrapped against Monte-Carlo targets", "fedrlprune", "monte_carlo"),
    ("a held-out tier: federated against local", "heldout_sbc", "heldout_sbc_local"),
)
# Issue 14's ablations, each a fedrlprune run with one setting changed: the policy trained by
# each client alone (`local`: a held-out client then prunes with the untrained policy) or by
# one client (`central`), Monte-Carlo targets, and a held-out tier (every `sbc` client, and no
# other, trains neither model nor policy) with the federated and the local policy.
ABLATIONS = {
    "local": ["rl_policy=local"],
    "central": ["rl_policy=central"],
    "monte_carlo": ["rl_targets=monte_carlo"],
    "heldout_sbc": ["heldout_tier=sbc", "heldout_clients=0"],
    "heldout_sbc_local": ["heldout_tier=sbc", "heldout_clients=0", "rl_policy=local"],
}


def figures(summary: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, Any]:
    """The figures the table shows, from one run's summary and metrics.csv rows."""
    per_client = summary["per_client"]
    tiers = {
        t: statistics.mean(c["accuracy_global_test"] for c in per_client if c["tier"] == t)
        for t in TIERS
        if any(c["tier"] == t for c in per_client)
    }
    return {
        "deployed": summary["deployed_accuracy_mean"],
        "global": summary["final_accuracy"],  # the model every deployed one is cut from
        "heldout": summary.get("deployed_accuracy_heldout"),
        **{f"acc_{t}": a for t, a in tiers.items()},
        "speedup": summary.get("deployed_latency_speedup"),
        "budget": summary.get("budget_satisfaction"),
        "params_x": summary["dense_params"]
        / statistics.mean(c.get("compact_params", c["nonzero_params"]) for c in per_client),
        "train_budget": summary.get("train_budget_satisfaction"),
        "train_mcu_kib": (summary.get("train_peak_memory_mcu") or math.nan) / 1024,
        "mb_per_round": (summary["upload_bytes_total"] + summary["download_bytes_total"])
        / 1e6
        / summary["rounds_completed"],
        "curve": [(float(r["sim_seconds"]), float(r["test_accuracy"])) for r in rows],
        "rl_updates": summary.get("rl_updates_total"),
        "rl_share": (summary.get("rl_seconds_total") or 0) / summary["train_seconds_total"],
        "wall_s": summary["wall_seconds"],
    }


def run(variant: str, seed: int, out: Path, extra: list[str]) -> None:
    """One run into `out`/runs, unless its summary is already there."""
    folder = out / "runs" / f"{variant}-seed{seed}"
    done = folder / "summary.json"
    if not done.is_file():
        method = "fedrlprune" if variant in ABLATIONS else variant
        changes = ABLATIONS.get(variant, [])
        cfg = Config.load(CONFIG, [f"method={method}", f"seed={seed}", *changes, *extra])
        shutil.rmtree(folder, ignore_errors=True)
        run_experiment(cfg, out_dir=folder, live=False)
        for junk in ("checkpoint.npz", "global_model.pt"):
            (folder / junk).unlink(missing_ok=True)


def table(results: dict[str, dict[int, dict[str, Any]]], command: str) -> str:
    """Per-seed rows, then mean ± sd and the gap to dense FedAvg per variant."""
    keys = list(next(iter(next(iter(results.values())).values())))
    lines = [
        "# Headline: structured fedrlprune against every peer, training within budget",
        "",
        f"Command: {command}. Settings: `{CONFIG}`, structured (`prune_mode = auto`).",
        f"Machine: {machine_line()}.",
        "",
        "| variant | seed | " + " | ".join(keys) + " |",
        "| --- | --- |" + " --- |" * len(keys),
    ]
    for variant, seeds in results.items():
        for seed, row in sorted(seeds.items()):
            lines.append(f"| {variant} | {seed} | " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    lines += ["", "| variant | seeds | deployed accuracy, mean ± sd | held-out clients, mean ± sd "
              "| gap to fedavg (points) | gain over uniform (points) "
              "| deployed - global model (points) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for variant, seeds in results.items():
        deployed = spread([row["deployed"] for row in seeds.values()])
        heldout = spread([row["heldout"] for row in seeds.values() if row["heldout"] is not None])
        gap = paired(results.get("fedavg", {}), seeds)
        gain = paired(seeds, results.get("uniform", {}))
        cut = points([100 * (seeds[k]["deployed"] - seeds[k]["global"]) for k in sorted(seeds)])
        lines.append(
            f"| {variant} | {len(seeds)} | {deployed} | {heldout} | {gap} | {gain} | {cut} |"
        )
    return "\n".join(lines + comparisons(results)) + "\n"


def add_time_to_target(results: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Each run's device-simulated seconds until its global model first reaches 95% of dense
    FedAvg's final accuracy at the same seed (None: never, or no dense run); the curve goes."""
    dense = results.get("fedavg", {})
    for seeds in results.values():
        for seed, row in seeds.items():
            curve = row.pop("curve")
            if seed not in dense:
                row["sim_s_to_95"] = None
                continue
            target = 0.95 * dense[seed]["global"]
            elapsed, row["sim_s_to_95"] = 0.0, None
            for seconds, accuracy in curve:
                elapsed += seconds
                if accuracy >= target:
                    row["sim_s_to_95"] = elapsed
                    break


def spread(values: list[float]) -> str:
    """'mean ± sd' (sd n/a for one value)."""
    if not values:
        return "n/a"
    sd = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "n/a"
    return f"{statistics.mean(values):.4f} ± {sd}"


def paired(
    a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], key: str = "deployed"
) -> str:
    """Mean (and per-seed) of a - b in points of `key`, over the seeds both have it for."""
    both = [s for s in sorted(a) if s in b and None not in (a[s][key], b[s][key])]
    return points([100 * (a[s][key] - b[s][key]) for s in both])


def comparisons(results: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """The issue's questions as paired differences, for the pairs that both have runs."""
    rows = [
        f"| {question} | {a} - {b} | {paired(results[a], results[b])} "
        f"| {paired(results[a], results[b], 'heldout')} |"
        for question, a, b in PAIRS
        if a in results and b in results
    ]
    if not rows:
        return []
    return ["", "| question | a - b | deployed (points, per seed) | held-out clients (points) |",
            "| --- | --- | --- | --- |", *rows]  # fmt: skip


def points(values: list[float]) -> str:
    """'mean (per seed)' of differences in points."""
    if not values:
        return "n/a"
    return f"{statistics.mean(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_finished(
    out: Path, variants: list[str], seeds: int, command: str, echo: bool = True
) -> None:
    """headline.md and .json from the runs of `variants` that finished under `out`."""
    kept: dict[str, dict[int, dict[str, Any]]] = {}
    for variant in variants:
        for seed in range(seeds):
            done = out / "runs" / f"{variant}-seed{seed}" / "summary.json"
            if done.is_file():
                with (done.parent / "metrics.csv").open() as fh:
                    rows = list(csv.DictReader(fh))
                kept.setdefault(variant, {})[seed] = figures(json.loads(done.read_text()), rows)
    add_time_to_target(kept)
    (out / "headline.json").write_text(json.dumps(kept, indent=2) + "\n")
    (out / "headline.md").write_text(table(kept, command))
    if echo:
        print((out / "headline.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/headline-budget"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *PEERS, *ABLATIONS]
    )
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--table-only", action="store_true", help="write the table of the finished runs, run none"
    )
    args = parser.parse_args()
    command = (
        "`python benchmarks/headline.py` (ablations: `python benchmarks/headline.py --variants "
        + " ".join(ABLATIONS)
        + "`)"
    )
    shown = [*VARIANTS, *PEERS, *ABLATIONS]  # the table keeps every finished run in --out
    if args.table_only:
        write_finished(args.out, shown, args.seeds, command)
        return
    with ray_session():
        for seed in range(args.seeds):
            for variant in args.variants:
                print(f"headline: {variant} seed {seed} ...", flush=True)
                run(variant, seed, args.out, args.extra)
                write_finished(args.out, shown, args.seeds, command, echo=False)
    write_finished(args.out, shown, args.seeds, command)


if __name__ == "__main__":
    main()
