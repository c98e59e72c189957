"""One ablation over several seeds: each variant's accuracy gap to a reference, paired by seed.

Reads the JSON that benchmarks/compare.py writes (one file per seed, same preset) and writes a
markdown table with each seed's gap, their mean and spread, the worst budget satisfaction and
the mean reductions:

    .venv/bin/python benchmarks/seeds.py benchmarks/results/method.json \
        benchmarks/results/method-seed1.json benchmarks/results/method-seed2.json \
        --out benchmarks/results/method-seeds.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from statistics import fmean

from fedrlprune.bench.table import gaps_over_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="compare.py JSON files, one per seed")
    parser.add_argument("--reference", default="fedavg", help="the variant gaps are taken to")
    parser.add_argument("--key", default="deployed_accuracy_mean", help="the accuracy compared")
    parser.add_argument("--out", type=Path, required=True, help="markdown table to write")
    args = parser.parse_args()
    seeds = []
    for path in args.runs:
        try:
            seeds.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            parser.error(f"cannot read {path} ({err}); give the JSON benchmarks/compare.py wrote")
    try:
        table = gaps_over_seeds(seeds, args.reference, args.key)
    except ValueError as err:
        parser.error(
            f"{err} (seed i is the i-th file given); give the JSON files compare.py writes, "
            f"each with a {args.reference!r} row (see --reference)"
        )

    labels = [p.stem for p in args.runs]
    lines = [
        f"# {args.key}: gap to {args.reference} over {len(seeds)} seeds",
        "",
        f"Command: `.venv/bin/python benchmarks/seeds.py {shlex.join(sys.argv[1:])}`",
        "Gap: points behind the reference in the same run of compare.py (positive: behind).",
        "",
        "| variant | "
        + " | ".join(f"gap, {label}" for label in labels)
        + " | mean accuracy (reference) | mean gap ± sd | worst budget satisfaction"
        + " | params reduction | FLOPs reduction |",
        "| --- |" + " --- |" * (len(labels) + 5),
    ]
    for row in table:
        spread = f" ± {row.sd_gap:.2f}" if row.sd_gap is not None else ""
        lines.append(
            f"| {row.variant} | "
            + " | ".join(f"{g:.2f}" for g in row.gap_points)
            + f" | {fmean(row.accuracy):.4f} ({fmean(row.reference):.4f})"
            + f" | {row.mean_gap:.2f}{spread} | {_num(row.worst_budget_satisfaction, '{:.2f}')}"
            + f" | {_num(row.mean_param_reduction, '{:.1f}x')}"
            + f" | {_num(row.mean_flops_reduction, '{:.1f}x')} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


if __name__ == "__main__":
    main()
