"""Repository-wide test set-up: the doctests of ``ml_adv`` run in the suite, on tiny data.

``pytest`` collects ``tests/`` and every ``>>>`` example in ``ml_adv`` (``--doctest-modules``):
each example runs in a temporary folder (so a ``runs/...`` it writes goes nowhere) with
``np``, ``jnp`` and ``jax`` at hand. Modules that run a program when imported
(``__main__.py``) are not collected.
"""

import os

os.environ.setdefault("ML_ADV_AUTOTUNE", "0")
os.environ.setdefault("ML_ADV_CPU_DEVICES", "1")

import pytest  # noqa: E402

collect_ignore_glob = ["ml_adv/**/__main__.py"]


@pytest.fixture(autouse=True)
def _doctests_in_a_temporary_folder(request, doctest_namespace, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        import jax
        import jax.numpy as jnp
        import numpy as np

        monkeypatch.chdir(tmp_path)
        doctest_namespace.update(np=np, jnp=jnp, jax=jax)
    yield
