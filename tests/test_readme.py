"""The README stays true: its two commands, CI's test command, its ``ml-adv`` commands, its
links."""

import re
import shlex
from pathlib import Path

import pytest

from ml_adv.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINKED_DOCUMENTS = [p for p in (README, ROOT / "benchmarks" / "README.md") if p.exists()]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+).*?\1", re.DOTALL)
LINK = re.compile(
    r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)  # [text](target "title"), images too
REFERENCE = re.compile(
    r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE
)  # [name]: target


def _blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def _commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments and redirections dropped,
    split at ``&&``, ``||``, ``;``, ``|`` and ``&``."""
    commands = []
    for line in re.sub(r"\\\n", " ", block).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        words = iter([*lexer, ";"])
        for word in words:
            if word in ("&&", "||", ";", "|", "&"):
                if command:
                    commands.append(shlex.join(command))
                command = []
            elif word in (">", ">>", "<", "&>"):
                next(words, None)  # the redirection's file is no argument
            else:
                command.append(word)
    return commands


def _relative_links(markdown: str) -> list[str]:
    """Link targets that name a file of the repository (no URL, no pure ``#anchor``), anchors
    cut."""
    prose = INLINE_CODE.sub("", FENCE.sub("", markdown))
    targets = LINK.findall(prose) + REFERENCE.findall(prose)
    return [
        t.split("#", 1)[0]
        for t in targets
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t) and not t.startswith(("#", "//"))
    ]


def test_the_two_commands_are_exactly_install_plus_quickstart_and_the_tests():
    text = README.read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert [b.strip() for b in _blocks(section, "bash")] == [
        'pip install -e ".[dev]" && ml-adv quickstart',
        "python -m pytest -q",
    ]


def test_ci_runs_the_readme_test_command():
    ci_lines = [
        line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()
    ]
    section = README.read_text().split("## Two commands", 1)[1]
    assert ci_lines[-1] == _blocks(section, "bash")[1].strip() == "python -m pytest -q"


def _readme_cli_commands() -> list[list[str]]:
    commands = [c for block in _blocks(README.read_text(), "bash") for c in _commands(block)]
    return [shlex.split(c)[1:] for c in commands if shlex.split(c)[0] == "ml-adv"]


def test_every_ml_adv_command_in_the_readme_parses(capsys):
    """Parsed by the CLI's own parser (``ml_adv.cli.main`` does the same); nothing runs."""
    commands = _readme_cli_commands()
    assert ["quickstart"] in commands and len(
        commands
    ) >= 5  # the extraction found the README's commands
    for argv in commands:
        try:
            args = build_parser(argv).parse_args(argv)
        except SystemExit as exc:
            pytest.fail(
                f"README command `ml-adv {shlex.join(argv)}` does not parse (exit {exc.code}): "
                f"{capsys.readouterr().err.strip()}"
            )
        assert args.command == argv[0] and callable(args._run)


@pytest.mark.parametrize("document", LINKED_DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_to_files_of_the_repository(document):
    missing = [
        t for t in _relative_links(document.read_text()) if t and not (document.parent / t).exists()
    ]
    assert not missing, f"{document.relative_to(ROOT)} links to missing files: {missing}"


def test_the_readme_checks_can_fail():
    """The extractors on a made-up document: a broken command, links of every kind."""
    block = (
        "ml-adv train --epochs 3 \\\n  --data digits   # a comment\n"
        "pip install x && ml-adv hpo --trials 2; ls | wc > n\n"
    )
    assert _commands(block) == [
        "ml-adv train --epochs 3 --data digits",
        "pip install x",
        "ml-adv hpo --trials 2",
        "ls",
        "wc",
    ]
    with pytest.raises(SystemExit):
        build_parser(["train", "--epochs", "zero"]).parse_args(["train", "--epochs", "zero"])
    markdown = (
        'See [a](docs/a.md#part), ![plot](plots/x.png "title"), [web](https://x.org/a.md), '
        "[top](#top),\n"
        "`[code](not/a/link.md)` and [ref]: ../b.md\n\n[ref]: ../b.md\n```python\nx = [1](2)\n```\n"
    )
    assert _relative_links(markdown) == ["docs/a.md", "plots/x.png", "../b.md"]
