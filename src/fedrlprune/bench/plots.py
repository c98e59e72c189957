"""The bench's plots, one set per setup: where each method lands and how it got there.

`accuracy-flops`: every finished run as a point, accuracy against effective FLOPs, for the
global model and for the clients' deployed models (the two views of the front check);
`accuracy-rounds` and `upload-rounds`: each method's per-round figures from its runs'
metrics.csv, averaged over seeds.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt

from fedrlprune.bench.table import FRONT_VIEWS, as_number

MARKERS = "osD^vP*Xh<>p"


def plot_setup(out: Path, setup: str, runs: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write the three plots of `setup` from its finished runs' rows; return their paths."""
    done = [r for r in runs if r.get("status") == "ok"]
    if not done:
        return []
    methods = list(dict.fromkeys(str(r["method"]) for r in done))
    style = {m: (f"C{i % 10}", MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}
    paths = [_accuracy_flops(out / f"{setup}-accuracy-flops.png", setup, done, style)]
    per_round = {m: [_rounds(Path(str(r["out_dir"]))) for r in done if r["method"] == m]
                 for m in methods}  # fmt: skip
    for key, label, scale, name in (
        ("test_accuracy", "test accuracy (global model)", 1.0, "accuracy-rounds"),
        ("upload_bytes", "upload per round (MB)", 1e-6, "upload-rounds"),
    ):
        paths.append(
            _per_round(out / f"{setup}-{name}.png", setup, per_round, style, key, label, scale)
        )
    return paths


def _accuracy_flops(
    path: Path,
    setup: str,
    runs: Sequence[Mapping[str, Any]],
    style: Mapping[str, tuple[str, str]],
) -> Path:
    fig, axes = plt.subplots(1, len(FRONT_VIEWS), figsize=(11, 4.2), sharey=False)
    for ax, (view, (acc_key, flops_key)) in zip(axes, FRONT_VIEWS.items(), strict=True):
        plotted = False
        for method, (color, marker) in style.items():
            points = [
                (as_number(r.get(flops_key)), as_number(r.get(acc_key)))
                for r in runs
                if r["method"] == method
            ]
            xs = [x for x, y in points if x is not None and y is not None and x > 0]
            ys = [y for x, y in points if x is not None and y is not None and x > 0]
            ax.scatter(xs, ys, color=color, marker=marker, label=method, alpha=0.8)
            plotted = plotted or bool(xs)
        if plotted:  # a log axis needs a positive value
            ax.set_xscale("log")
        ax.set_xlabel("effective FLOPs per sample (log)")
        ax.set_ylabel("accuracy" if view == "global model" else "clients' mean accuracy")
        ax.set_title(f"{setup}: {view}")
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_round(
    path: Path,
    setup: str,
    per_round: Mapping[str, list[list[dict[str, str]]]],
    style: Mapping[str, tuple[str, str]],
    key: str,
    label: str,
    scale: float,
) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, runs in per_round.items():
        xs, ys = mean_by_round(runs, key)
        color, marker = style[method]
        ax.plot(xs, [y * scale for y in ys], color=color, marker=marker, markersize=3,
                label=method)  # fmt: skip
    ax.set_xlabel("round")
    ax.set_ylabel(label)
    ax.set_title(f"{setup}: mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_by_round(
    runs: Sequence[Sequence[Mapping[str, str]]], key: str
) -> tuple[list[int], list[float]]:
    """Mean of `key` per round over the runs that measured it that round (rounds in order)."""
    sums: dict[int, list[float]] = {}
    for rows in runs:
        for row in rows:
            value = as_number(row.get(key))
            if value is not None:
                sums.setdefault(int(row["round"]), []).append(value)
    rounds = sorted(sums)
    return rounds, [math.fsum(sums[r]) / len(sums[r]) for r in rounds]


def _rounds(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
