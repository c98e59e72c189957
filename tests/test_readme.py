"""The README and the docs stay true: every config key is documented as the code declares it,
the API example runs, CI runs the README's test command, and every relative link resolves."""

import re
from pathlib import Path

import pytest

from fedrlprune.config import Config, keys_markdown

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_config_key_is_documented_as_the_code_declares_it() -> None:
    for key in Config().to_dict():
        assert f"| `{key}` |" in CONFIGURATION, key
    # regenerate with: .venv/bin/fedrlprune keys --markdown
    assert keys_markdown() in CONFIGURATION


def test_the_readme_links_the_configuration_page() -> None:
    assert "(docs/configuration.md)" in README


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
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/test.sh" in README


def test_the_readme_keeps_the_fresh_machine_commands() -> None:
    assert "bash scripts/setup.sh && .venv/bin/fedrlprune run\n" in README
    assert "bash scripts/test.sh\n" in README


# [text](target) and ![alt](target), with an optional "title"; code spans and blocks removed first
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def relative_links(text: str) -> list[str]:
    """The link and image targets of a markdown page that point inside the repository."""
    targets = _LINK.findall(_CODE.sub("", text))
    return [t for t in targets if not re.match(r"(https?|mailto):", t, re.I)]


def test_relative_links_finds_links_and_images_and_skips_the_web() -> None:
    text = (
        "[a](docs/a.md#part) ![b](img/b.png) [c](https://x.org/c.md) [d](mailto:d@x.org)"
        ' [e](#here) [f](../f.md "title") `[g](not/a/link.md)`\n```\n[h](nor/this.md)\n```\n'
    )
    assert relative_links(text) == ["docs/a.md#part", "img/b.png", "#here", "../f.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_in_the_repository(page: Path) -> None:
    assert page.is_file()
    broken = []
    for target in relative_links(page.read_text()):
        path = target.split("#", 1)[0]
        if not path:  # an anchor on the same page
            continue
        resolved = (page.parent / path).resolve()
        if not resolved.exists() or not resolved.is_relative_to(ROOT.resolve()):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


@pytest.mark.parametrize("page", PAGES[2:], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_readme_links_every_docs_page(page: Path) -> None:
    assert f"docs/{page.name}" in relative_links(README)
