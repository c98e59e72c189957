"""The policy ablations end to end: `rl_policy = "central"` trains one agent on one client."""

from pathlib import Path

import pytest

from fedrlprune.experiments.runner import run_experiment

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)

TINY = {
    "dataset": "digits",
    "model": "mlp",
    "method": "fedrlprune",
    "clients": 3,
    "rounds": 3,
    "lr": 0.05,
    "rl_episodes": 12,  # enough transitions for the agent to pass learning_starts
    "latency_runs": 0,  # tests/test_runner.py checks the measurement
}


def test_central_policy_trains_on_one_client_and_every_client_deploys(tmp_path: Path) -> None:
    summary = run_experiment({**TINY, "rl_policy": "central"}, out_dir=tmp_path / "c", live=False)
    # Three rounds prune once (round 1); only the trainer ran episodes: 12, not 3 clients x 12.
    assert summary["rl_episodes_total"] == 12
    assert summary["rl_updates_total"] > 0  # the agent took gradient steps, counted end to end
    assert summary["failed_clients"] == []
    assert [c["client"] for c in summary["per_client"]] == [0, 1, 2]  # everyone deployed
    assert (tmp_path / "c" / "policy.npz").is_file()
