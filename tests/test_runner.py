"""End to end through Flower's simulation engine: results files, reproducibility, your own model."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.config import Config, read_toml
from fedrlprune.errors import FedRLPruneError, RunFailed
from fedrlprune.experiments.export import export_results
from fedrlprune.experiments.runner import run_experiment

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)

# digits ships with scikit-learn: a real dataset with no files, small enough for a test.
TINY = {
    "dataset": "digits",
    "model": "mlp",
    "method": "fedavg",
    "clients": 3,
    "rounds": 2,
    "lr": 0.05,
    "latency_runs": 0,  # measured (and checked) in the magnitude run below
}
FILES = (
    "config.toml",
    "metrics.csv",
    "summary.json",
    "partitions.json",
    "report.md",
    "accuracy.png",
    "bytes.png",
    "run.log",
    "global_model.pt",
)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("run") / "a"
    return run_experiment(TINY, out_dir=out, live=False), out


def test_a_run_writes_every_results_file(first_run: tuple[dict, Path]) -> None:
    summary, out = first_run
    for name in FILES:
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2]
    assert Config.load(out / "config.toml") == Config.from_dict(TINY)
    parts = json.loads((out / "partitions.json").read_text())
    assert [p["client"] for p in parts] == [0, 1, 2]
    assert sum(sum(p["label_histogram"]) for p in parts) == sum(
        p["train"] + p["val"] + p["test"] for p in parts
    )


def test_summary_figures_are_consistent(first_run: tuple[dict, Path]) -> None:
    s, _ = first_run
    for key in (
        "method", "dataset", "model", "clients", "rounds_completed", "seed", "final_accuracy",
        "best_accuracy", "client_accuracy_mean", "dense_params", "nonzero_params",
        "param_reduction", "dense_flops", "effective_flops", "flops_reduction",
        "upload_bytes_total", "download_bytes_total", "wall_seconds",
    ):  # fmt: skip
        assert key in s, key
    assert s["rounds_completed"] == 2 and s["failed_clients"] == []
    assert 0.5 < s["final_accuracy"] <= s["best_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    # The MLP 64-200-200-10: every weight counted once, dense model, so no reduction.
    assert s["dense_params"] == 64 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    assert s["flops_reduction"] == pytest.approx(1.0)
    # Three clients, two rounds, each way a full float32 model plus small headers.
    assert s["upload_bytes_total"] == s["download_bytes_total"]
    assert 6 * 4 * s["dense_params"] <= s["upload_bytes_total"] < 6 * 4 * s["dense_params"] * 1.01


def test_same_seed_same_result_other_seed_other_result(
    first_run: tuple[dict, Path], tmp_path: Path
) -> None:
    summary, out = first_run
    again = run_experiment(TINY, out_dir=tmp_path / "b", live=False)
    assert again["final_accuracy"] == summary["final_accuracy"]
    assert (tmp_path / "b" / "partitions.json").read_text() == (out / "partitions.json").read_text()
    other = run_experiment({**TINY, "seed": 1}, out_dir=tmp_path / "c", live=False)
    assert (tmp_path / "c" / "partitions.json").read_text() != (out / "partitions.json").read_text()
    assert (
        other["final_accuracy"] != summary["final_accuracy"]
        or other["best_accuracy"] != (summary["best_accuracy"])
    )


def test_user_model_and_user_arrays_through_the_api(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(3, 2, 4, 4)).astype(np.float32)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, size=n)
        return centers[y] + rng.normal(size=(n, 2, 4, 4)).astype(np.float32), y

    x_train, y_train = make(600)
    x_test, y_test = make(200)

    class Tiny(nn.Module):
        def __init__(self, in_ch: int, classes: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_ch, 4, 3, padding=1)
            self.head = nn.Linear(4 * 16, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).flatten(1))

    cfg = {"method": "fedavg", "clients": 2, "rounds": 3, "partition": "iid", "lr": 0.05}
    model_fn = lambda shape, classes: Tiny(shape[0], classes)  # noqa: E731
    data = (x_train, y_train, x_test, y_test)
    out = tmp_path / "user"
    summary = run_experiment(cfg, model_fn=model_fn, data=data, out_dir=out, live=False)
    assert summary["model"] == "user" and summary["dataset"] == "user-arrays"
    recorded = read_toml(out / "config.toml")  # what ran, not the defaults it replaced
    assert (recorded["model"], recorded["dataset"]) == ("user", "user")
    assert "fedavg user/user" in (out / "run.log").read_text()
    # export takes the very arguments the run took
    rows = export_results(out, model_fn=model_fn, data=data)
    assert rows[0]["model"] == "dense" and (out / "export" / "dense.onnx").is_file()
    with pytest.raises(FedRLPruneError, match="data="):
        export_results(out, model_fn=model_fn)
    with pytest.raises(FedRLPruneError, match="out_dir") as err:
        run_experiment(cfg, model_fn=model_fn, data=data, out_dir=out, live=False)
    assert "--out" not in str(err.value)
    assert summary["final_accuracy"] > 0.9  # well-separated blobs
    assert summary["dense_params"] == (2 * 9 * 4 + 4) + (64 * 3 + 3)
    # conv: 2 * 4 out * 16 positions * 2 in * 9 ; linear: 2 * 64 * 3
    assert summary["dense_flops"] == 2 * 4 * 16 * 2 * 9 + 2 * 64 * 3


def _quadrant_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """3x32x32 noise with a bright square in the quadrant the label names: learnable in a few
    steps by every model in the zoo (VGG-11 needs 32x32)."""
    y = rng.integers(0, 4, size=n)
    x = rng.normal(scale=0.5, size=(n, 3, 32, 32)).astype(np.float32)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, :, 16 * r + 4 : 16 * r + 12, 16 * c + 4 : 16 * c + 12] += 2.0
    return x, y


@pytest.mark.parametrize("model", ["lenet5", "cnn", "mlp", "vgg11", "resnet18"])
def test_every_listed_model_trains_through_the_main_jobs_path(model: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = (*_quadrant_images(480, rng), *_quadrant_images(100, rng))
    cfg = {"model": model, "clients": 3, "rounds": 2, "partition": "iid", "local_epochs": 3}
    cfg |= {"lr": 0.2, "rl_episodes": 2, "latency_runs": 0}  # narrow LeNets plateau at 0.05
    out = tmp_path / model
    summary = run_experiment(cfg, data=data, out_dir=out, live=False)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["clients_replied"] for r in rows] == ["3", "3"]  # every reply accepted
    assert summary["failed_clients"] == []
    assert summary["deployed_accuracy_mean"] > 0.5  # chance: 0.25


def test_a_finished_results_folder_is_not_overwritten(first_run: tuple[dict, Path]) -> None:
    _, out = first_run
    with pytest.raises(FedRLPruneError, match="already holds a finished run"):
        run_experiment(TINY, out_dir=out, live=False)


def test_magnitude_run_prunes_within_budgets_and_exports(
    first_run: tuple[dict, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dense, _ = first_run
    cfg = {
        **TINY,
        "method": "magnitude",
        "rounds": 3,
        "prune_rate": 0.5,
        "prune_mode": "structured",
        "prune_start": 0.0,
        "prune_until": 1.0,
        "respect_budgets": True,
        "latency_runs": 50,
    }
    out = tmp_path / "mag"
    s = run_experiment(cfg, out_dir=out, live=False)
    assert s["budget_satisfaction"] == 1.0
    assert all(c["within_budget"] for c in s["per_client"])
    assert s["pruned_layers_density"] <= 0.5
    assert s["nonzero_params"] < dense["nonzero_params"] / 2
    assert s["upload_bytes_total"] < dense["upload_bytes_total"] * 3 / 2 / 2  # 3 rounds vs 2
    assert s["deployed_param_reduction"] > 2.0
    # Latency is measured (its value is not asserted: the machine is shared and noisy).
    assert s["dense_latency_ms"] > 0 and s["deployed_latency_speedup"] > 0
    assert all(c["latency_ms"] > 0 for c in s["per_client"])
    assert all(isinstance(c["latency_within_noise"], bool) for c in s["per_client"])

    from fedrlprune.cli import main

    assert main(["export", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    table = (out / "export" / "export.md").read_text()
    assert "compact (channels removed)" in table and "latency_speedup" in table
    assert "latency_within_noise" in table and "latency_iqr_ms" in table
    assert "effective_flops (compact)" in table and "memory_bytes" in table
    tiers = {c["tier"]: c["memory_bytes"] for c in reversed(s["per_client"])}  # first client
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    for tier, memory in tiers.items():  # the compact model's memory, as the summary counts it
        assert f"| {memory:,} |" in rows[f"tier-{tier}"], tier
    assert (out / "export" / "dense.onnx").stat().st_size > 0
    for name in ["global", *{f"tier-{c['tier']}" for c in s["per_client"]}]:
        assert (out / "export" / f"{name}.onnx").stat().st_size > 0


def test_fedrlprune_run_keeps_every_budget_and_reports_rates(tmp_path: Path) -> None:
    cfg = {
        "dataset": "digits",
        "model": "mlp",
        "clients": 4,
        "rounds": 3,
        "lr": 0.05,
        "heldout_clients": 1,
        "rl_episodes": 4,
        "prune_start": 0.0,
        "prune_until": 1.0,
        "device_mix": "sbc,phone,laptop,laptop",  # budgets the MLP can reach
    }
    out = tmp_path / "rl"
    s = run_experiment(cfg, out_dir=out, live=False)
    assert s["method"] == "fedrlprune"
    assert s["budget_satisfaction"] == 1.0
    assert s["budget_satisfaction_heldout"] == 1.0
    assert sum(c["heldout"] for c in s["per_client"]) == 1
    assert s["rl_episodes_total"] == 3 * 3 * 4  # 3 pruning rounds, 3 learning clients, 4 each
    rows = list(csv.DictReader((out / "rates.csv").open()))
    assert {r["layer"] for r in rows} == {"fc1", "fc2"}
    assert {int(r["round"]) for r in rows} == {1, 2, 3}
    assert (out / "rates.png").is_file() and (out / "policy.npz").is_file()
    with np.load(out / "policy.npz", allow_pickle=False) as policy:
        assert len(policy.files) > 0


def test_more_clients_than_samples_is_refused_before_the_simulation_starts(
    tmp_path: Path,
) -> None:
    cfg = {**TINY, "clients": 100, "data_fraction": 0.05}  # 72 training samples
    with pytest.raises(FedRLPruneError, match=r"72 samples cannot be split across 100 clients"):
        run_experiment(cfg, out_dir=tmp_path / "r", live=False)
    assert not (tmp_path / "r").exists()  # refused before anything was written


class _Broken(nn.Module):
    """A model every client fails to train: its forward pass raises in train mode."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("this device ran out of memory")
        return self.fc(x.flatten(1))


def test_a_run_whose_clients_all_fail_stops_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "r"
    cfg = {**TINY, "rounds": 5, "max_failed_rounds": 2}
    with pytest.raises(RunFailed, match=r"last 2 rounds .*client 0: .*ran out of memory"):
        run_experiment(
            cfg, model_fn=lambda shape, classes: _Broken(int(np.prod(shape)), classes),
            out_dir=out, live=False,
        )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_done"] == 2
    assert "budget_satisfaction" not in summary and "final_accuracy" not in summary
    lost = [r.getMessage() for r in caplog.records if "clients lost" in r.getMessage()]
    assert len(lost) == 2 and "3 of 3 clients lost (3 error)" in lost[0]  # one line a round
    assert "Traceback" not in caplog.text


def _slow_model(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A client that takes 3 s to build its model: a busy machine, a slow start."""
    import time

    time.sleep(3.0)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))


def test_a_slow_start_never_ends_a_simulation_on_the_deployment_wait(tmp_path: Path) -> None:
    # node_wait bounds how long real devices have to join; simulated clients that take six
    # times longer than it to start must still be waited for.
    cfg = {**TINY, "rounds": 1, "node_wait": 0.5}
    summary = run_experiment(cfg, model_fn=_slow_model, out_dir=tmp_path / "s", live=False)
    assert summary["rounds_completed"] == 1 and summary["failed_clients"] == []
    assert summary["setup_seconds"] > 0.5


def test_a_run_inside_a_nested_ray_session_uses_the_open_one(tmp_path: Path) -> None:
    # The bench opens its own session; inside the tests' session-wide one it must join it, or
    # its new actors wait for the cores the outer session's idle actors hold (a hang).
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    from fedrlprune.fl.simulation import ray_session

    outer = BasicActorPool.add_actors_to_pool
    with ray_session():
        assert BasicActorPool.add_actors_to_pool is outer
        summary = run_experiment({**TINY, "rounds": 1}, out_dir=tmp_path / "n", live=False)
    assert summary["rounds_completed"] == 1
    assert BasicActorPool.add_actors_to_pool is outer
