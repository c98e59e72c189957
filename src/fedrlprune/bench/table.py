"""The bench's arithmetic: means over seeds, the split by `flops_kind`, the Pareto fronts.

Pure functions over plain rows (one dict per run, as in results.csv) so the rules that turn runs
into the published tables can be tested without running anything.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedrlprune.devices import TIERS as DEVICE_TIERS

REFERENCE = "fedavg"  # dense: its compact, theoretical and effective FLOPs are one number
TIERS = tuple(DEVICE_TIERS)  # mcu, sbc, phone, laptop
TIER_FIELDS = tuple(f"accuracy_{tier}" for tier in TIERS)


@dataclass(frozen=True)
class View:
    """One front: accuracy against one cost, and the cost's axis label."""

    accuracy: str
    cost: str
    label: str
    higher_is_better: bool = False  # a speed-up is better high, a count better low


@dataclass(frozen=True)
class Kind:
    """One of a setup's two tables: the runs of one `flops_kind`, their columns and fronts.

    Runs are split by kind so that no table, mean or front sets compact FLOPs (what a compact
    model costs) against theoretical ones (what a zero-filled model would cost with sparse
    kernels); the dense reference belongs to both.
    """

    title: str
    subject: str  # the method whose place on the fronts is checked
    columns: tuple[tuple[str, str, str], ...]  # (header, field, format; "±": mean ± sd)
    views: dict[str, View]


_TIER_COLUMNS = tuple((f"acc {t}", f, "{:.4f}") for t, f in zip(TIERS, TIER_FIELDS, strict=True))
KINDS: dict[str, Kind] = {
    "compact": Kind(
        title="Budgeted, structured: compact models (real FLOPs, measured latency)",
        subject="fedrlprune",
        columns=(
            ("deployed acc (mean ± sd)", "deployed_accuracy_mean", "±"),
            *_TIER_COLUMNS,
            ("compact params", "deployed_params", "{:,.0f}"),
            ("compact FLOPs", "deployed_flops", "{:,.0f}"),
            ("memory bytes", "deployed_memory_bytes_mean", "{:,.0f}"),
            ("latency speed-up (measured)", "deployed_latency_speedup", "{:.2f}x"),
            ("budget satisfaction", "budget_satisfaction", "{:.2f}"),
            ("upload MB", "upload_mb", "{:.2f}"),
            ("wall s", "wall_seconds", "{:.1f}"),
        ),
        views={
            "measured latency": View(
                "deployed_accuracy_mean",
                "deployed_latency_speedup",
                "measured latency speed-up over the dense model",
                higher_is_better=True,
            ),
            "compact params": View(
                "deployed_accuracy_mean", "deployed_params", "compact params (log)"
            ),
        },
    ),
    "theoretical": Kind(
        title="Unstructured: zero-filled models (theoretical FLOPs, need sparse kernels)",
        subject="fedrlprune-unstructured",
        columns=(
            ("deployed acc (mean ± sd)", "deployed_accuracy_mean", "±"),
            *_TIER_COLUMNS,
            ("global acc (mean ± sd)", "final_accuracy", "±"),
            ("non-zero params (deployed)", "deployed_params", "{:,.0f}"),
            ("theoretical FLOPs (deployed)", "deployed_flops", "{:,.0f}"),
            ("theoretical FLOPs (global)", "effective_flops", "{:,.0f}"),
            ("memory bytes (sparse storage)", "deployed_memory_bytes_mean", "{:,.0f}"),
            ("budget satisfaction", "budget_satisfaction", "{:.2f}"),
            ("upload MB", "upload_mb", "{:.2f}"),
            ("wall s", "wall_seconds", "{:.1f}"),
        ),
        views={
            "theoretical FLOPs": View(
                "deployed_accuracy_mean", "deployed_flops", "theoretical FLOPs per sample (log)"
            ),
        },
    ),
}


# Figures averaged over a method's finished seeds: those the tables show (the fronts' too).
MEAN_FIELDS = tuple(dict.fromkeys(f for kind in KINDS.values() for _, f, _ in kind.columns))
SD_FIELDS = tuple(  # shown as mean ± sd
    dict.fromkeys(f for kind in KINDS.values() for _, f, fmt in kind.columns if fmt == "±")
)


@dataclass(frozen=True)
class MethodRow:
    """One method of one kind on one setup: runs, finished runs, means over them, spreads."""

    setup: str
    method: str
    flops_kind: str | None  # "compact" or "theoretical"; None for a method this version lacks
    runs: int
    finished: int
    status: str  # "ok" when at least one run finished, else the runs' common status
    means: dict[str, float | None]
    sds: dict[str, float | None]  # sample standard deviation over seeds of SD_FIELDS
    errors: tuple[str, ...]


def as_number(value: Any) -> float | None:
    """A figure from a row (csv text or number); None when empty or not finite."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def aggregate(rows: Iterable[Mapping[str, Any]]) -> list[MethodRow]:
    """Group runs by (setup, method, flops_kind) in first-seen order and summarise each group.

    The kind is part of the key so that no mean mixes compact and theoretical figures. Only runs
    with status "ok" enter the means; a figure missing from every finished run is None. Spreads
    are sample standard deviations (n - 1), None below two runs: one seed says nothing about
    spread.
    """
    groups: dict[tuple[str, str, str | None], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (str(row["setup"]), str(row["method"]), row.get("flops_kind") or None)
        groups.setdefault(key, []).append(row)
    return [_summarise(setup, method, kind, runs) for (setup, method, kind), runs in groups.items()]


def _summarise(
    setup: str, method: str, kind: str | None, runs: Sequence[Mapping[str, Any]]
) -> MethodRow:
    ok = [r for r in runs if r.get("status") == "ok"]
    means = {name: _mean(_numbers(ok, name)) for name in MEAN_FIELDS}
    sds = {name: _sd(_numbers(ok, name)) for name in SD_FIELDS}
    statuses = {str(r.get("status")) for r in runs}
    status = "ok" if ok else (statuses.pop() if len(statuses) == 1 else "failed")
    errors = tuple(dict.fromkeys(str(r["error"]) for r in runs if r.get("error")))
    return MethodRow(setup, method, kind, len(runs), len(ok), status, means, sds, errors)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _sd(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def of_kind(table: Sequence[MethodRow], setup: str, kind: str) -> list[MethodRow]:
    """The rows of one setup's table of `kind`: its runs of that kind, and the reference."""
    return [
        r for r in table if r.setup == setup and (r.flops_kind == kind or r.method == REFERENCE)
    ]


def kinds_present(table: Sequence[MethodRow], setup: str) -> list[str]:
    """The kinds with a method other than the reference (the reference alone: its own kind)."""
    rows = [r for r in table if r.setup == setup and r.flops_kind in KINDS]
    found = {r.flops_kind for r in rows if r.method != REFERENCE}
    found = found or {r.flops_kind for r in rows}
    return [kind for kind in KINDS if kind in found]


def dominators(
    points: Mapping[str, tuple[float | None, float | None]], name: str
) -> list[str] | None:
    """The methods that dominate `name`: strictly higher accuracy and strictly lower cost.

    `points` maps method -> (mean accuracy, mean cost), cost lower-is-better (front_line
    negates a speed-up). Ties do not dominate (equal cost with higher accuracy is not "lower
    cost"). Methods with a missing figure take no part; None when `name` itself has no point,
    so "not measured" is never reported as "on the front".
    """
    acc, cost = points.get(name, (None, None))
    if acc is None or cost is None:
        return None
    return [
        other
        for other, (a, c) in points.items()
        if other != name and a is not None and c is not None and a > acc and c < cost
    ]


def front_line(table: Sequence[MethodRow], setup: str, kind: str) -> str:
    """Is the kind's subject on each of its Pareto fronts, among the runs of that kind only?"""
    spec = KINDS[kind]
    rows = [r for r in of_kind(table, setup, kind) if r.finished]
    parts = []
    for name, view in spec.views.items():
        sign = -1.0 if view.higher_is_better else 1.0
        points = {
            r.method: (r.means[view.accuracy], _signed(r.means[view.cost], sign)) for r in rows
        }
        beaten_by = dominators(points, spec.subject)
        if beaten_by is None:
            parts.append(f"{name}: not measured")
        elif not beaten_by:
            parts.append(f"{name}: **on the front**")
        else:
            parts.append(f"{name}: not on the front (dominated by {', '.join(beaten_by)})")
    return (
        f"Front check ({setup}, {kind} FLOPs): `{spec.subject}`, deployed accuracy against "
        + "; ".join(parts)
        + "."
    )


def _signed(value: float | None, sign: float) -> float | None:
    return None if value is None else sign * value


def markdown_table(table: Sequence[MethodRow], setup: str, kind: str) -> list[str]:
    """One setup's table of one kind; a method with no finished run says why in one cell."""
    columns = KINDS[kind].columns
    headers = ["method", "runs ok", *(h for h, _, _ in columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for row in of_kind(table, setup, kind):
        cells = [f"`{row.method}`", f"{row.finished}/{row.runs}"]
        if not row.finished:
            cells.append(f"{row.status}: {_short(row.errors)}")
            cells += [""] * (len(columns) - 1)
        else:
            cells += [_cell(row, name, fmt) for _, name, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(row: MethodRow, name: str, fmt: str) -> str:
    value = row.means[name]
    if value is None:
        return "n/a"
    if fmt != "±":
        return fmt.format(value)
    sd = row.sds[name]
    return f"{value:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")


def _short(errors: Sequence[str], limit: int = 160) -> str:
    text = errors[0] if errors else "no result"
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Time to accuracy (FedMP's own goal): device-simulated seconds until the global model first
# reaches this share of dense FedAvg's final accuracy on the same setup (mean over its seeds).
TARGET_SHARE = 0.95


def accuracy_target(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """TARGET_SHARE of the reference's mean final accuracy over its finished runs (one setup)."""
    dense = [r for r in rows if r.get("method") == REFERENCE and r.get("status") == "ok"]
    accuracy = _numbers(dense, "final_accuracy")
    return TARGET_SHARE * statistics.fmean(accuracy) if accuracy else None


def elapsed_seconds(rounds: Sequence[Mapping[str, Any]]) -> list[float]:
    """Device-simulated seconds from the start to each round's end (metrics.csv's rows)."""
    return list(itertools.accumulate(as_number(r.get("sim_seconds")) or 0.0 for r in rounds))


def time_to_accuracy(
    rounds: Sequence[Mapping[str, Any]], target: float
) -> tuple[int, float] | None:
    """The first round whose global model reaches `target`, and the device-simulated seconds up
    to its end (each round lasts as long as its slowest accepted client); None if none does.

    `rounds` are metrics.csv's rows in order; a round not evaluated (`eval_every`) has no
    accuracy and only adds its time.
    """
    for row, seconds in zip(rounds, elapsed_seconds(rounds), strict=True):
        accuracy = as_number(row.get("test_accuracy"))
        if accuracy is not None and accuracy >= target:
            return int(row["round"]), seconds
    return None


def time_table(rows: Sequence[Mapping[str, Any]], setup: str) -> list[str]:
    """One setup's time-to-accuracy table from its runs' `sim_seconds_to_target` (runner)."""
    mine = [r for r in rows if r["setup"] == setup and r.get("status") == "ok"]
    target = accuracy_target(mine)
    if target is None:
        return []
    lines = [
        f"**Time to accuracy**: device-simulated seconds until the global model first reaches "
        f"{target:.4f} ({TARGET_SHARE:.0%} of dense `{REFERENCE}`'s final accuracy here); "
        "each round lasts as long as its slowest client, on its device tier's speed and links.",
        "",
        "| method | runs reaching it | device-sim s to it (mean) | rounds to it (mean) "
        "| device-sim s, whole run (mean) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method in dict.fromkeys(str(r["method"]) for r in mine):
        runs = [r for r in mine if r["method"] == method]
        to = _numbers(runs, "sim_seconds_to_target")
        cells = [
            f"{len(to)}/{len(runs)}",
            f"{statistics.fmean(to):,.1f}" if to else "not reached",
            f"{statistics.fmean(_numbers(runs, 'rounds_to_target')):.1f}" if to else "",
            _fmt_mean(_numbers(runs, "sim_seconds"), "{:,.1f}"),
        ]
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return lines


def _fmt_mean(values: Sequence[float], fmt: str) -> str:
    return fmt.format(statistics.fmean(values)) if values else "n/a"


@dataclass(frozen=True)
class SeedGap:
    """One variant over several seeds, against a reference variant run beside it each time."""

    variant: str
    accuracy: tuple[float, ...]  # per seed, in the order the seeds were given
    reference: tuple[float, ...]  # the reference's accuracy, per seed
    gap_points: tuple[float, ...]  # reference minus variant, in accuracy points, per seed
    mean_gap: float
    sd_gap: float | None  # sample standard deviation; None below two seeds
    worst_budget_satisfaction: float | None
    mean_param_reduction: float | None
    mean_flops_reduction: float | None


def gaps_over_seeds(
    seeds: Sequence[Sequence[Mapping[str, Any]]],
    reference: str,
    key: str = "deployed_accuracy_mean",
) -> list[SeedGap]:
    """Each variant's accuracy gap to `reference` (positive: behind it), seed by seed.

    `seeds` holds one list of rows (benchmarks/compare.py's JSON: one row per variant) per seed.
    Gaps are taken within a seed, where data, clients and devices match, then averaged: the
    paired difference, not the difference of two means over unpaired runs. A variant enters
    only when every seed has it and the reference with a finite `key`, so no mean hides a
    missing run.
    """
    if not seeds:
        raise ValueError("no seeds given")
    for i, rows in enumerate(seeds):
        if isinstance(rows, str | Mapping) or not all(
            isinstance(r, Mapping) and "variant" in r for r in rows
        ):
            raise ValueError(f"seed {i} is not a list of rows with a 'variant' each")
    by_seed = [{str(r["variant"]): r for r in rows} for rows in seeds]
    refs = [as_number(rows.get(reference, {}).get(key)) for rows in by_seed]
    reference_acc = tuple(r for r in refs if r is not None)
    if len(reference_acc) < len(refs):
        missing = refs.index(None)
        raise ValueError(f"seed {missing} has no {key} for the reference {reference!r}")
    out = []
    for name in (n for n in by_seed[0] if n != reference):
        runs = [r for r in (rows.get(name) for rows in by_seed) if r]
        accuracy = tuple(a for a in (as_number(r.get(key)) for r in runs) if a is not None)
        if len(accuracy) < len(by_seed):
            continue
        gaps = tuple(100 * (r - a) for r, a in zip(reference_acc, accuracy, strict=True))
        satisfaction = _numbers(runs, "budget_satisfaction")
        params = _numbers(runs, "deployed_param_reduction")
        flops = _numbers(runs, "deployed_flops_reduction")
        out.append(
            SeedGap(
                variant=name,
                accuracy=accuracy,
                reference=reference_acc,
                gap_points=gaps,
                mean_gap=statistics.fmean(gaps),
                sd_gap=statistics.stdev(gaps) if len(gaps) >= 2 else None,
                worst_budget_satisfaction=min(satisfaction) if satisfaction else None,
                mean_param_reduction=statistics.fmean(params) if params else None,
                mean_flops_reduction=statistics.fmean(flops) if flops else None,
            )
        )
    return out


def _numbers(rows: Iterable[Mapping[str, Any]], name: str) -> list[float]:
    """The finite figures `name` of `rows`, skipping rows where it is missing."""
    return [v for v in (as_number(r.get(name)) for r in rows) if v is not None]
