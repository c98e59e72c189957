"""What each device tier got, as the run's last lines say it, beside a committed dense run.

The per-client figures of `summary.json` are per device; a user reads them per tier: how much
smaller and faster the tier's model is and how accurate, next to the dense model trained with
the same settings. The dense figure comes from a committed run (`DENSE_RUNS`), matched on the
settings that shape dense training, so it is never a number typed by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedrlprune.config import read_toml
from fedrlprune.devices import TIERS

# Committed dense FedAvg runs (a results folder's summary.json and config.toml each).
DENSE_RUNS = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "dense"
# The settings that shape a dense FedAvg run: two runs that agree on these train the same model.
TRAINING_KEYS = (
    "dataset", "model", "clients", "rounds", "fraction", "local_epochs", "batch_size", "lr",
    "lr_schedule", "momentum", "weight_decay", "partition", "alpha", "classes_per_client",
    "val_fraction", "test_fraction", "data_fraction", "seed", "heldout_clients",
    "max_grad_norm",
)  # fmt: skip


TRAINING_LEGEND = (
    "training: peak memory of one training step on the tier; worst: its largest footprint-to-"
    "limit ratio over the rounds (parameters, FLOPs, memory; `over`: it trained beyond a limit)"
)
NOISE_LEGEND = (
    "~ latency within the timing noise: the dense and deployed medians differ by less than "
    "their interquartile ranges together, so another run may reverse it"
)


def tier_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Means over each tier's clients of what its deployed model costs and scores."""
    per_client = summary.get("per_client") or []
    rows = []
    for tier in [t for t in TIERS if any(c["tier"] == t for c in per_client)]:
        group = [c for c in per_client if c["tier"] == tier]
        params = [c.get("compact_params", c["nonzero_params"]) for c in group]
        flops = [c.get("compact_flops", c["effective_flops"]) for c in group]
        rows.append(
            {
                "tier": tier,
                "clients": len(group),
                "params": float(np.mean(params)),
                "flops": float(np.mean(flops)),
                "memory_bytes": _mean(group, "memory_bytes"),
                "latency_speedup": _mean(group, "latency_speedup"),
                "latency_noise": any(c.get("latency_within_noise") for c in group),
                "accuracy": float(np.mean([c["accuracy_global_test"] for c in group])),
                "within_budget": sum(bool(c["within_budget"]) for c in group),
                "train_memory_bytes": summary.get(f"train_peak_memory_{tier}"),
                "train_ratio": summary.get(f"train_worst_ratio_{tier}"),
            }
        )
    return rows


def dense_reference(config: Mapping[str, Any], runs: Path = DENSE_RUNS) -> tuple[float, str] | None:
    """(final accuracy, folder) of a committed dense FedAvg run with the same training settings
    as `config`; None when none is committed."""
    if not runs.is_dir():
        return None
    want = {k: config.get(k) for k in TRAINING_KEYS}
    for folder in sorted(p for p in runs.iterdir() if (p / "summary.json").is_file()):
        cfg = read_toml(folder / "config.toml")
        if {k: cfg.get(k) for k in TRAINING_KEYS} == want:
            summary = json.loads((folder / "summary.json").read_text())
            return float(summary["final_accuracy"]), str(folder.relative_to(runs.parents[2]))
    return None


def tier_lines(summary: Mapping[str, Any], dense: tuple[float, str] | None) -> list[str]:
    """The run's closing lines: one per tier, then the dense reference (or why there is none)."""
    rows = tier_rows(summary)
    if not rows:
        return []
    kind = summary.get("flops_kind", "theoretical")
    dense_params, dense_flops = summary["dense_params"], summary["dense_flops"]
    lines = [f"{'tier':<7} {'params':>16} {f'FLOPs ({kind})':>22} {'memory':>9} "
             f"{'latency':>8} {'accuracy':>8}  in budget  {'training':>9} "
             f"{'worst':>6}"]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r['tier']:<7} {_fewer(r['params'], dense_params):>16} "
            f"{_fewer(r['flops'], dense_flops):>22} {r['memory_bytes'] / 1024:>6.0f} KB "
            f"{_speedup(r['latency_speedup'], r['latency_noise']):>8} {r['accuracy']:>8.4f}  "
            f"{str(r['within_budget']) + '/' + str(r['clients']):>9}  {_training(r)}"
        )
    if any(r["latency_noise"] for r in rows):
        lines.append(NOISE_LEGEND)
    lines.append(TRAINING_LEGEND)
    if dense is None:
        lines.append("dense FedAvg with these settings: no committed run to compare with")
    else:
        lines.append(f"dense FedAvg with these settings: {dense[0]:.4f} ({dense[1]})")
    return lines


def _training(row: Mapping[str, Any]) -> str:
    """The tier's peak memory of one training step and its worst footprint-to-limit ratio."""
    memory, ratio = row["train_memory_bytes"], row["train_ratio"]
    if memory is None or ratio is None:
        return f"{'n/a':>9} {'n/a':>6}"
    return f"{memory / 1024:>6.0f} KB {ratio:>5.2f}x{' over' if ratio > 1 else ''}"


def _mean(group: list[dict[str, Any]], key: str) -> float:
    """Mean of a figure over clients; NaN where it was not measured (null in summary.json)."""
    values = [c.get(key) for c in group]
    return float(np.mean([math.nan if v is None else v for v in values]))


def _fewer(value: float, dense: float) -> str:
    return f"{value:,.0f} ({dense / max(value, 1):.1f}x)"


def _speedup(value: float, noisy: bool) -> str:
    """The measured speed-up; `~` when it is within the timing noise (latency_fields)."""
    return "n/a" if math.isnan(value) else f"{'~' if noisy else ''}{value:.2f}x"
