"""The README stays true: its two commands, CI's test command, its ``ml-adv`` commands, its
links, and its runnable examples.

A Python block whose fence reads ```` ```python runnable ```` runs here as written, each in a
fresh namespace and an empty temporary folder (``test_runnable_blocks_run_as_written``): keep
such blocks tiny (tiny sizes, 1-2 epochs, ``run=QUIET``). Other Python blocks must compile;
``tests/test_cli.py`` runs the trainer and core blocks with shortened settings.
"""

import re
import shlex
from pathlib import Path

import pytest

from ml_adv.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINKED_DOCUMENTS = [
    p
    for p in (README, ROOT / "benchmarks" / "README.md", ROOT / "docs" / "digits_notes.md")
    if p.exists()
]
RUNNABLE_MARK = "runnable"
MAX_RUNNABLE_EPOCHS = 2

FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
INLINE_CODE = re.compile(r"(`+).*?\1", re.DOTALL)
LINK = re.compile(
    r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)  # [text](target "title"), images too
REFERENCE = re.compile(
    r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE
)  # [name]: target


def _blocks(text: str, language: str) -> list[str]:
    return [body for lang, _, body in FENCE.findall(text) if lang == language]


def _runnable_blocks(text: str) -> list[tuple[str, str]]:
    """``(name, code)`` of every block marked runnable; the name is the heading above it."""
    blocks = []
    for match in FENCE.finditer(text):
        language, info, body = match.groups()
        if RUNNABLE_MARK not in info.split():
            continue
        assert language == "python", f"only Python blocks can be runnable, got {language!r}"
        headings = HEADING.findall(FENCE.sub("", text[: match.start()]))  # not code comments
        name = headings[-1] if headings else "top"
        taken = sum(1 for n, _ in blocks if n == name or n.startswith(f"{name} #"))
        blocks.append((f"{name} #{taken + 1}" if taken else name, body))
    return blocks


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


def _broken_links(document: Path, markdown: str) -> list[str]:
    """The relative links of ``markdown`` (the text of ``document``) that do not resolve to a
    file inside the repository: missing, a folder, or outside the checkout."""
    broken = []
    for target in _relative_links(markdown):
        path = (document.parent / target).resolve()
        if target and not (path.is_relative_to(ROOT) and path.is_file()):
            broken.append(target)
    return broken


RUNNABLE = _runnable_blocks(README.read_text())


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
    assert ["quickstart"] in commands  # the extraction found the README's commands
    missing = sorted(set(COMMANDS) - {argv[0] for argv in commands})
    assert not missing, f"the README shows no `ml-adv {missing[0]} ...` line"
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
    broken = _broken_links(document, document.read_text())
    assert not broken, f"{document.relative_to(ROOT)} links to no file of the repository: {broken}"


def test_every_python_block_compiles():
    for i, block in enumerate(_blocks(README.read_text(), "python")):
        compile(block, f"README.md python block {i + 1}", "exec")


def test_runnable_blocks_show_every_capability_and_stay_tiny():
    code = "\n".join(body for _, body in RUNNABLE)
    for name in (
        "fit_stacked",
        "AdvancedModelEnsemble",
        "AdvancedHyperparameterOptimizer",
        "AdvancedActiveLearning",
        "AdvancedDomainAdaptation",
    ):
        assert name in code, f"no runnable README block uses {name}"
    for name, body in RUNNABLE:
        epochs = [int(n) for n in re.findall(r"epochs\s*=\s*(\d+)", body)]
        assert all(n <= MAX_RUNNABLE_EPOCHS for n in epochs), f"{name}: epochs {epochs}"


@pytest.mark.slow
@pytest.mark.parametrize("name, code", RUNNABLE, ids=[name for name, _ in RUNNABLE])
def test_runnable_blocks_run_as_written(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the runs/ and saved files a block writes go nowhere
    exec(compile(code, f"README.md ({name})", "exec"), {"__name__": "__readme__"})  # noqa: S102


def test_the_readme_checks_can_fail(tmp_path):
    """The extractors on a made-up document: a broken command, links of every kind, runnable
    and plain blocks."""
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
    links = "[ok](README.md) [dir](tests) [gone](NO_SUCH_FILE.md) [out](../../etc/passwd)"
    assert _broken_links(README, links) == ["tests", "NO_SUCH_FILE.md", "../../etc/passwd"]
    document = (
        "# T\n## One\n```python runnable\na = 1\n```\n```python\n# not a heading\n```\n"
        "```python runnable\nc = 3\n```\n## Two\n```python runnable\nd = 4\n```\n"
    )
    assert _runnable_blocks(document) == [
        ("One", "a = 1\n"),
        ("One #2", "c = 3\n"),
        ("Two", "d = 4\n"),
    ]
    with pytest.raises(AssertionError, match="only Python blocks"):
        _runnable_blocks("```bash runnable\nls\n```\n")
