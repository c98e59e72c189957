"""Simulation at the literature's scale: 10, 100 and 1000 clients at 10 per round, side by side.

Each size runs as its own `fedrlprune run` process (so Ray starts and stops with it, as for a
user), while a sampler adds up the resident memory of that process and all its descendants
(Ray's raylet, store and workers included) every half second. Reported per size: the wall time
of the whole command, the server's set-up (the simulation engine starting, the partitions, one
round's clients loading their data), the median round, the end of the run (deployment,
per-client evaluation and the latency measurement), and the peak memory of the process tree.

    .venv/bin/python benchmarks/scale.py --out benchmarks/results/scale

runs each size `--repeats` times (3), the sizes taking turns, and writes the medians and every
run to `scale.json` and `scale.md` in `--out` (each run's results folder under it). The
target: at 1000 clients, set-up plus end of run within the time of 20 rounds, and peak memory
within 20% of that at 100 clients.

    .venv/bin/python benchmarks/scale.py --busy --out benchmarks/results/scale

instead runs a 6-client `fedrlprune` simulation while two processes keep both cores busy, and
writes whether it completed, and how long it took, to `busy.json`: a slow machine must make a
simulation slower, never fail it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SIZES = (10, 100, 1000)
PER_ROUND = 10
SETTINGS = ("--set", "method=fedavg", "--set", "local_epochs=1", "--set", "model=lenet5",
            "--set", "data_fraction=1.0")  # fmt: skip
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and every process descended from it (read from /proc)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def run_size(clients: int, rounds: int, out: Path, repeat: int = 0) -> dict[str, Any]:
    """One `fedrlprune run` at `clients` clients, its peak tree memory sampled meanwhile."""
    run_dir = out / f"clients-{clients}-{repeat}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        str(Path(sys.executable).parent / "fedrlprune"), "run", "--no-live", "--out", str(run_dir),
        "--set", f"clients={clients}", "--set", f"fraction={PER_ROUND / clients}",
        "--set", f"rounds={rounds}", *SETTINGS,
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"clients={clients} failed:\n{output[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    with (run_dir / "metrics.csv").open() as fh:
        rounds_s = [float(r["round_seconds"]) for r in csv.DictReader(fh)]
    median = statistics.median(rounds_s)
    end = summary["deploy_seconds"] + summary["latency_seconds"]
    return {
        "clients": clients,
        "repeat": repeat,
        "per_round": PER_ROUND,
        "rounds": rounds,
        "wall_seconds": wall,
        "setup_seconds": summary["setup_seconds"],
        "round_seconds_median": median,
        "end_seconds": end,
        "setup_plus_end_in_rounds": (summary["setup_seconds"] + end) / median,
        "peak_tree_rss_gb": peak[0] / 1e9,
        "final_accuracy": summary["final_accuracy"],
    }


def burn() -> None:
    """Keep one core busy until killed."""
    while True:
        pass


def busy_run(out: Path, hogs: int = 2) -> dict[str, Any]:
    """A small 6-client `fedrlprune` simulation while `hogs` processes spin on the cores."""
    spin = [sys.executable, "-c", "from scale import burn; burn()"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    procs = [subprocess.Popen(spin, env=env) for _ in range(hogs)]
    run_dir = out / "busy"
    cmd = [
        str(Path(sys.executable).parent / "fedrlprune"), "run", "--no-live", "--out", str(run_dir),
        "--set", "clients=6", "--set", "rounds=3", "--set", "local_epochs=1",
        "--set", "data_fraction=0.1", "--set", "rl_episodes=4", "--set", "latency_runs=0",
    ]  # fmt: skip
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        for proc in procs:
            proc.kill()
    wall = time.perf_counter() - started
    summary = json.loads((run_dir / "summary.json").read_text()) if done.returncode == 0 else {}
    return {
        "clients": 6,
        "busy_processes": hogs,
        "cores": os.cpu_count(),
        "returncode": done.returncode,
        "completed": done.returncode == 0 and summary.get("rounds_completed") == 3,
        "wall_seconds": wall,
        "setup_seconds": summary.get("setup_seconds"),
        "tail": done.stdout[-1500:] + done.stderr[-1500:] if done.returncode else "",
    }


FIGURES = ("wall_seconds", "setup_seconds", "round_seconds_median", "end_seconds",
           "setup_plus_end_in_rounds", "peak_tree_rss_gb", "final_accuracy")  # fmt: skip


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size, the median of each figure over the repeats (the machine is noisy)."""
    out = []
    for n in sorted({r["clients"] for r in rows}):
        mine = [r for r in rows if r["clients"] == n]
        row = {"clients": n, "repeats": len(mine)}
        row |= {k: statistics.median(r[k] for r in mine) for k in FIGURES}
        row["ratio_per_repeat"] = [r["setup_plus_end_in_rounds"] for r in mine]
        out.append(row)
    return out


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Simulation at scale",
        "",
        f"Command: `{command}`; fedavg, Fashion-MNIST, LeNet-5, {PER_ROUND} clients per round, "
        "one local epoch. Set-up is the simulation engine starting, the partitions and one "
        "round's clients loading their data; end of run is deployment, per-client evaluation "
        "and the latency measurement; memory is the peak resident memory "
        "of the run's whole process tree (Ray included). Each figure is the median over the "
        "repeats, the sizes taking turns in each repeat; the last column gives every repeat's.",
        "",
        "| clients | repeats | wall s | set-up s | median round s | end of run s | "
        "(set-up + end) / round | peak memory GB | final accuracy | (set-up + end) / round, "
        "per repeat |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in medians(rows):
        each = ", ".join(f"{x:.1f}" for x in r["ratio_per_repeat"])
        lines.append(
            f"| {r['clients']} | {r['repeats']} | {r['wall_seconds']:.0f} | "
            f"{r['setup_seconds']:.1f} | {r['round_seconds_median']:.2f} | "
            f"{r['end_seconds']:.1f} | {r['setup_plus_end_in_rounds']:.1f} | "
            f"{r['peak_tree_rss_gb']:.2f} | {r['final_accuracy']:.4f} | {each} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/scale"))
    parser.add_argument("--rounds", type=int, default=5, help="rounds per size (default 5)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (default 3)")
    parser.add_argument("--busy", action="store_true", help="the busy-machine check instead")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.busy:
        result = busy_run(args.out)
        (args.out / "busy.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    command = " ".join(["python benchmarks/scale.py", *sys.argv[1:]])
    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for clients in args.sizes:
            print(f"scale: {clients} clients, repeat {repeat} ...", flush=True)
            rows.append(run_size(clients, args.rounds, args.out, repeat))
            print(json.dumps(rows[-1]), flush=True)
            result = {"medians": medians(rows), "runs": rows}
            (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "scale.md").write_text(markdown(rows, command))
    print(markdown(rows, command))


if __name__ == "__main__":
    main()
