"""Command line: a thin layer over the Python API; user mistakes get a message, not a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from fedrlprune import __version__
from fedrlprune.config import Config, describe_keys, keys_markdown
from fedrlprune.errors import FedRLPruneError

log = logging.getLogger("fedrlprune")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrlprune",
        description="Distributed model pruning driven by federated reinforcement learning.",
    )
    parser.add_argument("--version", action="version", version=f"fedrlprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub.add_parser("run", help="run one federated experiment (Flower simulation)"))
    _bench_parser(
        sub.add_parser(
            "bench",
            help="run methods side by side on a suite: results.csv, table.md, plots, section.md",
        )
    )
    export = sub.add_parser(
        "export", help="write ONNX models (global and one per device tier) of a finished run"
    )
    export.add_argument("results", type=Path, help="the results folder of a run")
    keys = sub.add_parser("keys", help="list every config key with its default and allowed values")
    keys.add_argument(
        "--markdown", action="store_true", help="print the docs' markdown table instead"
    )
    return parser


def _run_parser(run: argparse.ArgumentParser) -> None:
    run.add_argument("--config", "-c", type=Path, help="TOML config file (see configs/)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key; repeatable (see `fedrlprune keys`)",
    )
    where = run.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="results folder (default: results/<run>-<time>)")
    where.add_argument(
        "--resume",
        type=Path,
        metavar="RESULTS",
        help="continue the stopped run in this results folder from its last checkpoint "
        "(its config.toml is the config)",
    )
    run.add_argument(
        "--no-live", action="store_true", help="plain log lines instead of a live display"
    )


def _bench_parser(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--suite", default="quick", help="quick or standard (default: quick)")
    bench.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="methods to run, space or comma separated (default: all of them)",
    )
    bench.add_argument(
        "--setups", nargs="+", metavar="NAME", help="the suite's setups to run (default: all)"
    )
    bench.add_argument("--seeds", type=int, help="seeds per setup (default: the suite's)")
    bench.add_argument(
        "--max-minutes",
        type=float,
        help="start no run that would end after this; the rest is listed as not run "
        "(default: the suite's, standard 85; 0 = no limit)",
    )
    bench.add_argument(
        "--out", type=Path, help="bench folder (default: results/bench-<suite>-<time>)"
    )
    bench.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every run (method and seed are the bench's)",
    )
    bench.add_argument(
        "--benchmarks",
        type=Path,
        metavar="FILE",
        help="also put the section into this markdown file (e.g. BENCHMARKS.md), "
        "replacing the same suite's earlier section",
    )
    bench.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing: read the finished runs in --out back and rewrite the tables, "
        "plots and --benchmarks section (the others are listed as not run)",
    )
    bench.add_argument(
        "--no-live", action="store_true", help="plain log lines instead of a live display"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    live = sys.stderr.isatty() and not getattr(args, "no_live", False)
    _setup_logging(live)
    try:
        if args.command == "keys":
            if args.markdown:
                print(keys_markdown(), end="")
            else:
                _print_keys()
            return 0
        if args.command == "export":
            from fedrlprune.experiments.export import export_results

            rows = export_results(args.results)
            for row in rows:
                print(
                    f"{row['model']:<14} {row['nonzero_params']:>10,} params  "
                    f"{row['effective_flops']:>12,} FLOPs  {row['sparse_bytes']:>10,} bytes sparse"
                )
            print(f"exported: {args.results / 'export'}")
            return 0
        if args.command == "bench":
            return _bench(args, live)
        if args.resume is not None:
            from fedrlprune.federation.checkpoint import check_resumable

            given = None
            if args.config is not None or args.overrides:
                base = args.config or args.resume / "config.toml"
                given = Config.load(base, args.overrides)
            check_resumable(args.resume, given)  # before the heavy start of the engine
            from fedrlprune.experiments.runner import resume_experiment

            summary = resume_experiment(args.resume, config=given, live=live)
        else:
            cfg = Config.load(args.config, args.overrides)
            from fedrlprune.experiments.runner import check_new_folder, run_experiment

            if args.out is not None:  # named as this command spells it
                check_new_folder(args.out, "--out")
            summary = run_experiment(cfg, out_dir=args.out, live=live)
    except FedRLPruneError as err:
        print(f"fedrlprune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedrlprune: interrupted", file=sys.stderr)
        return 130
    print(
        f"final accuracy {summary['final_accuracy']:.4f}  "
        f"params {summary['nonzero_params']:,}/{summary['dense_params']:,}  "
        f"FLOPs x{summary['flops_reduction']:.2f} fewer  "
        f"upload {summary['upload_bytes_total'] / 1e6:.1f} MB  "
        f"{summary['wall_seconds']:.0f}s"
    )
    _print_tiers(summary)
    print(f"results: {summary['out_dir']}")
    return 0


def _print_tiers(summary: dict[str, Any]) -> None:
    """Each tier's deployed model beside the committed dense run of the same settings."""
    from fedrlprune.config import read_toml
    from fedrlprune.experiments.tiers import dense_reference, tier_lines

    config = read_toml(Path(summary["out_dir"]) / "config.toml")
    for line in tier_lines(summary, dense_reference(config)):
        print(line)


def _bench(args: argparse.Namespace, live: bool) -> int:
    from fedrlprune.bench.runner import run_bench
    from fedrlprune.bench.section import update_benchmarks_md

    result = run_bench(
        args.suite,
        methods=args.methods,
        setups=args.setups,
        seeds=args.seeds,
        out=args.out,
        extra=args.overrides,
        live=live,
        max_minutes=args.max_minutes,
        run=not args.no_run,
    )
    counts: dict[str, int] = {}
    for row in result.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(
        f"bench {args.suite}: {len(result.rows)} runs planned "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())}) in {result.seconds / 60:.1f} min"
    )
    print((result.out / "table.md").read_text(), end="")
    if args.benchmarks is not None:
        update_benchmarks_md(args.benchmarks, (result.out / "section.md").read_text())
        print(f"section written into {args.benchmarks}")
    print(f"results: {result.out}")
    return 0


def _print_keys() -> None:
    from rich.console import Console
    from rich.table import Table

    from fedrlprune.methods import METHODS

    table = Table("key", "type", "default", "meaning and allowed values")
    for row in describe_keys():
        table.add_row(*row)
    methods = Table("method", "what it does", "resumes")
    for name, method in METHODS.items():
        methods.add_row(name, method.summary, "yes" if method.resumable else "no")
    Console().print(table, methods)


def _setup_logging(live: bool) -> None:
    logger = logging.getLogger("fedrlprune")
    logger.setLevel(logging.INFO)
    if live:
        from rich.logging import RichHandler

        from fedrlprune.experiments.progress import CONSOLE

        handler: logging.Handler = RichHandler(console=CONSOLE, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


if __name__ == "__main__":
    raise SystemExit(main())
