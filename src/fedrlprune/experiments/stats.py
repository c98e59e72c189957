"""The figures of a run as pure functions: one round's metrics.csv row, and summary.json.

`federation/server.py` hands over what a round or the deployment produced; nothing here knows
Flower or a method. Means skip what could not be measured (NaN), so a client that dropped out
does not turn a mean into NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrlprune.devices import TIERS, Budget
from fedrlprune.federation.messages import Reply
from fedrlprune.pruning.metrics import ModelCost
from fedrlprune.training_plan import TrainingFootprint

Drops = dict[int, tuple[str, str]]  # client -> (reason: error, timeout or refused; detail)


@dataclass(frozen=True)
class RoundOutcome:
    """What one round did, as the server saw it."""

    round: int
    chosen: list[int]
    accepted: dict[int, Reply]
    lost: Drops  # failed, timed out or refused
    updated: bool  # enough replies to update the global model
    download_bytes: dict[int, int]  # per chosen client, every record it was sent
    sim_seconds: float  # the slowest accepted client's device-simulated round
    sim_joules: float  # every accepted client's device-simulated energy
    test_loss: float  # the global model on the global test set (NaN when not evaluated)
    test_accuracy: float
    cost: ModelCost  # the global model under the global mask
    sparsity: float  # share of zero weights over the pruned layers
    training: dict[int, TrainingFootprint] = field(default_factory=dict)  # per accepted client
    tiers: dict[int, str] = field(default_factory=dict)  # device tier of each accepted client
    limits: dict[int, Budget] = field(default_factory=dict)  # and its limits


def round_row(out: RoundOutcome, dense_upload: int, seconds: float) -> dict[str, Any]:
    """The metrics.csv row of one round (`dense_upload`: bytes of one dense model)."""
    metrics = [r.metrics for r in out.accepted.values()]
    weights = [float(m["num-examples"]) for m in metrics]
    upload = sum(r.upload_bytes for r in out.accepted.values())
    return {
        "round": out.round,
        "clients_selected": len(out.chosen),
        "clients_replied": len(out.accepted),
        "clients_failed": len(out.chosen) - len(out.accepted),
        "clients_dropped": ";".join(str(c) for c in sorted(out.lost)),
        "global_updated": int(out.updated),
        "train_loss": weighted_mean([float(m["train-loss"]) for m in metrics], weights),
        "test_loss": out.test_loss,
        "test_accuracy": out.test_accuracy,
        "sparsity": out.sparsity,
        "nonzero_params": out.cost.nonzero_params,
        "effective_flops": out.cost.effective_flops,
        "upload_bytes": upload,
        "upload_vs_dense": upload / (dense_upload * max(len(out.accepted), 1)),
        "download_bytes": sum(out.download_bytes.values()),
        "round_seconds": seconds,
        "client_train_seconds_mean": mean([float(m["train-seconds"]) for m in metrics]),
        "clients_compact": sum(int(m.get("compact-training", 0)) for m in metrics),
        "client_compact_seconds_mean": mean(
            [float(m["compact-seconds"]) for m in metrics if m.get("compact-training")]
        ),
        "rl_seconds_mean": mean([float(m["rl-seconds"]) for m in metrics if "rl-seconds" in m]),
        "rl_episodes": sum(int(m.get("rl-episodes", 0)) for m in metrics),
        "rl_updates": sum(int(m.get("rl-updates", 0)) for m in metrics),
        "rl_evaluations": sum(int(m.get("rl-evaluations", 0)) for m in metrics),
        "sim_seconds": out.sim_seconds,
        "sim_joules": out.sim_joules,
        **training_columns(out),
    }


def training_columns(out: RoundOutcome) -> dict[str, Any]:
    """How the round's training fitted the devices: the client-rounds within every limit, and
    per tier the worst footprint-to-limit ratio (above 1: over a limit) and the peak memory of
    one training step (NaN for a tier without an accepted client this round)."""
    ratio = {c: fp.ratio(out.limits[c]) for c, fp in out.training.items()}
    row: dict[str, Any] = {"train_within_clients": sum(r <= 1.0 for r in ratio.values())}
    for tier in TIERS:
        mine = [c for c in ratio if out.tiers[c] == tier]
        row[f"train_ratio_{tier}"] = max((ratio[c] for c in mine), default=math.nan)
        row[f"train_memory_{tier}"] = max(
            (out.training[c].plan.memory.total for c in mine), default=math.nan
        )
    return row


def layer_rates(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-layer rates a reply reports (`rate/<layer>` metrics), for rates.csv."""
    return {k.removeprefix("rate/"): float(v) for k, v in metrics.items() if k.startswith("rate/")}


def round_line(row: dict[str, Any]) -> str:
    """One round in a few words, for the progress display."""
    acc = row["test_accuracy"]
    shown = "" if np.isnan(acc) else f"acc {acc:.4f}  "
    return f"{shown}up {row['upload_bytes'] / 1e6:.2f} MB  {row['round_seconds']:.1f}s"


def summary(
    rows: list[dict[str, Any]],
    per_client: list[dict[str, Any]],
    cost: ModelCost,
    pruned_density: float,
    failed: set[int],
) -> dict[str, Any]:
    """summary.json's figures from the rounds' rows and the deployed clients' entries;
    `cost` and `pruned_density` are the global model's under the global mask."""
    accs = [r["test_accuracy"] for r in rows if not np.isnan(r["test_accuracy"])]
    local = [c["accuracy_local_test"] for c in per_client]
    deployed_params = mean([c["nonzero_params"] for c in per_client])
    deployed_flops = mean([c["effective_flops"] for c in per_client])
    return {
        "rounds_completed": len(rows),
        "final_accuracy": accs[-1],
        "best_accuracy": max(accs),
        "client_accuracy_mean": mean(local),
        "client_accuracy_worst10": worst_decile(local),
        "dense_params": cost.dense_params,
        "nonzero_params": cost.nonzero_params,
        "param_reduction": cost.param_reduction,
        "dense_flops": cost.dense_flops,
        "effective_flops": cost.effective_flops,
        "flops_reduction": cost.flops_reduction,
        "pruned_layers_density": pruned_density,
        "layer_density": cost.layer_density,
        "deployed_accuracy_mean": mean([c["accuracy_global_test"] for c in per_client]),
        "deployed_nonzero_params_mean": deployed_params,
        "deployed_effective_flops_mean": deployed_flops,
        "deployed_param_reduction": cost.dense_params / deployed_params,
        "deployed_flops_reduction": cost.dense_flops / deployed_flops,
        "deployed_memory_bytes_mean": mean([c["memory_bytes"] for c in per_client]),
        "budget_satisfaction": mean([float(c["within_budget"]) for c in per_client]),
        "deployed_latency_speedup": mean([c["latency_speedup"] for c in per_client]),
        **groups(per_client),
        **training_summary(rows),
        **totals(rows),
        "failed_clients": sorted(
            failed | {c["client"] for c in per_client if np.isnan(c["accuracy_local_test"])}
        ),
        "per_client": per_client,
    }


def training_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`train_budget_satisfaction`: the share of accepted client-rounds whose training fitted
    every limit of the device (parameters, FLOPs per sample, memory of one step); per tier the
    peak memory of one training step and the worst footprint-to-limit ratio over the run."""
    replied = sum(r["clients_replied"] for r in rows)
    within = sum(r.get("train_within_clients", 0) for r in rows)
    out: dict[str, Any] = {"train_budget_satisfaction": within / replied if replied else math.nan}
    for tier in TIERS:
        memory = [r[f"train_memory_{tier}"] for r in rows if f"train_memory_{tier}" in r]
        ratio = [r[f"train_ratio_{tier}"] for r in rows if f"train_ratio_{tier}" in r]
        out[f"train_peak_memory_{tier}"] = float(np.nanmax(memory)) if _some(memory) else None
        out[f"train_worst_ratio_{tier}"] = float(np.nanmax(ratio)) if _some(ratio) else None
    return out


def _some(values: list[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Sums over the rounds: time, the agent's work, bytes and simulated device cost."""
    return {
        "train_seconds_total": sum(
            r["client_train_seconds_mean"] * r["clients_replied"]
            for r in rows
            if r["clients_replied"]
        ),
        "rl_seconds_total": sum(
            r["rl_seconds_mean"] * r["clients_replied"]
            for r in rows
            if not np.isnan(r["rl_seconds_mean"])
        ),
        "rl_episodes_total": sum(r["rl_episodes"] for r in rows),
        "rl_updates_total": sum(r.get("rl_updates", 0) for r in rows),
        "rl_evaluations_total": sum(r["rl_evaluations"] for r in rows),
        "upload_bytes_total": sum(r["upload_bytes"] for r in rows),
        "upload_vs_dense_last_round": rows[-1]["upload_vs_dense"],
        "download_bytes_total": sum(r["download_bytes"] for r in rows),
        "sim_seconds_total": sum(r["sim_seconds"] for r in rows),
        "sim_joules_total": sum(r["sim_joules"] for r in rows),
    }


def groups(per_client: list[dict[str, Any]]) -> dict[str, float]:
    """Budget satisfaction and deployed accuracy of the clients that trained the policy and of
    the held-out ones, side by side: the generalisation the universal policy claims."""
    out = {}
    for name, heldout in (("trained", False), ("heldout", True)):
        group = [c for c in per_client if c["heldout"] == heldout]
        out[f"budget_satisfaction_{name}"] = mean([float(c["within_budget"]) for c in group])
        out[f"deployed_accuracy_{name}"] = mean([c["accuracy_global_test"] for c in group])
    return out


def short_reason(detail: str, limit: int = 300) -> str:
    """The line of an error report that says what went wrong: the last non-empty line of a
    traceback (the exception and its message), without the quoting a remote engine adds."""
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip(" '\"<>")]
    line = lines[-1].strip(" '\"<>") if lines else "no reason given"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def failure_line(rnd: int, chosen: int, lost: Drops) -> str:
    """One log line for the clients a round lost: how many, why, and the first one's cause."""
    kinds = sorted({reason for reason, _ in lost.values()})
    counts = ", ".join(f"{sum(r == k for r, _ in lost.values())} {k}" for k in kinds)
    cid, (_, detail) = min(lost.items())
    return (
        f"round {rnd}: {len(lost)} of {chosen} clients lost ({counts}); "
        f"first, client {cid}: {short_reason(detail)}"
    )


def failed_run(
    rows: list[dict[str, Any]],
    dropped: dict[str, list[dict[str, Any]]],
    limit: int,
    finished: bool = False,
) -> str | None:
    """Why a run cannot give a result, or None: its last `limit` rounds (0: never stop) accepted
    no client's reply, or (`finished`) no round ever did. `dropped`: summary.json's entries."""
    replied = [int(r["clients_replied"]) for r in rows]
    stuck = limit > 0 and len(replied) >= limit and not any(replied[-limit:])
    if not (stuck or (finished and not any(replied))):
        return None
    last = int(rows[-1]["round"]) if rows else 0
    entries = dropped.get(str(last), [])
    cause = (
        f"round {last}, client {entries[0]['client']}: {short_reason(entries[0]['detail'])}"
        if entries
        else "no client was selected"
    )
    what = f"the last {limit} rounds" if stuck else "any round"
    return (
        f"no client's update was accepted in {what} ({cause}). Fix that cause (summary.json's "
        "`dropped_clients` holds every client's full error); if clients are only slow, raise "
        "`round_timeout`; `max_failed_rounds` = 0 never stops a run"
    )


def drop_entries(drops: Drops) -> list[dict[str, Any]]:
    """Dropped clients as summary.json lists them: client, reason, detail, in client order."""
    return [
        {"client": cid, "reason": reason, "detail": detail}
        for cid, (reason, detail) in sorted(drops.items())
    ]


def weighted_mean(values: list[float], weights: list[float]) -> float:
    return float(np.average(values, weights=weights)) if values else float("nan")


def mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def worst_decile(values: list[float]) -> float:
    """Mean accuracy of the worst 10% of clients (at least one): the clients a mean hides."""
    finite = sorted(v for v in values if np.isfinite(v))
    if not finite:
        return float("nan")
    return float(np.mean(finite[: max(1, len(finite) // 10)]))
