"""`run_bench`: every (setup, method, seed) of a suite through `run_experiment`, side by side.

Runs share one process and one Ray instance (`ray_session`), and each writes its usual results
folder under `OUT/runs/<setup>/<method>/seed-<k>/`. A run that fails is recorded with its error
and the bench goes on; a run whose folder already holds a summary is read back, not re-run, so
an interrupted bench resumes with the same `--out`. The outputs (results.csv, table.md, plots,
section.md for BENCHMARKS.md) are rewritten from all rows at the end.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedrlprune.bench.plots import plot_setup, read_rounds
from fedrlprune.bench.section import machine_line, render_section
from fedrlprune.bench.suites import (
    Setup,
    Suite,
    get_suite,
    method_unavailable,
    parse_methods,
    pick_setups,
    run_config,
)
from fedrlprune.bench.table import (
    TIER_FIELDS,
    TIERS,
    accuracy_target,
    as_number,
    time_to_accuracy,
)
from fedrlprune.errors import ConfigError, DataError

log = logging.getLogger("fedrlprune")

RESULT_COLUMNS = (
    "setup",
    "method",
    "seed",
    "status",  # ok | failed | unknown (method not in this version) | skipped (data missing)
    "error",
    "flops_kind",  # compact (structured) | theoretical (unstructured): every FLOPs column's kind
    "final_accuracy",
    "client_accuracy_mean",
    "client_accuracy_worst10",
    "deployed_accuracy_mean",
    *TIER_FIELDS,  # deployed models on the global test set, mean over each tier's clients
    "nonzero_params",
    "effective_flops",
    "deployed_params",  # compact params when compact, non-zero params when theoretical
    "deployed_flops",
    "deployed_memory_bytes_mean",
    "deployed_latency_speedup",
    "upload_mb",
    "download_mb",
    "wall_seconds",
    "sim_seconds",
    "sim_joules",
    "budget_satisfaction",
    "rounds_completed",
    "rounds_to_target",  # time to accuracy: see bench.table.accuracy_target
    "sim_seconds_to_target",
    "run_seconds",  # the run as the bench saw it: wall_seconds plus starting the clients
    "out_dir",
)

# Per-client keys of the deployed models' cost, by flops_kind: what each client's budget checks.
_DEPLOYED_COST = {
    "compact": ("compact_params", "compact_flops"),
    "theoretical": ("nonzero_params", "theoretical_flops"),
}


def summary_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of results.csv from one run's summary.json (bytes as MB).

    The deployed models' params and FLOPs are those of the run's `flops_kind` (the compact
    model's, or the kept weights'), taken from `per_client`, as are the per-tier accuracies.
    """
    clients = summary.get("per_client") or []
    params, flops = _DEPLOYED_COST.get(str(summary.get("flops_kind")), ("", ""))
    return {
        "flops_kind": summary.get("flops_kind"),
        "final_accuracy": summary.get("final_accuracy"),
        "client_accuracy_mean": summary.get("client_accuracy_mean"),
        "client_accuracy_worst10": summary.get("client_accuracy_worst10"),
        "deployed_accuracy_mean": summary.get("deployed_accuracy_mean"),
        **{
            field: _client_mean(clients, "accuracy_global_test", tier)
            for tier, field in zip(TIERS, TIER_FIELDS, strict=True)
        },
        "nonzero_params": summary.get("nonzero_params"),
        "effective_flops": summary.get("effective_flops"),
        "deployed_params": _client_mean(clients, params),
        "deployed_flops": _client_mean(clients, flops),
        "deployed_memory_bytes_mean": summary.get("deployed_memory_bytes_mean"),
        "deployed_latency_speedup": summary.get("deployed_latency_speedup"),
        "upload_mb": _mb(summary.get("upload_bytes_total")),
        "download_mb": _mb(summary.get("download_bytes_total")),
        "wall_seconds": summary.get("wall_seconds"),
        "sim_seconds": summary.get("sim_seconds_total"),
        "sim_joules": summary.get("sim_joules_total"),
        "budget_satisfaction": summary.get("budget_satisfaction"),
        "rounds_completed": summary.get("rounds_completed"),
    }


def _client_mean(
    clients: Sequence[Mapping[str, Any]], key: str, tier: str | None = None
) -> float | None:
    """Mean of `key` over the clients (of `tier`) that have a finite figure; None if none."""
    values = [
        v
        for c in clients
        if tier is None or c.get("tier") == tier
        if (v := as_number(c.get(key))) is not None
    ]
    return math.fsum(values) / len(values) if values else None


@dataclass(frozen=True)
class BenchResult:
    out: Path
    rows: list[dict[str, Any]]
    seconds: float


def run_bench(
    suite: str | Suite,
    *,
    methods: Iterable[str] | None = None,
    setups: Iterable[str] | None = None,
    seeds: int | None = None,
    out: str | Path | None = None,
    extra: Sequence[str] = (),
    live: bool | None = None,
    command: str | None = None,
    max_minutes: float | None = None,
    run: bool = True,
) -> BenchResult:
    """Run a suite and write its outputs under `out`; return the rows of results.csv.

    methods, setups: bench method names and the suite's setups to run (default: the suite's).
    seeds:   seeds per setup (default: each setup's own count); seeds are 0 .. seeds-1.
    extra:   `key=value` config overrides applied to every run (after the setup's own).
    command: the command line recorded in the outputs (default: this process's argv).
    max_minutes: start no run that would likely end after this (default: the suite's; 0 = no
             limit); the runs left are recorded as "not run".
    run:     False: start nothing, only read the finished runs back and rewrite the outputs.
    """
    started = time.perf_counter()
    suite = pick_setups(get_suite(suite) if isinstance(suite, str) else suite, setups)
    names = parse_methods(methods or suite.methods)
    max_minutes = _check_args(suite, names, seeds, max_minutes, extra)
    budget = max_minutes * 60 if max_minutes else None
    out = _out_dir(out, suite.name)
    command = command or shlex.join(["fedrlprune", *sys.argv[1:]])
    live = sys.stderr.isatty() if live is None else live
    unknown, missing = _unavailable(suite, names, extra)
    plan = _plan(suite, names, seeds)
    runnable = [(s, m, k) for s, m, k in plan if s.name not in missing and m not in unknown]
    fresh = run and any(not (_run_dir(out, *r) / "summary.json").is_file() for r in runnable)
    machine = machine_line()
    rows: list[dict[str, Any]] = []
    from fedrlprune.experiments.progress import shared_display
    from fedrlprune.fl.simulation import ray_session

    try:  # an interrupted bench still writes the table of what it finished
        with shared_display(live) as display, ray_session() if fresh else nullcontext():
            task = display.add_task("bench", total=len(runnable), info="") if display else None
            for setup, method, seed in plan:
                row: dict[str, Any] = {"setup": setup.name, "method": method, "seed": seed}
                kind = None if method in unknown else _kind(setup, method, extra)
                done = (_run_dir(out, setup, method, seed) / "summary.json").is_file()
                spent = time.perf_counter() - started
                stop = None if done else _stop(run, spent, _timed(rows), budget, max_minutes)
                why = _why_not(setup.name, method, missing, unknown, stop)
                if why is None:
                    what = f"{setup.name} {method} seed {seed}"
                    log.info("bench %d/%d: %s", _ran(rows) + 1, len(runnable), what)
                    _announce(display, task, _ran(rows), what)
                    run_dir = _run_dir(out, setup, method, seed)
                    why = one_run(setup, method, seed, extra, run_dir, live)
                row |= why
                row["flops_kind"] = row.get("flops_kind") or kind  # older summaries lack it
                rows.append(row)
                write_results_csv(out / "results.csv", rows)
            _announce(display, task, _ran(rows), "writing the table and plots")
    finally:
        seconds = time.perf_counter() - started
        write_outputs(out, suite, rows, command=command, machine=machine, seconds=seconds)
    return BenchResult(out=out, rows=rows, seconds=seconds)


def _why_not(
    setup: str,
    method: str,
    missing: Mapping[str, str],
    unknown: Mapping[str, str],
    stop: str | None,
) -> dict[str, Any] | None:
    """The row of a run that is not started (data missing, method unknown, out of time or
    --no-run: `stop` says which)."""
    if setup in missing:
        return {"status": "skipped", "error": missing[setup]}
    if method in unknown:
        return {"status": "unknown", "error": unknown[method]}
    if stop is not None:
        return {"status": "not run", "error": stop}
    return None


def _stop(
    run: bool,
    spent: float,
    timed: Sequence[Mapping[str, Any]],
    budget: float | None,
    max_minutes: float,
) -> str | None:
    """Why a run that has not finished is not started now (--no-run, out of time), or None."""
    if not run:
        return "not started (--no-run)"
    if budget is not None and out_of_time(spent, timed, budget):
        return f"time budget of {max_minutes:g} min reached"
    return None


def _ran(rows: Sequence[Mapping[str, Any]]) -> int:
    return sum(r.get("status") in ("ok", "failed") for r in rows)


def _timed(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("run_seconds")]


def _announce(display: Any, task: Any, ran: int, what: str) -> None:
    """The progress bar, in a terminal: runs done, and what happens now."""
    if display is not None and task is not None:
        display.update(task, completed=ran, info=what)


def _check_args(
    suite: Suite,
    names: Sequence[str],
    seeds: int | None,
    max_minutes: float | None,
    extra: Sequence[str],
) -> float:
    """Refuse bad arguments (and a bad --set) before anything runs; return the time budget."""
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    max_minutes = suite.max_minutes if max_minutes is None else max_minutes
    if max_minutes < 0:
        raise ConfigError(f"--max-minutes must be 0 (no limit) or more, got {max_minutes}")
    for setup in suite.setups:
        run_config(setup, names[0], 0, extra)
    return max_minutes


def _unavailable(
    suite: Suite, names: Sequence[str], extra: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Methods this version does not know and setups whose data is absent, each with why."""
    unknown = {m: why for m in names if (why := method_unavailable(m))}
    missing = {s.name: why for s in suite.setups if (why := _data_missing(s, extra))}
    for method, why in unknown.items():
        log.warning("bench: method %s is %s; it is listed, not run", method, why)
    for setup_name, why in missing.items():
        log.warning("bench: setup %s skipped: %s", setup_name, why)
    return unknown, missing


def _plan(suite: Suite, names: Sequence[str], seeds: int | None) -> list[tuple[Setup, str, int]]:
    """Seed-major order: every method of every setup at seed 0 before any seed 1, so a bench
    cut short by its time budget still compares all methods, on fewer seeds."""
    most = max([seeds or s.seeds for s in suite.setups], default=0)
    return [
        (setup, method, seed)
        for seed in range(most)
        for setup in suite.setups
        if seed < (seeds or setup.seeds)
        for method in names
        if setup.methods is None or method in setup.methods
    ]


def one_run(
    setup: Setup, method: str, seed: int, extra: Sequence[str], run_dir: Path, live: bool
) -> dict[str, Any]:
    """One run, or its earlier result; a failure becomes a row with the error, not a crash.

    A run stopped part-way (the bench interrupted) goes on from its last checkpoint.
    """
    from fedrlprune.experiments.runner import resume_experiment, run_experiment
    from fedrlprune.federation.checkpoint import CHECKPOINT

    base = {"out_dir": str(run_dir)}
    done = run_dir / "summary.json"
    timing = run_dir / "bench-run.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        seconds = json.loads(timing.read_text())["run_seconds"] if timing.is_file() else None
        log.info("bench: %s already finished, read back", run_dir)
        return {**base, "status": "ok", "resumed": True, "run_seconds": seconds,
                **summary_row(summary)}  # fmt: skip
    started = time.perf_counter()
    try:
        cfg = run_config(setup, method, seed, extra)
        if (run_dir / CHECKPOINT).is_file():
            log.info("bench: %s stopped part-way, resumed from its checkpoint", run_dir)
            summary = resume_experiment(run_dir, config=cfg, live=live)
        else:
            summary = run_experiment(cfg, out_dir=run_dir, live=live)
    except Exception as err:  # recorded, and the bench goes on with the next run
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        log.error("bench: %s %s seed %d failed: %s", setup.name, method, seed, err)
        return {**base, "status": "failed", "error": f"{type(err).__name__}: {err}"}
    seconds = time.perf_counter() - started
    timing.write_text(json.dumps({"run_seconds": seconds}) + "\n")
    return {**base, "status": "ok", "run_seconds": seconds, **summary_row(summary)}


def write_results_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in RESULT_COLUMNS})


def write_outputs(
    out: Path,
    suite: Suite,
    rows: Sequence[Mapping[str, Any]],
    *,
    command: str,
    machine: str,
    seconds: float,
) -> None:
    """results.csv, the plots, table.md (links from OUT) and section.md (links from the cwd)."""
    rows = with_time_to_target(rows)
    write_results_csv(out / "results.csv", rows)
    plots: dict[str, list[Path]] = {}
    for setup in suite.setups:
        plots[setup.name] = plot_setup(
            out, setup.name, [r for r in rows if r["setup"] == setup.name]
        )
    for name, start in (("table.md", out), ("section.md", Path.cwd())):
        text = render_section(
            suite=suite,
            rows=rows,
            plots=plots,
            command=command,
            machine=machine,
            seconds=seconds,
            link_from=start,
        )
        (out / name).write_text(text)


def with_time_to_target(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows, each finished run with the round and device-simulated seconds at which its
    global model first reached its setup's accuracy target (from its metrics.csv)."""
    targets = {
        setup: accuracy_target(r for r in rows if r["setup"] == setup)
        for setup in {str(r["setup"]) for r in rows}
    }
    done = []
    for row in rows:
        target = targets[str(row["setup"])]
        reached = None
        if target is not None and row.get("status") == "ok" and row.get("out_dir"):
            reached = time_to_accuracy(read_rounds(Path(str(row["out_dir"]))), target)
        rounds, seconds = reached or (None, None)
        done.append({**row, "rounds_to_target": rounds, "sim_seconds_to_target": seconds})
    return done


def _kind(setup: Setup, method: str, extra: Sequence[str]) -> str:
    """The flops_kind a run will report (its config's), so a run that did not finish still
    lands in its table; a finished run's summary.json says it again."""
    return "compact" if run_config(setup, method, 0, extra).structured else "theoretical"


def _data_missing(setup: Setup, extra: Sequence[str]) -> str | None:
    """The loader's own message (it lists where it looked) when the setup's data is absent."""
    from fedrlprune.data.federated import named_dataset

    cfg = run_config(setup, "fedavg", 0, extra)
    try:
        named_dataset(cfg)
    except DataError as err:
        return str(err)
    return None


def out_of_time(elapsed: float, finished: Sequence[Mapping[str, Any]], budget: float) -> bool:
    """Would one more run likely end after the budget? (a run takes the mean of those so far)"""
    times = [float(r["run_seconds"]) for r in finished]
    return elapsed + (sum(times) / len(times) if times else 0.0) > budget


def _run_dir(out: Path, setup: Setup, method: str, seed: int) -> Path:
    return out / "runs" / setup.name / method / f"seed-{seed}"


def _out_dir(out: str | Path | None, suite: str) -> Path:
    """The bench folder (made): `out`, or a fresh one under results/."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out) if out is not None else Path("results") / f"bench-{suite}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mb(value: Any) -> float | None:
    return None if value is None else float(value) / 1e6


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())  # one line per run, whatever the error said
    return f"{value:.6g}" if isinstance(value, float) else value
