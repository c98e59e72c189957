from fedrlprune.experiments.stats import (
    failed_run,
    failure_line,
    short_reason,
    training_summary,
)

RAY = (
    "<class 'flwr.clientapp.ClientAppException'>:<'\n\nException ClientAppException occurred. "
    'Message: Traceback (most recent call last):\n  File "x.py", line 3, in f\n    g()\n'
    "fedrlprune.errors.PayloadError: bn1.num_batches_tracked: shape (1,), the model has ()\n'>"
)


def test_short_reason_is_the_exception_line_of_a_remote_traceback() -> None:
    assert short_reason(RAY) == (
        "fedrlprune.errors.PayloadError: bn1.num_batches_tracked: shape (1,), the model has ()"
    )
    assert short_reason("") == "no reason given"
    assert len(short_reason("x" * 1000)) == 300


def test_failure_line_counts_the_kinds_and_names_the_first_client() -> None:
    lost = {3: ("timeout", "no reply"), 1: ("error", RAY)}
    line = failure_line(7, 4, lost)
    assert line.startswith("round 7: 2 of 4 clients lost (1 error, 1 timeout); first, client 1:")
    assert line.endswith("the model has ()") and "\n" not in line


def _rows(replied: list[int]) -> list[dict[str, int]]:
    return [{"round": i + 1, "clients_replied": n} for i, n in enumerate(replied)]


def test_a_run_fails_after_the_limit_of_rounds_without_a_reply() -> None:
    dropped = {"3": [{"client": 2, "reason": "error", "detail": RAY}]}
    assert failed_run(_rows([0, 0]), dropped, 3) is None  # not yet 3 in a row
    assert failed_run(_rows([0, 2, 0, 0]), dropped, 3) is None  # round 2 trained
    why = failed_run(_rows([0, 0, 0]), dropped, 3)
    assert why is not None and "last 3 rounds (round 3, client 2: fedrlprune" in why
    assert failed_run(_rows([0] * 9), dropped, 0) is None  # 0: never stop early
    assert "in any round" in (failed_run(_rows([0] * 9), {}, 0, finished=True) or "")
    assert failed_run(_rows([0, 1]), {}, 0, finished=True) is None


def test_training_summary_counts_client_rounds_within_every_limit() -> None:
    nan = float("nan")
    rows = [
        {"clients_replied": 3, "train_within_clients": 2, "train_ratio_mcu": 1.4,
         "train_memory_mcu": 600_000, "train_ratio_laptop": 0.5, "train_memory_laptop": 9e6},
        {"clients_replied": 1, "train_within_clients": 1, "train_ratio_mcu": nan,
         "train_memory_mcu": nan, "train_ratio_laptop": 0.7, "train_memory_laptop": 8e6},
    ]  # fmt: skip
    out = training_summary(rows)
    assert out["train_budget_satisfaction"] == 0.75
    assert out["train_worst_ratio_mcu"] == 1.4 and out["train_peak_memory_mcu"] == 600_000
    assert out["train_peak_memory_laptop"] == 9e6 and out["train_worst_ratio_laptop"] == 0.7
    assert out["train_peak_memory_phone"] is None  # no phone trained
