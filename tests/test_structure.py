"""The package's shape, checked from its source: imports only go down the floors, no import
circles, no function longer than ~60 lines of code (DESIGN.md's layout).

Floors (a module may import from its own package and from lower floors only):

    0  errors, tokens, plots                        the ground floor
    1  registry, devices, checkpointing, rundir,    infrastructure
       estimator
    2  kernels/ data/                               hand-written fast paths; datasets
    3  models/
    4  training/
    5  ensembles/ hpo/ active_learning/ domain_adaptation/   the four capabilities
    6  trainer/                                     training meets hpo
    7  cli/
    8  __init__, custom_model_trainer, model_ensemble  the lazy faces
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ml_adv"
FLOORS = {
    "errors": 0,
    "tokens": 0,
    "plots": 0,
    "registry": 1,
    "devices": 1,
    "checkpointing": 1,
    "rundir": 1,
    "estimator": 1,
    "kernels": 2,
    "data": 2,
    "models": 3,
    "training": 4,
    "ensembles": 5,
    "hpo": 5,
    "active_learning": 5,
    "domain_adaptation": 5,
    "trainer": 6,
    "cli": 7,
    "__init__": 8,
    "custom_model_trainer": 8,
    "model_ensemble": 8,
}
MAX_FUNCTION_LINES = 60


def _room(module: str) -> str:
    """``ml_adv.training.loop`` -> ``training``; ``ml_adv`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, path


def _imports(module: str, path: Path):
    """Every ``ml_adv`` module ``path`` imports, at any depth (lazy imports included)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "ml_adv")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            if base.split(".")[0] == "ml_adv":
                yield base


def test_every_room_has_a_floor():
    rooms = {_room(name) for name, _ in _modules()}
    assert rooms <= set(FLOORS), f"add these to FLOORS: {sorted(rooms - set(FLOORS))}"


def test_imports_only_go_down_the_floors():
    upward = []
    for name, path in _modules():
        here = _room(name)
        for target in _imports(name, path):
            there = _room(target)
            if there == here or there == "__init__" and target == "ml_adv" and here == "__init__":
                continue
            if FLOORS[there] >= FLOORS[here]:
                upward.append(f"{name} -> {target} (floor {FLOORS[here]} -> {FLOORS[there]})")
    assert upward == []


def test_no_import_circles_between_rooms():
    edges: dict[str, set[str]] = {}
    for name, path in _modules():
        for target in _imports(name, path):
            if _room(target) != _room(name):
                edges.setdefault(_room(name), set()).add(_room(target))
    seen, stack = set(), []

    def visit(room):
        if room in stack:
            pytest.fail(f"import circle: {' -> '.join(stack[stack.index(room) :] + [room])}")
        if room in seen:
            return
        stack.append(room)
        for target in sorted(edges.get(room, ())):
            visit(target)
        stack.pop()
        seen.add(room)

    for room in sorted(edges):
        visit(room)


def _code_lines(source: str) -> set[int]:
    skip = (
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENCODING,
        tokenize.ENDMARKER,
    )
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def test_no_function_is_longer_than_sixty_lines_of_code():
    """Docstrings, comments and blank lines do not count; a workflow reads as named steps."""
    long = []
    for name, path in _modules():
        source = path.read_text()
        code = _code_lines(source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = set(range(node.lineno, node.end_lineno + 1)) & code
                first = node.body[0]
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(getattr(first, "value", None), ast.Constant)
                    and isinstance(first.value.value, str)
                ):
                    lines -= set(range(first.lineno, first.end_lineno + 1))
                if len(lines) > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {len(lines)} lines")
    assert long == []
