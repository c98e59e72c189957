"""The README stays true: every config key is documented and the API example runs."""

import re
from pathlib import Path

import pytest

from fedrlprune.config import Config, keys_markdown

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_config_key_is_documented_as_the_code_declares_it() -> None:
    for key in Config().to_dict():
        assert f"| `{key}` |" in README, key
    # regenerate with: .venv/bin/fedrlprune keys --markdown
    assert keys_markdown() in README


def test_the_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    summary = scope["summary"]
    assert isinstance(summary, dict) and summary["rounds_completed"] == 3
    assert (tmp_path / "results" / "my-run" / "summary.json").is_file()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/test.sh" in README
