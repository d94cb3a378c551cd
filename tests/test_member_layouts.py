"""Stacked epochs in both member layouts ("vmap", "scan") and the measured choice between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv import make_spec
from ml_adv.kernels import autotune
from ml_adv.training import TrainConfig
from ml_adv.training.runner import MEMBER_LAYOUTS, EpochRunner
from ml_adv.training.setup import init_run
from ml_adv.training.steps import epoch_order, make_epoch_fn

K, BATCH, STEPS = 2, 8, 4


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.random((BATCH * STEPS, 8), dtype=np.float32)
    y = rng.integers(0, 3, BATCH * STEPS).astype(np.int32)
    spec = make_spec(
        "mlp",
        input_shape=(8,),
        input_kind="features",
        num_classes=3,
        hidden_sizes=(8,),
        dropout=0.0,
    )
    run = init_run(
        spec, TrainConfig(batch_size=BATCH), example_x=x[:1], steps_per_epoch=STEPS, members=K
    )
    return run, {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def copy(state):
    return jax.tree.map(jnp.copy, state)


def test_scan_layout_matches_vmap_with_own_orders_and_padded_steps(setup):
    run, data = setup
    orders = np.stack(
        [epoch_order(jax.random.PRNGKey(i), BATCH * STEPS, BATCH) for i in range(K)], axis=1
    )
    active = np.ones((STEPS, K), bool)
    active[-1, 1] = False  # member 1 has one batch fewer
    results = {}
    for layout in MEMBER_LAYOUTS:
        epoch = make_epoch_fn(run.train_step, stacked=True, member_batches=True, members_as=layout)
        results[layout] = epoch(copy(run.state), data, jnp.asarray(orders), jnp.asarray(active))
    (vmap_state, vmap_metrics), (scan_state, scan_metrics) = results["vmap"], results["scan"]
    for a, b in zip(jax.tree.leaves(vmap_state.params), jax.tree.leaves(scan_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(vmap_state.step, scan_state.step)
    assert vmap_metrics["loss"].shape == scan_metrics["loss"].shape == (STEPS, K)
    np.testing.assert_allclose(vmap_metrics["loss"], scan_metrics["loss"], rtol=1e-5)
    np.testing.assert_array_equal(scan_metrics["live"][:, 1], [1, 1, 1, 0])


def test_runner_measures_the_layout_once_and_caches_it(setup, tmp_path):
    run, data = setup
    order = epoch_order(jax.random.PRNGKey(0), BATCH * STEPS, BATCH)
    off = EpochRunner(run.train_step, stacked=True)
    before = autotune.measurements()
    off(copy(run.state), data, order)
    assert (
        off.layout == "vmap" and autotune.measurements() == before
    )  # autotuning is off in the suite
    autotune.configure(enabled=True, cache_dir=tmp_path)
    try:
        first = EpochRunner(run.train_step, stacked=True)
        state, metrics = first(copy(run.state), data, order)
        if jax.default_backend() != "cpu":  # a CPU decision: other backends vmap, unmeasured
            assert first.layout == "vmap" and autotune.measurements() == before
            return
        assert first.layout in MEMBER_LAYOUTS and autotune.measurements() == before + 1
        assert metrics["loss"].shape == (STEPS, K) and np.isfinite(metrics["loss"]).all()
        second = EpochRunner(run.train_step, stacked=True)
        second(copy(run.state), data, order)
        assert second.layout == first.layout and autotune.measurements() == before + 1
    finally:
        autotune.configure(enabled=None, cache_dir=None)
