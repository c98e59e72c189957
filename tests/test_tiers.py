"""The run's closing lines: each tier's deployed model, beside a committed dense run."""

from pathlib import Path

from fedrlprune.config import Config
from fedrlprune.experiments.tiers import (
    NOISE_LEGEND,
    TRAINING_LEGEND,
    dense_reference,
    tier_lines,
    tier_rows,
)


def _client(tier: str, params: int, acc: float, speedup: float) -> dict:
    return {
        "tier": tier, "nonzero_params": params * 2, "compact_params": params,
        "effective_flops": 10 * params, "compact_flops": 8 * params, "memory_bytes": 4096,
        "latency_speedup": speedup, "accuracy_global_test": acc, "within_budget": True,
    }  # fmt: skip


SUMMARY = {
    "dense_params": 1000, "dense_flops": 16000, "flops_kind": "compact",
    "per_client": [_client("phone", 100, 0.8, 3.0), _client("mcu", 20, 0.6, 5.0),
                   _client("phone", 300, 0.9, 2.0)],
}  # fmt: skip


def test_tiers_come_weakest_first_with_compact_figures_averaged() -> None:
    rows = tier_rows(SUMMARY)
    assert [r["tier"] for r in rows] == ["mcu", "phone"]
    assert (rows[1]["clients"], rows[1]["params"]) == (2, 200)
    assert abs(rows[1]["accuracy"] - 0.85) < 1e-12
    assert rows[1]["flops"] == 1600 and rows[1]["latency_speedup"] == 2.5


def test_closing_lines_name_the_dense_run_or_say_there_is_none(tmp_path: Path) -> None:
    assert dense_reference({}, tmp_path / "missing") is None
    run = tmp_path / "benchmarks" / "results" / "dense" / "fmnist"
    run.mkdir(parents=True)
    cfg = Config.from_dict({"method": "fedavg", "rounds": 7})
    (run / "config.toml").write_text(cfg.to_toml())
    (run / "summary.json").write_text('{"final_accuracy": 0.875}')
    ours = Config.from_dict({"method": "fedrlprune", "rounds": 7, "prune_mode": "structured"})
    found = dense_reference(ours.to_dict(), run.parent)
    assert found == (0.875, "benchmarks/results/dense/fmnist")
    assert dense_reference(Config.from_dict({"rounds": 8}).to_dict(), run.parent) is None
    lines = tier_lines(SUMMARY, found)
    assert lines[1].startswith("mcu") and "(50.0x)" in lines[1] and "5.00x" in lines[1]
    assert "FLOPs (compact)" in lines[0] and lines[-1].endswith(
        "0.8750 (benchmarks/results/dense/fmnist)"
    )
    assert "no committed run" in tier_lines(SUMMARY, None)[-1]
    unmeasured = {
        **SUMMARY,
        "per_client": [{**c, "latency_speedup": None} for c in SUMMARY["per_client"]],
    }
    assert " n/a " in tier_lines(unmeasured, None)[1]  # latency_runs = 0 writes null
    assert NOISE_LEGEND not in lines


def test_a_tier_whose_speedup_is_within_the_noise_is_marked_with_a_legend() -> None:
    clients = [{**c, "latency_within_noise": c["tier"] == "mcu"} for c in SUMMARY["per_client"]]
    lines = tier_lines({**SUMMARY, "per_client": clients}, None)
    assert "~5.00x" in lines[1] and "~" not in lines[2]  # mcu, then phone
    assert lines[3] == NOISE_LEGEND and "no committed run" in lines[5]


def test_each_tier_shows_its_training_footprint_and_an_overrun_is_named() -> None:
    trained = {**SUMMARY, "train_peak_memory_mcu": 600 * 1024, "train_worst_ratio_mcu": 1.5,
               "train_peak_memory_phone": 4096, "train_worst_ratio_phone": 0.8}  # fmt: skip
    lines = tier_lines(trained, None)
    assert lines[1].endswith("600 KB  1.50x over") and lines[2].endswith("4 KB  0.80x")
    assert lines[3] == TRAINING_LEGEND
    assert tier_lines(SUMMARY, None)[1].endswith("n/a    n/a")  # a run from before it was counted
