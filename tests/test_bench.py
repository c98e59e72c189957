"""`fedrlprune bench`: table and front rules, names and suites, the quick suite end to end."""

import csv
from contextlib import nullcontext
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
    aggregate,
    dominators,
    front_line,
    gaps_over_seeds,
    markdown_table,
)
from fedrlprune.cli import main
from fedrlprune.errors import ConfigError


def _row(method: str, seed: int, acc: float, flops: float, **more: object) -> dict:
    return {
        "setup": "s",
        "method": method,
        "seed": seed,
        "status": "ok",
        "final_accuracy": acc,
        "effective_flops": flops,
        "client_accuracy_mean": acc,
        "deployed_effective_flops": flops,
        **more,
    }


# ------------------------------------------------------------------------- table and front


def test_aggregate_means_spread_and_failures() -> None:
    rows = [
        _row("a", 0, 0.80, 100, upload_mb="2.0"),
        _row("a", 1, 0.90, 300, upload_mb="4.0"),
        {"setup": "s", "method": "a", "seed": 2, "status": "failed", "error": "Boom: x"},
        {"setup": "s", "method": "b", "seed": 0, "status": "unknown", "error": "not here"},
    ]
    a, b = aggregate(rows)
    assert (a.method, a.runs, a.finished, a.status) == ("a", 3, 2, "ok")
    assert a.means["final_accuracy"] == pytest.approx(0.85)
    assert a.means["effective_flops"] == pytest.approx(200)
    assert a.means["upload_mb"] == pytest.approx(3.0)  # csv text counts as a number
    assert a.means["sim_joules"] is None  # measured by no run
    assert a.accuracy_sd == pytest.approx(0.0707107, rel=1e-5)  # sample sd, n - 1
    assert a.errors == ("Boom: x",)
    assert (b.finished, b.status, b.errors) == (0, "unknown", ("not here",))


def test_one_seed_has_no_spread() -> None:
    (only,) = aggregate([_row("a", 0, 0.8, 1)])
    assert only.accuracy_sd is None


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


def test_front_line_per_view() -> None:
    rows = [
        _row("fedrlprune", 0, 0.80, 100, client_accuracy_mean=0.5, deployed_effective_flops=90),
        _row("magnitude", 0, 0.75, 120, client_accuracy_mean=0.6, deployed_effective_flops=80),
    ]
    line = front_line(aggregate(rows), "s")
    assert "global model: **on the front**" in line
    assert "deployed models: not on the front (dominated by magnitude)" in line
    assert "not measured" in front_line(aggregate(rows[1:]), "s")


def test_markdown_table_has_one_row_per_method_and_says_why_one_is_missing() -> None:
    rows = [
        _row("a", 0, 0.8, 100),
        {"setup": "s", "method": "b", "seed": 0, "status": "unknown", "error": "x | y"},
    ]
    lines = markdown_table(aggregate(rows), "s")
    assert len(lines) == 4 and lines[2].startswith("| `a` | 1/1 | 0.8000 |")
    assert "unknown: x / y" in lines[3]  # a pipe would break the table
    assert all(line.count("|") == lines[0].count("|") for line in lines)


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


def test_summary_row_and_mean_by_round() -> None:
    row = summary_row({"upload_bytes_total": 2_500_000, "deployed_effective_flops_mean": 7.0})
    assert row["upload_mb"] == 2.5 and row["deployed_effective_flops"] == 7.0
    assert row["download_mb"] is None
    runs = [
        [{"round": "1", "x": "1"}, {"round": "2", "x": ""}],
        [{"round": "1", "x": "3"}, {"round": "2", "x": "5"}],
    ]
    assert mean_by_round(runs, "x") == ([1, 2], [2.0, 5.0])


# --------------------------------------------------------------------------- names, suites


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


def test_runs_go_seed_by_seed_and_stop_at_the_time_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake(cfg: object, *, out_dir: Path, live: bool) -> dict:
        calls.append((cfg.method, cfg.seed))  # type: ignore[attr-defined]
        Path(out_dir).mkdir(parents=True)
        return {"final_accuracy": 0.5, "effective_flops": 10}

    monkeypatch.setattr("fedrlprune.experiments.runner.run_experiment", fake)
    monkeypatch.setattr("fedrlprune.fl.simulation.ray_session", nullcontext)
    run_bench("quick", methods=["fedavg", "magnitude"], seeds=2, out=tmp_path / "a", live=False)
    assert calls == [("fedavg", 0), ("magnitude", 0), ("fedavg", 1), ("magnitude", 1)]
    cut = run_bench("quick", methods=["fedavg"], out=tmp_path / "b", live=False, max_minutes=1e-9)
    assert [r["status"] for r in cut.rows] == ["not run"]
    assert "time budget" in (tmp_path / "b" / "table.md").read_text()
    assert bench_runner.out_of_time(50, [{"run_seconds": 20}], budget=60)
    assert not bench_runner.out_of_time(30, [{"run_seconds": 20}], budget=60)


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
    for plot in ("accuracy-flops", "accuracy-rounds", "upload-rounds"):
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
    body = [line for line in table.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in body] == list(METHODS)
    assert "Front check (digits-mlp): `fedrlprune`" in table
    assert "command: `fedrlprune bench --suite quick`" in table


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
