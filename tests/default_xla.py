"""Run a test again under XLA's default compiler settings, for claims that depend on them.

The suite compiles with XLA:CPU's cheap settings (``tests/conftest.py``). A few tests promise
that two programs agree bit for bit, a property of the code XLA generates: it holds with
XLA's default settings, which users run, and the cheap ones may round differently in the
last bit. Such a test calls ``rerun_under_default_xla(request)`` first. So does a test that
computes far more than it compiles, where the cheap settings' slower code costs more than
the compile time they save (measure both before adding one: most tests are the other way).
"""

from __future__ import annotations

import os
import subprocess
import sys

from ml_adv.devices import CHEAP_COMPILE_FLAGS


def rerun_under_default_xla(request) -> bool:
    """True when this process compiles cheaply and the test has passed again in a subprocess
    with XLA's default settings (the caller then returns); False when this process already
    uses the defaults (the caller runs the test itself)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("ML_ADV_TEST_OPTIMIZED_XLA") == "1" or CHEAP_COMPILE_FLAGS not in flags:
        return False
    root = str(request.config.rootpath)
    env = dict(
        os.environ,
        ML_ADV_TEST_OPTIMIZED_XLA="1",
        XLA_FLAGS=flags.replace(CHEAP_COMPILE_FLAGS, "").strip(),
        PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    command = [sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [*command, request.node.nodeid],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"under XLA's default settings:\n{proc.stdout[-6000:]}"
    return True
