"""The bench's plots, one set per setup: where each method lands and how it got there.

`fronts`: every finished run as a point, deployed accuracy against each front check's cost,
one panel per front, each holding the runs of one `flops_kind` only (compact params and
measured latency speed-up for the budgeted runs, theoretical FLOPs for the unstructured ones);
`accuracy-rounds` and `upload-rounds`: each method's per-round figures from its runs'
metrics.csv, averaged over seeds; `accuracy-time`: the same accuracy against the
device-simulated time elapsed (FedMP's goal: accuracy per second of device time).
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

from fedrlprune.bench.table import (
    KINDS,
    REFERENCE,
    View,
    aggregate,
    as_number,
    elapsed_seconds,
    kinds_present,
)

MARKERS = "osD^vP*Xh<>p"


def plot_setup(out: Path, setup: str, runs: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write the four plots of `setup` from its finished runs' rows; return their paths."""
    done = [r for r in runs if r.get("status") == "ok"]
    if not done:
        return []
    methods = list(dict.fromkeys(str(r["method"]) for r in done))
    style = {m: (f"C{i % 10}", MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}
    panels = [
        (kind, view)
        for kind in kinds_present(aggregate(done), setup)
        for view in KINDS[kind].views.values()
    ]
    paths = [_fronts(out / f"{setup}-fronts.png", setup, done, style, panels)]
    per_round = {m: [_with_elapsed(read_rounds(Path(str(r["out_dir"])))) for r in done
                     if r["method"] == m] for m in methods}  # fmt: skip
    for key, label, scale, name, x in (
        ("test_accuracy", "test accuracy (global model)", 1.0, "accuracy-rounds", None),
        ("upload_bytes", "upload per round (MB)", 1e-6, "upload-rounds", None),
        ("test_accuracy", "test accuracy (global model)", 1.0, "accuracy-time", _ELAPSED),
    ):
        path = out / f"{setup}-{name}.png"
        paths.append(_per_round(path, setup, per_round, style, key, label, scale, x))
    return paths


_ELAPSED = "sim_seconds_elapsed"  # device-simulated seconds from the start to a round's end


def _with_elapsed(rounds: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rounds, each with the device-simulated time elapsed at its end."""
    for row, seconds in zip(rounds, elapsed_seconds(rounds), strict=True):
        row[_ELAPSED] = str(seconds)
    return rounds


def _fronts(
    path: Path,
    setup: str,
    runs: Sequence[Mapping[str, Any]],
    style: Mapping[str, tuple[str, str]],
    panels: Sequence[tuple[str, View]],
) -> Path:
    """One panel per front; a panel plots only the runs of its kind (and the reference)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (kind, view) in zip(axes[0], panels, strict=True):
        mine = [r for r in runs if r.get("flops_kind") == kind or r["method"] == REFERENCE]
        plotted = False
        for method, (color, marker) in style.items():
            points = [
                (as_number(r.get(view.cost)), as_number(r.get(view.accuracy)))
                for r in mine
                if r["method"] == method
            ]
            xs = [x for x, y in points if x is not None and y is not None and x > 0]
            ys = [y for x, y in points if x is not None and y is not None and x > 0]
            if xs:
                ax.scatter(xs, ys, color=color, marker=marker, label=method, alpha=0.8)
            plotted = plotted or bool(xs)
        if plotted and not view.higher_is_better:  # counts span decades; a log axis needs > 0
            ax.set_xscale("log")
        ax.set_xlabel(view.label)
        ax.set_ylabel("deployed accuracy (global test set)")
        ax.set_title(f"{setup}: {kind} FLOPs runs", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if plotted:
            ax.legend(fontsize=7, loc="best")
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
    x_key: str | None = None,
) -> Path:
    """`key` per round, mean over seeds, against the round or the mean of `x_key` there."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, runs in per_round.items():
        rounds, ys = mean_by_round(runs, key)
        xs: list[float] = list(map(float, rounds))
        if x_key is not None:  # the rounds that have `key`, placed at their mean elapsed time
            at = dict(zip(*mean_by_round(runs, x_key), strict=True))
            xs = [at[r] for r in rounds]
        color, marker = style[method]
        ax.plot(xs, [y * scale for y in ys], color=color, marker=marker, markersize=3,
                label=method)  # fmt: skip
    ax.set_xlabel("round" if x_key is None else "device-simulated seconds elapsed")
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


def read_rounds(run_dir: Path) -> list[dict[str, str]]:
    """A run's metrics.csv rows (empty when it has none)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
