"""The bench's arithmetic: per-method aggregation over seeds and the Pareto-front check.

Pure functions over plain rows (one dict per run, as in results.csv) so the rules that turn runs
into the published table can be tested without running anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Figures averaged over a method's finished seeds; the table shows them in this order.
MEAN_FIELDS = (
    "final_accuracy",
    "client_accuracy_mean",
    "client_accuracy_worst10",
    "nonzero_params",
    "effective_flops",
    "deployed_nonzero_params",
    "deployed_effective_flops",
    "upload_mb",
    "download_mb",
    "wall_seconds",
    "sim_seconds",
    "sim_joules",
    "budget_satisfaction",
)

# The two accuracy-against-FLOPs views a front is computed for: the global model against its
# own effective FLOPs, and the clients' deployed models (each on its own test split) against
# theirs. They pair figures measured on the same models, so neither mixes two different ones.
FRONT_VIEWS: dict[str, tuple[str, str]] = {
    "global model": ("final_accuracy", "effective_flops"),
    "deployed models": ("client_accuracy_mean", "deployed_effective_flops"),
}


@dataclass(frozen=True)
class MethodRow:
    """One method on one setup: how many runs finished, means over them, and the spread."""

    setup: str
    method: str
    runs: int
    finished: int
    status: str  # "ok" when at least one run finished, else the runs' common status
    means: dict[str, float | None]
    accuracy_sd: float | None  # sample standard deviation of final_accuracy over seeds
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
    """Group runs by (setup, method) in first-seen order and summarise each group.

    Only runs with status "ok" enter the means; a figure missing from every finished run is
    None. The accuracy spread is the sample standard deviation (n - 1), None below two runs:
    one seed says nothing about spread.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["setup"]), str(row["method"])), []).append(row)
    table = []
    for (setup, method), runs in groups.items():
        ok = [r for r in runs if r.get("status") == "ok"]
        means: dict[str, float | None] = {}
        for name in MEAN_FIELDS:
            values = _numbers(ok, name)
            means[name] = statistics.fmean(values) if values else None
        accs = _numbers(ok, "final_accuracy")
        statuses = {str(r.get("status")) for r in runs}
        status = "ok" if ok else (statuses.pop() if len(statuses) == 1 else "failed")
        errors = tuple(dict.fromkeys(str(r["error"]) for r in runs if r.get("error")))
        table.append(
            MethodRow(
                setup=setup,
                method=method,
                runs=len(runs),
                finished=len(ok),
                status=status,
                means=means,
                accuracy_sd=statistics.stdev(accs) if len(accs) >= 2 else None,
                errors=errors,
            )
        )
    return table


def dominators(
    points: Mapping[str, tuple[float | None, float | None]], name: str
) -> list[str] | None:
    """The methods that dominate `name`: strictly higher accuracy and strictly fewer FLOPs.

    `points` maps method -> (mean accuracy, mean effective FLOPs). Ties do not dominate (equal
    FLOPs with higher accuracy is not "fewer FLOPs"). Methods with a missing figure take no part;
    None when `name` itself has no point, so "not measured" is never reported as "on the front".
    """
    acc, flops = points.get(name, (None, None))
    if acc is None or flops is None:
        return None
    return [
        other
        for other, (a, f) in points.items()
        if other != name and a is not None and f is not None and a > acc and f < flops
    ]


def front_line(table: Sequence[MethodRow], setup: str, method: str = "fedrlprune") -> str:
    """One line per setup: is `method` on the accuracy-against-FLOPs Pareto front, per view?"""
    rows = [r for r in table if r.setup == setup and r.finished]
    parts = []
    for view, (acc_key, flops_key) in FRONT_VIEWS.items():
        points = {r.method: (r.means[acc_key], r.means[flops_key]) for r in rows}
        beaten_by = dominators(points, method)
        if beaten_by is None:
            parts.append(f"{view}: not measured")
        elif not beaten_by:
            parts.append(f"{view}: **on the front**")
        else:
            parts.append(f"{view}: not on the front (dominated by {', '.join(beaten_by)})")
    return f"Front check ({setup}): `{method}` — " + "; ".join(parts) + "."


# (header, field or special, format) of table.md's per-setup table.
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("accuracy (mean ± sd)", "accuracy", ""),
    ("clients: mean acc", "client_accuracy_mean", "{:.4f}"),
    ("clients: worst-10% acc", "client_accuracy_worst10", "{:.4f}"),
    ("non-zero params (global)", "nonzero_params", "{:,.0f}"),
    ("eff. FLOPs (global)", "effective_flops", "{:,.0f}"),
    ("non-zero params (deployed)", "deployed_nonzero_params", "{:,.0f}"),
    ("eff. FLOPs (deployed)", "deployed_effective_flops", "{:,.0f}"),
    ("upload MB", "upload_mb", "{:.2f}"),
    ("download MB", "download_mb", "{:.2f}"),
    ("wall s", "wall_seconds", "{:.1f}"),
    ("device-sim s", "sim_seconds", "{:.1f}"),
    ("device-sim J", "sim_joules", "{:.2f}"),
    ("budget satisfaction", "budget_satisfaction", "{:.2f}"),
)


def markdown_table(table: Sequence[MethodRow], setup: str) -> list[str]:
    """The per-method table of one setup; a method with no finished run says why in one cell."""
    headers = ["method", "runs ok", *(h for h, _, _ in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for row in (r for r in table if r.setup == setup):
        cells = [f"`{row.method}`", f"{row.finished}/{row.runs}"]
        if not row.finished:
            cells.append(f"{row.status}: {_short(row.errors)}")
            cells += [""] * (len(TABLE_COLUMNS) - 1)
        else:
            for _, name, fmt in TABLE_COLUMNS:
                cells.append(_accuracy_cell(row) if name == "accuracy" else _cell(row, name, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _accuracy_cell(row: MethodRow) -> str:
    mean = row.means["final_accuracy"]
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" + (f" ± {row.accuracy_sd:.4f}" if row.accuracy_sd is not None else "")


def _cell(row: MethodRow, name: str, fmt: str) -> str:
    value = row.means[name]
    return "n/a" if value is None else fmt.format(value)


def _short(errors: Sequence[str], limit: int = 160) -> str:
    text = errors[0] if errors else "no result"
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
