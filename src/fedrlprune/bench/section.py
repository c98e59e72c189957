"""The bench's markdown: one section per suite (what ran, where, tables, front checks, plots),
written to table.md and section.md and put into BENCHMARKS.md in place of the suite's last one.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedrlprune.bench.suites import Setup, Suite
from fedrlprune.bench.table import (
    KINDS,
    MethodRow,
    aggregate,
    front_line,
    kinds_present,
    markdown_table,
    time_table,
)


def render_section(
    *,
    suite: Suite,
    rows: Sequence[Mapping[str, Any]],
    plots: Mapping[str, Sequence[Path]],
    command: str,
    machine: str,
    seconds: float,
    link_from: Path,
) -> str:
    """The markdown of one bench: what ran, where, the tables, the front checks and the plots.

    Wrapped in `<!-- bench:SUITE -->` markers so `update_benchmarks_md` can replace it in place.
    """
    lines = _header(suite, rows, command, machine, seconds)
    table = aggregate(rows)
    for setup in suite.setups:
        lines += _setup_lines(setup, rows, table, plots.get(setup.name, ()), link_from)
    unknown = sorted({str(r["method"]) for r in rows if r.get("status") == "unknown"})
    if unknown:
        lines += [
            f"Methods unknown to this version (listed, not run): {', '.join(unknown)}.",
            "",
        ]
    lines.append(f"<!-- bench:{suite.name} end -->")
    return "\n".join(lines) + "\n"


def _header(
    suite: Suite, rows: Sequence[Mapping[str, Any]], command: str, machine: str, seconds: float
) -> list[str]:
    """What ran, on what, when, and how to read the tables."""
    runs = [r for r in rows if r.get("status") in ("ok", "failed")]
    earlier = sum(bool(r.get("resumed")) for r in runs)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"<!-- bench:{suite.name} start -->",
        f"### Suite `{suite.name}`"
        + (" (a check of the bench, not a result)" if suite.name == "quick" else ""),
        "",
        f"Suite: {suite.about}",
        "",
        f"- command: `{command}`",
        f"- machine: {machine}",
        f"- date: {date}; {len(runs)} runs"
        + (f" ({earlier} read back from an earlier invocation)" if earlier else "")
        + f"; the bench took {seconds / 60:.1f} minutes",
        "- two tables per setup, split by each run's `flops_kind` so that no table or front "
        "sets compact FLOPs against theoretical ones; dense `fedavg`, the reference, is in "
        "both. Budgeted, structured: the deployed models are compact (channels removed), so "
        "their params, FLOPs, memory and measured latency speed-up (ONNX Runtime, one "
        "thread, against the dense model in the same run) are real. Unstructured: the "
        "deployed models keep dense shapes with zeros, so their FLOPs are theoretical (they "
        "need sparse kernels) and their memory counts the sparse storage format.",
        "- deployed acc: the clients' deployed models on the global test set, mean over "
        "clients (mean ± sample sd over seeds); acc TIER: the same over one device tier's "
        "clients; global acc: the global model; params, FLOPs and memory: per deployed "
        "model, mean over clients; bytes and seconds over the whole run (the bench's first "
        "run also waits for the client actors to start, later runs reuse them).",
        "",
    ]
    return lines


def _setup_lines(
    setup: Setup,
    rows: Sequence[Mapping[str, Any]],
    table: Sequence[MethodRow],
    plots: Sequence[Path],
    link_from: Path,
) -> list[str]:
    """One setup's section: its settings, a table and front check per kind, the plots."""
    setup_rows = [r for r in rows if r["setup"] == setup.name]
    if not setup_rows:
        return []
    seeds = len({r["seed"] for r in setup_rows})
    lines = [
        f"#### {setup.name}",
        "",
        f"{setup.why}; {seeds} seed(s). Settings: {setup.settings()}.",
        "",
    ]
    if all(r.get("status") == "skipped" for r in setup_rows):
        return [*lines, f"Skipped: {setup_rows[0].get('error')}", ""]
    for kind in kinds_present(table, setup.name):
        lines += [f"**{KINDS[kind].title}**", ""]
        lines += markdown_table(table, setup.name, kind)
        lines += ["", front_line(table, setup.name, kind), ""]
    if timed := time_table(rows, setup.name):
        lines += [*timed, ""]
    lines += [f"![{p.stem}]({_link(p, link_from)})" for p in plots]
    return [*lines, ""]


def update_benchmarks_md(path: Path, section: str) -> None:
    """Put `section` into the markdown file at `path`: replace the same suite's block, or append.

    The block is found by its `<!-- bench:SUITE start/end -->` markers, so text around it (by
    hand) stays as it is.
    """
    match = re.match(r"<!-- bench:(\S+) start -->", section)
    if match is None:
        raise ValueError("section has no bench start marker")
    suite = re.escape(match.group(1))
    text = path.read_text() if path.is_file() else ""
    block = re.compile(rf"<!-- bench:{suite} start -->.*?<!-- bench:{suite} end -->\n?", re.S)
    if block.search(text):
        text = block.sub(lambda _: section, text, count=1)
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    path.write_text(text)


def machine_line() -> str:
    """What the figures were measured on: CPU, cores, memory, load, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", info)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
    import flwr
    import torch

    gpu = "CUDA GPU" if torch.cuda.is_available() else "CPU only"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}{load}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, flwr {flwr.__version__}, {platform.system()}"
    )


def _link(path: Path, start: Path) -> str:
    """A link that works from `start` (relative inside it, absolute outside)."""
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()
