"""The DANN paper's learning-rate annealing, ``mu_0 / (1 + 10 p)^0.75``, as schedule ``"dann"``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.errors import ConfigError
from ml_adv.training.config import TrainConfig
from ml_adv.training.optim import SCHEDULES, build_optimizer, build_schedule, dann_annealing


def test_registered_and_follows_the_formula():
    assert "dann" in SCHEDULES.names()
    total = 200
    unit = SCHEDULES.get("dann")(total, 0)
    for step in (0, 1, 50, 100, 199, 200):
        np.testing.assert_allclose(float(unit(step)), (1 + 10 * step / total) ** -0.75, rtol=1e-6)
    assert float(unit(10_000)) == pytest.approx(11**-0.75)  # p is capped at 1
    np.testing.assert_allclose(float(dann_annealing(10, alpha=1.0, beta=1.0)(10)), 0.5, rtol=1e-6)


def test_config_peak_scales_it():
    config = TrainConfig(learning_rate=0.01, schedule="dann", optimizer="sgd")
    schedule = build_schedule(config, 1000)
    np.testing.assert_allclose(float(schedule(0)), 0.01, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(1000)), 0.01 * 11**-0.75, rtol=1e-6)
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="dan")


def test_sgd_updates_follow_the_annealed_rate():
    """Each plain-SGD update is ``-mu_p * g`` with ``mu_p`` at that step (traced, one compile)."""
    total = 20
    config = TrainConfig(learning_rate=0.01, schedule="dann", optimizer="sgd")
    tx = build_optimizer(config, total)
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 2.0)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(total):
        updates, state = update(grads, state, params)
        want = -2.0 * 0.01 * (1 + 10 * step / total) ** -0.75
        np.testing.assert_allclose(np.asarray(updates["w"]), want, rtol=1e-5)
