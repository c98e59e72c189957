"""The command line: a run from the README's quick command, and user mistakes without tracebacks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedrlprune.cli import main


def test_keys_lists_every_config_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    for key in ("dataset", "data_fraction", "alpha", "local_epochs"):
        assert key in out
    assert "lotteryfl" in out and "mask-count" in out  # each method in a line, from the registry


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--set", "rounds=zero"], ["rounds", "int"]),
        (["run", "--set", "colour=red"], ["unknown config key", "colour"]),
        (["run", "--config", "missing.toml"], ["missing.toml", "does not exist"]),
        (["run", "--set", "dataset=npz", "--set", "data_path=/nowhere.npz"], ["nowhere"]),
        (
            ["run", "--set", "data_path=/nonexistent/fmnist"],
            ["data_path", "/nonexistent/fmnist", "does not exist"],
        ),
    ],
)
def test_user_mistakes_exit_2_with_a_message(
    args: list[str], words: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_quick_run_as_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    proc = subprocess.run(
        [sys.executable, "-m", "fedrlprune", "run", "--set", "clients=4", "--set", "rounds=2",
         "--set", "data_fraction=0.1", "--set", "dataset=digits", "--set", "model=mlp",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"results: {out}" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["rounds_completed"] == 2
