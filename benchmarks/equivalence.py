"""Do two code versions give the same run? Compare results folders figure by figure.

For a refactor that must not change behaviour: run the same configs at the old commit and at
the new one, then

    .venv/bin/python benchmarks/equivalence.py BEFORE AFTER --out FILE.md

where BEFORE and AFTER hold one results folder per run under the same names. Every figure of
`summary.json` (per-client entries included), every cell of `metrics.csv` and `rates.csv` is
compared exactly; wall-clock timings (keys and columns with "seconds"), the results folder's
path and the run's own timestamps are left out, since they differ between any two runs.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

SKIP = ("seconds", "out_dir")
SHOWN = ("final_accuracy", "deployed_accuracy_mean", "budget_satisfaction",
         "deployed_param_reduction", "upload_bytes_total")  # fmt: skip


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as one level of dotted keys."""
    if isinstance(data, dict):
        return {k: v for key, val in data.items() for k, v in flat(val, f"{prefix}{key}.").items()}
    if isinstance(data, list):
        return {k: v for i, val in enumerate(data) for k, v in flat(val, f"{prefix}{i}.").items()}
    return {prefix[:-1]: data}


def rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def differences(before: Path, after: Path) -> tuple[list[str], list[str]]:
    """Every figure that differs between two results folders, timings aside; and the figures
    only the newer version writes (added, so not a change of behaviour)."""
    out = []
    a = flat(json.loads((before / "summary.json").read_text()))
    b = flat(json.loads((after / "summary.json").read_text()))
    added = sorted(k for k in set(b) - set(a) if not any(s in k for s in SKIP))
    for key in sorted(set(a)):
        if not any(s in key for s in SKIP) and a.get(key) != b.get(key):
            out.append(f"summary {key}: {a.get(key)!r} -> {b.get(key)!r}")
    for name in ("metrics.csv", "rates.csv"):
        ra, rb = rows(before / name), rows(after / name)
        if len(ra) != len(rb):
            out.append(f"{name}: {len(ra)} rows -> {len(rb)}")
        for i, (x, y) in enumerate(zip(ra, rb, strict=False)):
            for col in sorted(set(x) | set(y)):
                if "seconds" not in col and x.get(col) != y.get(col):
                    out.append(f"{name} row {i} {col}: {x.get(col)!r} -> {y.get(col)!r}")
    return out, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument("--title", default="Same config and seed, before and after")
    args = parser.parse_args()
    names = sorted(p.name for p in args.before.iterdir() if (p / "summary.json").is_file())
    lines = [
        f"# {args.title}",
        "",
        f"`{args.before}` against `{args.after}`: every figure of summary.json, metrics.csv and "
        "rates.csv compared exactly, wall-clock timings aside.",
        "",
        "| run | " + " | ".join(SHOWN) + " | figures that differ | figures new in `after` |",
        "| --- | " + " | ".join("---" for _ in SHOWN) + " | --- | --- |",
    ]
    for name in names:
        summary = json.loads((args.after / name / "summary.json").read_text())
        diff, added = differences(args.before / name, args.after / name)
        cells = [f"{summary[k]:.6g}" if isinstance(summary[k], float) else str(summary[k])
                 for k in SHOWN]  # fmt: skip
        new = sorted({k.split(".")[-1] for k in added})
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(diff)} | {', '.join(new)} |")
        lines += [f"<!-- {d} -->" for d in diff[:20]]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
