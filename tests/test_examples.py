"""The scripts in ``examples/`` (one per SEED.md code example) run, and cover SEED.md's API.

Every example runs once, in one subprocess: ``examples/_run_all.py`` calls each ``main()``
under ``ML_ADV_EXAMPLES_QUICK=1`` (tiny models, one epoch, few trials or rounds) and writes
a JSON report; running them in one process lets them share compiled programs. One test per
example reads its entry, so a failure names the example and shows its traceback. The other
checks read the scripts' source and train nothing: SEED.md's API Reference (a copy in
``examples/SEED_API_REFERENCE.md``) and the table mapping SEED.md's 31 Python blocks to the
scripts (``examples/README.md``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import ml_adv

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
SEED_PYTHON_BLOCKS = 31  # SEED.md has 31 ```python blocks
RUN_TIMEOUT = 540  # seconds for the whole subprocess; pytest-timeout gives the test 600
# Calls of SEED.md's Error Handling and Performance Optimization blocks (not in its API
# Reference), copied from SEED.md: they must exist and be called by an example too.
SEED_SETTINGS_CALLS = {
    "AdvancedCustomModelTrainer": [
        "set_data_augmentation",
        "set_resource_monitoring",
        "set_mixed_precision",
        "set_gradient_accumulation",
        "set_distributed_training",
    ],
    "AdvancedModelEnsemble": [
        "optimize_diversity",
        "prune_models",
        "set_diversity_optimization",
        "set_automatic_pruning",
        "set_cross_validation",
        "update_model",
    ],
    "AdvancedActiveLearning": [
        "set_adaptive_sampling",
        "set_budget_management",
        "set_performance_threshold",
    ],
    "AdvancedDomainAdaptation": [
        "set_gradual_unfreezing",
        "set_learning_rate_scheduling",
        "set_early_stopping",
    ],
}


def _source(name: str) -> str:
    return (EXAMPLES / f"{name}.py").read_text()


def _called_methods() -> set[str]:
    """Names called as ``something.name(...)`` in the example scripts (not the helpers)."""
    names = set()
    for script in SCRIPTS:
        for node in ast.walk(ast.parse(_source(script))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def _api_reference() -> dict[str, list[str]]:
    """``{class name: [method names]}`` from the copy of SEED.md's API Reference."""
    methods: dict[str, list[str]] = {}
    current = None
    for line in (EXAMPLES / "SEED_API_REFERENCE.md").read_text().splitlines():
        heading = re.match(r"^### (\w+)", line)
        if heading:
            current = methods.setdefault(heading.group(1), [])
        item = re.match(r"^- `(\w+)\(", line)
        if item and current is not None:
            current.append(item.group(1))
    return methods


def _block_table() -> list[tuple[int, str, str]]:
    """``(number, SEED.md block, script name)`` rows of examples/README.md's table."""
    rows = []
    for line in (EXAMPLES / "README.md").read_text().splitlines():
        row = re.match(r"^\| (\d+) \| (.+?) \| \[(\w+)\.py\]\(\3\.py\) \|$", line)
        if row:
            rows.append((int(row.group(1)), row.group(2), row.group(3)))
    return rows


# ----------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def example_report(tmp_path_factory) -> dict:
    """Run every example once in one subprocess (quick mode, in an empty folder)."""
    workdir = tmp_path_factory.mktemp("examples")
    report = workdir / "report.json"
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, ML_ADV_EXAMPLES_QUICK="1", PYTHONPATH=os.pathsep.join(paths))
    command = [sys.executable, str(EXAMPLES / "_run_all.py"), "--output", str(report)]
    try:
        proc = subprocess.run(
            command, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        tail = proc.stderr[-3000:]
    except subprocess.TimeoutExpired as exc:  # what finished is in the report
        tail = f"timed out after {RUN_TIMEOUT} s: {str(exc.stderr or '')[-3000:]}"
    if not report.exists():
        pytest.fail(f"examples/_run_all.py wrote no report: {tail}")
    return {**json.loads(report.read_text()), "stderr_tail": tail}


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_in_quick_mode(name, example_report):
    assert example_report["quick"], "the runner did not see ML_ADV_EXAMPLES_QUICK=1"
    result = example_report["examples"].get(name)
    assert result is not None, f"{name} never ran: {example_report['stderr_tail']}"
    assert result["status"] == "passed", (
        f"{name} failed after {result['seconds']} s:\n{result['error']}\n"
        f"it printed:\n{result['output']}"
    )


def test_the_runner_reports_a_failing_example(tmp_path, monkeypatch, capsys):
    runner = runpy.run_path(str(EXAMPLES / "_run_all.py"), run_name="runner")
    (tmp_path / "broken.py").write_text("def main():\n    print('hi')\n    raise KeyError('x')\n")
    monkeypatch.setitem(runner["run_example"].__globals__, "HERE", tmp_path)
    result = runner["run_example"]("broken")
    assert result["status"] == "failed" and "KeyError: 'x'" in result["error"]
    assert result["output"] == "hi\n" and result["seconds"] >= 0
    capsys.readouterr()


# ------------------------------------------------------------ the scripts
@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_has_main_names_its_seed_section_and_reads_the_quick_switch(name):
    tree = ast.parse(_source(name))
    docstring = ast.get_docstring(tree) or ""
    assert docstring.startswith("SEED.md: "), f"{name}: the docstring names no SEED.md section"
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "main" in functions, f"{name}: no main()"
    guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert guard and "main()" in ast.unparse(guard[0]), f"{name}: `python {name}.py` runs nothing"
    # The quick switch lives in _common (ML_ADV_EXAMPLES_QUICK); every script sizes its run with it.
    assert re.search(r"_common\.(budget|SIZE|QUICK|digits|trained_model)", _source(name)), name


def test_the_table_maps_every_seed_block_to_a_script_that_names_it():
    rows = _block_table()
    assert [n for n, _, _ in rows] == list(range(1, SEED_PYTHON_BLOCKS + 1))
    assert {script for _, _, script in rows} == set(SCRIPTS), "scripts missing from the table"
    for number, block, script in rows:
        docstring = " ".join((ast.get_docstring(ast.parse(_source(script))) or "").split())
        section, _, name = block.rpartition(" > ")
        assert section in docstring and name in docstring, (
            f"block {number} ({block}): {script}.py's docstring does not name it"
        )


def test_seed_api_reference_methods_exist_and_an_example_calls_each():
    reference = _api_reference()
    assert sorted(reference) == [
        "AdvancedActiveLearning",
        "AdvancedCustomModelTrainer",
        "AdvancedDomainAdaptation",
        "AdvancedModelEnsemble",
    ]
    assert sum(len(m) for m in reference.values()) == 25  # the copy parsed whole
    called = _called_methods()
    for class_name, methods in [*reference.items(), *SEED_SETTINGS_CALLS.items()]:
        cls = getattr(ml_adv, class_name)
        missing = [m for m in methods if not callable(getattr(cls, m, None))]
        assert not missing, f"{class_name} lacks SEED.md's {missing}"
        uncalled = [m for m in methods if m not in called]
        assert not uncalled, f"no example calls {class_name}.{uncalled}"
