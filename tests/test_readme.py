"""The README's two commands stay true: CI runs exactly its test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    test_command = ci_lines[-1]
    assert test_command.startswith("python -m pytest")
    readme = (ROOT / "README.md").read_text()
    assert test_command in readme


def test_readme_quickstart_command_exists():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[dev]" && ml-adv quickstart' in readme
