"""`fedrlprune bench`: table and front rules, names and suites, the quick suite end to end."""

import csv
import json
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import pytest

from fedrlprune.bench import runner as bench_runner
from fedrlprune.bench.plots import mean_by_round
from fedrlprune.bench.runner import RESULT_COLUMNS, run_bench, summary_row
from fedrlprune.bench.section import update_benchmarks_md
from fedrlprune.bench.suites import (
    METHODS,
    QUICK,
    SUITES,
    get_suite,
    method_unavailable,
    parse_methods,
    pick_setups,
    run_config,
)
from fedrlprune.bench.table import (
    TARGET_SHARE,
    accuracy_target,
    aggregate,
    dominators,
    front_line,
    gaps_over_seeds,
    kinds_present,
    markdown_table,
    of_kind,
    time_table,
    time_to_accuracy,
)
from fedrlprune.cli import main
from fedrlprune.errors import ConfigError
from fedrlprune.methods import METHODS as REGISTRY


def _row(method: str, seed: int, acc: float, cost: float, **more: object) -> dict:
    """A finished unstructured run: deployed accuracy `acc` at `cost` FLOPs and params."""
    return {
        "setup": "s",
        "method": method,
        "seed": seed,
        "status": "ok",
        "flops_kind": "theoretical",
        "final_accuracy": acc,
        "effective_flops": cost,
        "deployed_accuracy_mean": acc,
        "deployed_flops": cost,
        "deployed_params": cost,
        **more,
    }


def _compact(method: str, acc: float, cost: float, speedup: float) -> dict:
    return _row(method, 0, acc, cost, flops_kind="compact", deployed_latency_speedup=speedup)


def _failed(method: str, error: str, kind: str | None) -> dict:
    return {"setup": "s", "method": method, "seed": 0, "status": "failed", "error": error,
            "flops_kind": kind}  # fmt: skip


# ------------------------------------------------------------------------- table and front


def test_aggregate_means_spread_and_failures() -> None:
    rows = [
        _row("a", 0, 0.80, 100, upload_mb="2.0"),
        _row("a", 1, 0.90, 300, upload_mb="4.0"),
        _failed("a", "Boom: x", "theoretical"),
        {**_failed("b", "not here", None), "status": "unknown"},
    ]
    a, b = aggregate(rows)
    assert (a.method, a.flops_kind, a.runs, a.finished, a.status) == (
        "a",
        "theoretical",
        3,
        2,
        "ok",
    )
    assert a.means["deployed_accuracy_mean"] == pytest.approx(0.85)
    assert a.means["deployed_flops"] == pytest.approx(200)
    assert a.means["upload_mb"] == pytest.approx(3.0)  # csv text counts as a number
    assert a.means["deployed_latency_speedup"] is None  # measured by no run
    assert a.sds["deployed_accuracy_mean"] == pytest.approx(0.0707107, rel=1e-5)  # n - 1
    assert a.errors == ("Boom: x",)
    assert (b.finished, b.status, b.flops_kind, b.errors) == (0, "unknown", None, ("not here",))


def test_one_seed_has_no_spread() -> None:
    (only,) = aggregate([_row("a", 0, 0.8, 1)])
    assert only.sds["deployed_accuracy_mean"] is None


def test_compact_and_theoretical_figures_are_never_averaged_together() -> None:
    rows = [_row("a", 0, 0.8, 100), _row("a", 1, 0.6, 10, flops_kind="compact")]
    theoretical, compact = aggregate(rows)
    assert (theoretical.flops_kind, theoretical.means["deployed_flops"]) == ("theoretical", 100)
    assert (compact.flops_kind, compact.means["deployed_flops"]) == ("compact", 10)


def test_dominators_need_strictly_better_on_both_axes() -> None:
    points = {
        "ours": (0.80, 100.0),
        "worse": (0.70, 200.0),  # dominated by ours, dominates nothing
        "cheaper_worse": (0.60, 50.0),  # fewer FLOPs but less accurate: no
        "tie_flops": (0.90, 100.0),  # same FLOPs: not "fewer"
        "tie_acc": (0.80, 10.0),  # same accuracy: not "higher"
        "missing": (None, 1.0),  # no figure: takes no part
    }
    assert dominators(points, "ours") == []
    assert dominators(points, "worse") == ["ours", "tie_flops", "tie_acc"]
    assert dominators({**points, "best": (0.95, 20.0)}, "ours") == ["best"]
    assert dominators(points, "missing") is None
    assert dominators(points, "absent") is None


def test_a_compact_and_a_theoretical_figure_never_land_in_one_front() -> None:
    rows = [
        _row("fedavg", 0, 0.90, 1000, deployed_latency_speedup=1.0),  # dense: in both
        _compact("fedrlprune", 0.80, 200, speedup=3.0),
        _compact("heterofl", 0.70, 300, speedup=2.0),
        _row("fedrlprune-unstructured", 0, 0.85, 400),
        # more accurate than fedrlprune at fewer (theoretical) FLOPs and params and a higher
        # speed-up: it would dominate fedrlprune on every front of a mixed table
        _row("magnitude", 0, 0.88, 50, deployed_latency_speedup=5.0),
    ]
    table = aggregate(rows)
    compact = front_line(table, "s", "compact")
    assert "measured latency: **on the front**" in compact
    assert "compact params: **on the front**" in compact and "magnitude" not in compact
    theoretical = front_line(table, "s", "theoretical")
    assert "`fedrlprune-unstructured`" in theoretical
    assert "dominated by magnitude" in theoretical and "heterofl" not in theoretical
    methods = [r.method for r in of_kind(table, "s", "compact")]
    assert methods == ["fedavg", "fedrlprune", "heterofl"]


def test_a_higher_speedup_and_fewer_params_dominate() -> None:
    rows = [
        _row("fedavg", 0, 0.70, 1000, deployed_latency_speedup=1.0),
        _compact("fedrlprune", 0.80, 200, speedup=2.0),
        _compact("uniform", 0.85, 300, speedup=2.5),  # faster, not smaller
    ]
    line = front_line(aggregate(rows), "s", "compact")
    assert "measured latency: not on the front (dominated by uniform)" in line
    assert "compact params: **on the front**" in line
    assert "not measured" in front_line(aggregate(rows[:1]), "s", "compact")


def test_the_reference_alone_gets_one_table_and_joins_the_others() -> None:
    reference = _row("fedavg", 0, 0.9, 10)
    both = aggregate([reference, _compact("lamp", 0.8, 5, 2.0), _row("magnitude", 0, 0.7, 5)])
    assert kinds_present(both, "s") == ["compact", "theoretical"]
    assert kinds_present(aggregate([reference, _compact("lamp", 0.8, 5, 2.0)]), "s") == ["compact"]
    assert kinds_present(aggregate([reference]), "s") == ["theoretical"]


def test_markdown_tables_label_their_flops_and_say_why_a_method_is_missing() -> None:
    rows = [
        _row("fedavg", 0, 0.9, 1000, accuracy_mcu=0.25, accuracy_laptop=0.75),
        _compact("fedrlprune", 0.8, 100, 2.0),
        _failed("lamp", "x | y", "compact"),
        _row("magnitude", 0, 0.7, 50),
    ]
    table = aggregate(rows)
    compact = markdown_table(table, "s", "compact")
    theoretical = markdown_table(table, "s", "theoretical")
    assert "compact FLOPs" in compact[0] and "theoretical" not in compact[0]
    assert "theoretical FLOPs (deployed)" in theoretical[0] and "compact" not in theoretical[0]
    assert "latency speed-up (measured)" in compact[0]
    assert [line.split("`")[1] for line in compact[2:]] == ["fedavg", "fedrlprune", "lamp"]
    assert [line.split("`")[1] for line in theoretical[2:]] == ["fedavg", "magnitude"]
    assert "| 0.9000 | 0.2500 | n/a | n/a | 0.7500 |" in compact[2]  # per tier
    assert "failed: x / y" in compact[4]  # a pipe would break the table
    assert all(line.count("|") == compact[0].count("|") for line in compact)


def test_gaps_over_seeds_are_paired_within_each_seed() -> None:
    def row(variant: str, acc: float | None, bs: float = 1.0) -> dict:
        return {"variant": variant, "deployed_accuracy_mean": acc, "budget_satisfaction": bs}

    seeds = [
        [row("fedavg", 0.88), row("pruned", 0.87, 1.0), row("gone", 0.5)],
        [row("fedavg", 0.86), row("pruned", 0.84, 0.9), row("gone", None)],
    ]
    (gap,) = gaps_over_seeds(seeds, "fedavg")  # "gone" lacks a seed: left out, not averaged
    assert gap.variant == "pruned"
    assert gap.gap_points == pytest.approx((1.0, 2.0))
    assert gap.mean_gap == pytest.approx(1.5)
    assert gap.sd_gap == pytest.approx(0.7071, abs=1e-4)
    assert gap.worst_budget_satisfaction == 0.9
    assert gaps_over_seeds(seeds[:1], "fedavg")[0].sd_gap is None
    with pytest.raises(ValueError, match="reference 'dense'"):
        gaps_over_seeds(seeds, "dense")
    with pytest.raises(ValueError, match="seed 1 is not a list of rows"):
        gaps_over_seeds([seeds[0], {"fedavg": 0.88}], "fedavg")  # type: ignore[list-item]


def _client(tier: str, acc: float, **cost: float) -> dict:
    return {"tier": tier, "accuracy_global_test": acc, "nonzero_params": 99, **cost}


def test_summary_row_takes_its_kinds_figures_and_per_tier_accuracy() -> None:
    clients = [
        _client("mcu", 0.5, compact_params=10, compact_flops=20),
        _client("mcu", 0.7, compact_params=30, compact_flops=40),
        _client("laptop", float("nan"), compact_params=50, compact_flops=60),
    ]
    summary = {
        "flops_kind": "compact",
        "per_client": clients,
        "upload_bytes_total": 2_500_000,
        "deployed_latency_speedup": 2.5,
        "deployed_memory_bytes_mean": 7.0,
    }
    row = summary_row(summary)
    assert row["flops_kind"] == "compact" and row["upload_mb"] == 2.5
    assert (row["deployed_params"], row["deployed_flops"]) == (30, 40)  # compact, not non-zero
    assert row["accuracy_mcu"] == pytest.approx(0.6)
    assert row["accuracy_laptop"] is None and row["accuracy_phone"] is None  # NaN; no client
    assert (row["deployed_latency_speedup"], row["deployed_memory_bytes_mean"]) == (2.5, 7.0)
    sparse = [_client("sbc", 0.4, theoretical_flops=9, sparse_bytes=44)]
    row = summary_row({"flops_kind": "theoretical", "per_client": sparse})
    assert (row["deployed_params"], row["deployed_flops"], row["accuracy_sbc"]) == (99, 9, 0.4)
    assert row["download_mb"] is None
    for tier in ("mcu", "sbc", "phone", "laptop"):
        assert f"accuracy_{tier}" in RESULT_COLUMNS
    for column in ("flops_kind", "deployed_latency_speedup", "deployed_memory_bytes_mean"):
        assert column in RESULT_COLUMNS


def test_mean_by_round() -> None:
    runs = [
        [{"round": "1", "x": "1"}, {"round": "2", "x": ""}],
        [{"round": "1", "x": "3"}, {"round": "2", "x": "5"}],
    ]
    assert mean_by_round(runs, "x") == ([1, 2], [2.0, 5.0])


# --------------------------------------------------------------------------- names, suites


def test_time_to_accuracy_counts_every_rounds_device_time_up_to_the_first_hit() -> None:
    rounds = [
        {"round": "1", "sim_seconds": "10", "test_accuracy": "0.5"},
        {"round": "2", "sim_seconds": "20", "test_accuracy": ""},  # not evaluated: time only
        {"round": "3", "sim_seconds": "30", "test_accuracy": "0.81"},
        {"round": "4", "sim_seconds": "40", "test_accuracy": "0.9"},
    ]
    assert time_to_accuracy(rounds, 0.8) == (3, 60.0)
    assert time_to_accuracy(rounds, 0.95) is None


def test_the_accuracy_target_is_a_share_of_dense_fedavg_and_the_table_says_who_reached_it() -> None:
    rows = [
        {"setup": "s", "method": "fedavg", "status": "ok", "final_accuracy": 0.8, "sim_seconds": 9},
        {"setup": "s", "method": "fedavg", "status": "ok", "final_accuracy": 0.9, "sim_seconds": 9},
        {"setup": "s", "method": "fedavg", "status": "failed", "final_accuracy": 0.1},
        {"setup": "s", "method": "x", "status": "ok", "sim_seconds_to_target": 4,
         "rounds_to_target": 2, "sim_seconds": 5},
        {"setup": "s", "method": "x", "status": "ok", "sim_seconds": 5},
    ]  # fmt: skip
    assert accuracy_target(rows) == pytest.approx(TARGET_SHARE * 0.85)
    assert accuracy_target([r for r in rows if r["method"] == "x"]) is None
    lines = time_table(rows, "s")
    assert "| `x` | 1/2 | 4.0 | 2.0 | 5.0 |" in lines
    assert "| `fedavg` | 0/2 | not reached |  | 9.0 |" in lines
    assert time_table(rows, "other") == []


def test_method_names_are_checked_and_listed() -> None:
    assert parse_methods(None) == tuple(METHODS)
    assert parse_methods(["fedavg,magnitude", "fedavg"]) == ("fedavg", "magnitude")
    with pytest.raises(ConfigError, match="use any of: fedavg, magnitude"):
        parse_methods(["fedavg", "nope"])
    with pytest.raises(ConfigError, match="use one of: quick, standard"):
        get_suite("huge")
    standard = get_suite("standard")
    assert [s.name for s in pick_setups(standard, ["digits-mlp"]).setups] == ["digits-mlp"]
    assert pick_setups(standard, None) is standard
    known = "its setups: fmnist-lenet5, digits-mlp, synthetic-mlp, fmnist-cnn"
    with pytest.raises(ConfigError, match=known):
        pick_setups(standard, ["fmnist"])


def test_every_suite_setup_is_a_valid_config() -> None:
    for suite in SUITES.values():
        for setup in suite.setups:
            assert run_config(setup, "fedavg", 0).dataset == setup.dataset


def test_run_config_order_setup_then_set_then_method_and_seed() -> None:
    setup = QUICK.setups[0]
    cfg = run_config(setup, "fedrlprune-naive", 2, ["rounds=3", "aggregation=vote"])
    assert (cfg.rounds, cfg.clients, cfg.seed) == (3, setup.overrides["clients"], 2)
    assert (cfg.method, cfg.aggregation) == ("fedrlprune", "naive")  # the method wins
    with pytest.raises(ConfigError):
        run_config(setup, "fedavg", 0, ["rounds=0"])


def test_a_method_this_version_lacks_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "future", {"method": "future"})
    why = method_unavailable("future")
    assert why is not None and "unknown to this version" in why
    assert method_unavailable("fedavg") is None


def test_update_benchmarks_md_replaces_its_own_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nby hand\n")
    quick = "<!-- bench:quick start -->\nold\n<!-- bench:quick end -->\n"
    update_benchmarks_md(path, quick)
    update_benchmarks_md(path, "<!-- bench:standard start -->\nS\n<!-- bench:standard end -->\n")
    update_benchmarks_md(path, quick.replace("old", "new"))
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nby hand\n\n<!-- bench:quick start -->\nnew\n")
    assert "old" not in text and text.count("bench:standard start") == 1


def test_a_failing_run_is_recorded_and_the_bench_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("client exploded")

    monkeypatch.setattr("fedrlprune.experiments.runner.run_experiment", boom)
    run_dir = tmp_path / "run"
    row = bench_runner.one_run(QUICK.setups[0], "fedavg", 0, (), run_dir, live=False)
    assert row["status"] == "failed" and row["error"] == "RuntimeError: client exploded"
    assert "client exploded" in (run_dir / "error.txt").read_text()


def test_a_run_stopped_part_way_goes_on_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedrlprune.federation.checkpoint import CHECKPOINT

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CHECKPOINT).write_bytes(b"")
    resumed: list = []

    def resume(results: Path, *, config: object, live: bool) -> dict:
        resumed.append((results, config))
        return {"final_accuracy": 0.7}

    def never(*args: object, **kwargs: object) -> dict:
        raise AssertionError("started again from round 1")

    monkeypatch.setattr("fedrlprune.experiments.runner.resume_experiment", resume)
    monkeypatch.setattr("fedrlprune.experiments.runner.run_experiment", never)
    row = bench_runner.one_run(QUICK.setups[0], "fedavg", 0, (), run_dir, live=False)
    assert row["status"] == "ok" and row["final_accuracy"] == 0.7
    assert resumed == [(run_dir, bench_runner.run_config(QUICK.setups[0], "fedavg", 0))]


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> list:
    """The configs the bench runs, recorded instead of run (no simulation, no Ray)."""
    calls: list = []

    def fake(cfg: object, *, out_dir: Path, live: bool) -> dict:
        calls.append(cfg)
        summary = {"final_accuracy": 0.5, "effective_flops": 10}
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr("fedrlprune.experiments.runner.run_experiment", fake)
    monkeypatch.setattr("fedrlprune.fl.simulation.ray_session", nullcontext)
    return calls


def test_runs_go_seed_by_seed_and_stop_at_the_time_budget(tmp_path: Path, fake_runs: list) -> None:
    run_bench("quick", methods=["fedavg", "magnitude"], seeds=2, out=tmp_path / "a", live=False)
    runs = [(c.method, c.seed) for c in fake_runs]
    assert runs == [("fedavg", 0), ("magnitude", 0), ("fedavg", 1), ("magnitude", 1)]
    cut = run_bench("quick", methods=["fedavg"], out=tmp_path / "b", live=False, max_minutes=1e-9)
    assert [r["status"] for r in cut.rows] == ["not run"]
    assert "time budget" in (tmp_path / "b" / "table.md").read_text()
    again = run_bench("quick", methods=["fedavg", "magnitude"], seeds=2, out=tmp_path / "a",
                      live=False, max_minutes=1e-9)  # fmt: skip
    assert [r["status"] for r in again.rows] == ["ok"] * 4  # read back, whatever the budget
    assert len(fake_runs) == 4  # and nothing run again
    only_read = run_bench("quick", methods=["fedavg"], seeds=3, out=tmp_path / "a", live=False,
                          run=False)  # fmt: skip
    assert [r["status"] for r in only_read.rows] == ["ok", "ok", "not run"]
    assert "--no-run" in only_read.rows[2]["error"] and len(fake_runs) == 4
    assert bench_runner.out_of_time(50, [{"run_seconds": 20}], budget=60)
    assert not bench_runner.out_of_time(30, [{"run_seconds": 20}], budget=60)


def test_a_suite_runs_its_own_methods_unless_told(tmp_path: Path, fake_runs: list) -> None:
    suite = replace(QUICK, methods=("fedavg", "uniform"))
    run_bench(suite, out=tmp_path / "own", live=False)
    run_bench(suite, methods=["magnitude"], out=tmp_path / "told", live=False)
    assert [c.method for c in fake_runs] == ["fedavg", "uniform", "magnitude"]


def test_a_setup_runs_only_its_own_methods(tmp_path: Path, fake_runs: list) -> None:
    every = QUICK.setups[0]
    few = replace(every, name="few", methods=("magnitude",))
    suite = replace(QUICK, setups=(every, few))
    run_bench(suite, methods=["fedavg", "magnitude"], out=tmp_path, live=False)
    assert [c.method for c in fake_runs] == ["fedavg", "magnitude", "magnitude"]


def test_bad_bench_arguments_are_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--suite", "quick", "--methods", "fedavg,bogus"]) == 2
    assert "use any of: fedavg" in capsys.readouterr().err
    assert main(["bench", "--suite", "quick", "--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err


# ------------------------------------------------------------------- the quick suite itself


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("bench") / "quick"
    result = run_bench("quick", out=out, live=False, command="fedrlprune bench --suite quick")
    return out, result.rows


def test_quick_suite_writes_every_file(quick_bench: tuple[Path, list[dict]]) -> None:
    out, _ = quick_bench
    setup = QUICK.setups[0].name
    for name in ("results.csv", "table.md", "section.md"):
        assert (out / name).is_file(), name
    for plot in ("fronts", "accuracy-rounds", "upload-rounds", "accuracy-time"):
        assert (out / f"{setup}-{plot}.png").stat().st_size > 0, plot
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert [r["method"] for r in rows] == list(METHODS)  # one row per method (1 seed)


def test_quick_suite_runs_every_method_this_version_has(
    quick_bench: tuple[Path, list[dict]],
) -> None:
    out, rows = quick_bench
    for row in rows:
        expected = "unknown" if method_unavailable(row["method"]) else "ok"
        assert row["status"] == expected, (row["method"], row.get("error"))
        if expected == "ok":
            assert (Path(row["out_dir"]) / "summary.json").is_file()
    table = (out / "table.md").read_text()
    budgeted, unstructured = table.split("**Unstructured")
    unstructured, timed = unstructured.split("**Time to accuracy")
    assert [_methods(budgeted), _methods(unstructured)] == [
        [m for m in METHODS if m == "fedavg" or m in STRUCTURED_RUNS],
        [m for m in METHODS if m == "fedavg" or m in UNSTRUCTURED_RUNS],
    ]
    assert _methods(timed) == list(METHODS)  # time is time: every method in one table
    assert "Front check (digits-mlp, compact FLOPs): `fedrlprune`" in budgeted
    assert "Front check (digits-mlp, theoretical FLOPs): `fedrlprune-unstructured`" in table
    assert "command: `fedrlprune bench --suite quick`" in table


# Where the issue puts each method: the budgeted methods and the method's ablations structured,
# the unstructured baselines beside the method run unstructured; fedavg is in both.
STRUCTURED_RUNS = {"heterofl", "fedrolex", "uniform", "lamp", "fedmp", "fedrlprune", "smallest"}
STRUCTURED_RUNS |= {"rl-local", "rl-central", "fedrlprune-naive"}
UNSTRUCTURED_RUNS = {"magnitude", "prunefl", "feddst", "lotteryfl", "fedrlprune-unstructured"}


def _methods(markdown: str) -> list[str]:
    return [line.split("`")[1] for line in markdown.splitlines() if line.startswith("| `")]


def test_quick_suite_puts_each_run_in_the_table_of_its_summarys_flops_kind(
    quick_bench: tuple[Path, list[dict]],
) -> None:
    _, rows = quick_bench
    assert set(METHODS) == STRUCTURED_RUNS | UNSTRUCTURED_RUNS | {"fedavg"}, "a new method?"
    assert set(REGISTRY) <= {r["method"] for r in rows}  # every registered method runs
    for row in rows:
        summary = json.loads((Path(row["out_dir"]) / "summary.json").read_text())
        expected = "compact" if row["method"] in STRUCTURED_RUNS else "theoretical"
        if row["method"] != "fedavg":
            assert summary["flops_kind"] == row["flops_kind"] == expected, row["method"]
        if expected == "compact":  # measured, and the compact model's figures
            assert row["deployed_latency_speedup"] is not None, row["method"]
            clients = summary["per_client"]
            params = sum(c["compact_params"] for c in clients) / len(clients)
            assert row["deployed_params"] == pytest.approx(params), row["method"]


def test_quick_suite_resumes_finished_runs(
    quick_bench: tuple[Path, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, rows = quick_bench

    def never(*args: object, **kwargs: object) -> dict:
        raise AssertionError("a finished run ran again")

    monkeypatch.setattr("fedrlprune.experiments.runner.run_experiment", never)
    again = run_bench("quick", methods=["fedavg"], out=out, live=False)
    first = next(r for r in rows if r["method"] == "fedavg")
    assert again.rows[0]["final_accuracy"] == first["final_accuracy"]
    assert again.rows[0].get("resumed") is True


def test_benchmarks_md_states_the_standard_suite_as_the_code_has_it() -> None:
    page = (Path(__file__).parent.parent / "BENCHMARKS.md").read_text()
    for setup in get_suite("standard").setups:
        assert f"| `{setup.name}` | {setup.seeds} | {setup.settings()}; " in page, setup.name
    assert f"would end after {get_suite('standard').max_minutes:.0f}" in page
