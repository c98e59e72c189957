"""report.md with plots: what a person reads after a run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt

from fedrlprune.devices import TIERS

THEORETICAL = " (theoretical: needs sparse kernels)"  # unstructured FLOPs: zeros still computed
SUMMARY_ROWS = (
    ("final_accuracy", "final accuracy (global model, global test set)", "{:.4f}"),
    ("best_accuracy", "best accuracy over rounds", "{:.4f}"),
    ("client_accuracy_mean", "clients' accuracy on their own test split, mean", "{:.4f}"),
    ("client_accuracy_worst10", "clients' accuracy, mean of the worst 10%", "{:.4f}"),
    ("dense_params", "parameters, dense", "{:,}"),
    ("nonzero_params", "parameters, non-zero", "{:,}"),
    ("param_reduction", "parameter reduction (dense / non-zero)", "{:.2f}x"),
    ("dense_flops", "FLOPs per sample, dense", "{:,}"),
    ("effective_flops", "FLOPs per sample, effective", "{:,}"),
    ("flops_reduction", "FLOPs reduction (dense / effective)", "{:.2f}x"),
    ("deployed_accuracy_mean", "clients' deployed models, global test accuracy, mean", "{:.4f}"),
    ("deployed_param_reduction", "clients' deployed models, parameter reduction", "{:.2f}x"),
    ("deployed_flops_reduction", "clients' deployed models, FLOPs reduction", "{:.2f}x"),
    (
        "deployed_memory_bytes_mean",
        "clients' deployed models, memory bytes (weights + peak activations), mean",
        "{:,.0f}",
    ),
    ("budget_satisfaction", "share of clients inside their device budget", "{:.2f}"),
    ("upload_bytes_total", "upload, bytes in all", "{:,}"),
    ("download_bytes_total", "download, bytes in all", "{:,}"),
    ("rounds_completed", "rounds completed", "{}"),
    ("wall_seconds", "wall time, seconds", "{:.1f}"),
)


def write_report(
    out_dir: Path,
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    rates: Sequence[dict[str, Any]] = (),
) -> None:
    """Plots of accuracy, bytes and pruning rates per round, and a page that shows them."""
    plots = []
    if rows:
        plots.append(_plot_accuracy(out_dir, rows))
        plots.append(_plot_bytes(out_dir, rows))
    if rates:
        plots.append(_plot_rates(out_dir, rates))
    title = f"{summary['method']} on {summary['dataset']} with {summary['model']}"
    lines = [
        f"# {title}",
        "",
        f"{summary['clients']} clients, {summary['rounds_completed']} rounds, "
        f"seed {summary['seed']}. Configuration: `config.toml`; per round: `metrics.csv`.",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    theoretical = summary.get("flops_kind") == "theoretical"
    for key, label, fmt in SUMMARY_ROWS:
        value = summary.get(key)
        shown = "n/a" if value is None else fmt.format(value)
        flops = theoretical and "flops" in key and key != "dense_flops"
        lines.append(f"| {label}{THEORETICAL if flops else ''} | {shown} |")
    lines.append("")
    lines += _tier_table(summary.get("per_client") or [], theoretical)
    failed = summary.get("failed_clients") or []
    if failed:
        lines += [
            f"Clients dropped at least once: {', '.join(map(str, failed))} (when and why: "
            "`dropped_clients` in `summary.json`).",
            "",
        ]
    kept = summary.get("rounds_without_update") or []
    if kept:
        lines += [
            f"Rounds with fewer accepted replies than `min_clients`, which kept the previous "
            f"model and policy: {', '.join(map(str, kept))}.",
            "",
        ]
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    (out_dir / "report.md").write_text("\n".join(lines))


def _tier_table(per_client: Sequence[dict[str, Any]], theoretical: bool) -> list[str]:
    """Clients' deployed models by device tier: what each tier runs and whether it fits
    (parameters, FLOPs and memory bytes, as `within_budget` checks them)."""
    if not per_client:
        return []
    flops = f"effective FLOPs{THEORETICAL if theoretical else ''}"
    lines = [
        "Deployed models by device tier (means over the tier's clients):",
        "",
        f"| tier | clients | held out | non-zero params | {flops} | memory bytes | inside budget "
        "| accuracy (global test) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = [t for t in TIERS if any(c["tier"] == t for c in per_client)]
    for tier in names:
        group = [c for c in per_client if c["tier"] == tier]
        lines.append(
            f"| {tier} | {len(group)} | {sum(bool(c.get('heldout')) for c in group)} "
            f"| {np.mean([c['nonzero_params'] for c in group]):,.0f} "
            f"| {np.mean([c['effective_flops'] for c in group]):,.0f} "
            f"| {np.mean([c.get('memory_bytes', np.nan) for c in group]):,.0f} "
            f"| {sum(bool(c['within_budget']) for c in group)}/{len(group)} "
            f"| {np.mean([c['accuracy_global_test'] for c in group]):.4f} |"
        )
    return [*lines, ""]


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            xs.append(int(row["round"]))
            ys.append(float(value))
    return xs, ys


def _plot_accuracy(out_dir: Path, rows: Sequence[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = _series(rows, "test_accuracy")
    ax.plot(xs, ys, marker="o", markersize=3)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (global model)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=120)
    plt.close(fig)
    return "accuracy.png"


def _plot_bytes(out_dir: Path, rows: Sequence[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("upload_bytes", "upload"), ("download_bytes", "download")):
        xs, ys = _series(rows, key)
        ax.plot(xs, [y / 1e6 for y in ys], marker="o", markersize=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("MB per round (all clients)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "bytes.png", dpi=120)
    plt.close(fig)
    return "bytes.png"


def _plot_rates(out_dir: Path, rates: Sequence[dict[str, Any]]) -> str:
    """One panel per layer: the mean rate each device tier chose, round by round."""
    layers = list(dict.fromkeys(r["layer"] for r in rates))
    seen = {r["tier"] for r in rates}
    tiers = [t for t in TIERS if t in seen] + sorted(seen - set(TIERS))  # weakest first
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), sharey=True)
    for ax, layer in zip(np.atleast_1d(axes), layers, strict=True):
        for tier in tiers:
            picked = [r for r in rates if r["layer"] == layer and r["tier"] == tier]
            rounds = sorted({r["round"] for r in picked})
            means = [np.mean([r["rate"] for r in picked if r["round"] == x]) for x in rounds]
            ax.plot(rounds, means, marker="o", markersize=3, label=tier)
        ax.set_title(layer)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("pruning rate (mean over the tier)")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "rates.png", dpi=120)
    plt.close(fig)
    return "rates.png"
