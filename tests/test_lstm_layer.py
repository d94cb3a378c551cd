"""ml_adv.kernels.lstm_layer: the fused LSTM layer equals Flax's cell, and the model picks it by
measurement."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv import make_spec
from ml_adv.kernels import autotune
from ml_adv.kernels.lstm_layer import LOWERINGS, measured_lowering
from ml_adv.models import lstm as lstm_module
from ml_adv.models.lstm import FusedLSTM

X = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4))


def _loss(module):
    def loss(variables, x):
        (c, h), hs = module.apply(variables, x)
        # Every output enters with its own weights, so each cotangent is checked.
        per_unit = jnp.arange(hs.shape[-1], dtype=jnp.float32).reshape(1, 1, -1)
        return jnp.sum(jnp.sin(h)) + jnp.sum(c**2) + jnp.sum(jnp.cos(hs) * per_unit)

    return jax.grad(loss, argnums=(0, 1))


@pytest.mark.parametrize("reverse", [False, True])
def test_fused_layer_has_flax_parameters_outputs_and_gradients(reverse):
    flax_rnn = nn.RNN(nn.OptimizedLSTMCell(6), return_carry=True, reverse=reverse, keep_order=True)
    fused = FusedLSTM(6, reverse)
    want_vars = jax.jit(flax_rnn.init)(jax.random.PRNGKey(0), X)
    got_vars = jax.jit(fused.init)(jax.random.PRNGKey(0), X)
    # Same names, shapes and initial values: a checkpoint does not depend on the lowering.
    assert jax.tree.structure(want_vars) == jax.tree.structure(got_vars)
    for want, got in zip(jax.tree.leaves(want_vars), jax.tree.leaves(got_vars)):
        np.testing.assert_array_equal(got, want)
    apply = jax.jit(lambda module, v: module.apply(v, X), static_argnums=0)
    for want, got in zip(
        jax.tree.leaves(apply(flax_rnn, want_vars)), jax.tree.leaves(apply(fused, got_vars))
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    # Stacked members (ensembles, populations, CV folds) run the layer under vmap.
    def stack(variables):
        return jax.tree.map(lambda a: jnp.stack([a, 2 * a]), variables)

    with jax.numpy_dtype_promotion("strict"):
        got_grads = jax.jit(jax.vmap(_loss(fused), in_axes=(0, None)))(stack(got_vars), X)
    want_grads = jax.jit(jax.vmap(_loss(flax_rnn), in_axes=(0, None)))(stack(want_vars), X)
    for want, got in zip(jax.tree.leaves(want_grads), jax.tree.leaves(got_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _bidirectional_two_layer(lowering, monkeypatch):
    monkeypatch.setattr(lstm_module, "measured_lowering", lambda *a, **k: lowering)
    spec = make_spec(
        "lstm",
        input_shape=(5, 4),
        input_kind="sequence",
        num_classes=3,
        size="tiny",
        num_layers=2,
        bidirectional=True,
        pooling="mean",
        dropout=0.0,
    )
    module = spec.build()
    variables = jax.jit(module.init)(jax.random.PRNGKey(0), X)
    y = jnp.array([0, 2, 1])

    def loss(params):
        logits = module.apply({"params": params}, X)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), y])

    # One compiled program for both (op-by-op, every scan would compile on its own).
    outputs = jax.jit(lambda p: (module.apply({"params": p}, X), jax.grad(loss)(p)))
    return (variables, *outputs(variables["params"]))


def test_the_model_is_the_same_with_either_lowering(monkeypatch):
    flax_run = _bidirectional_two_layer("flax", monkeypatch)
    fused_run = _bidirectional_two_layer("fused", monkeypatch)
    for want, got in zip(jax.tree.leaves(flax_run[0]), jax.tree.leaves(fused_run[0])):
        np.testing.assert_array_equal(got, want)
    for want_tree, got_tree in zip(flax_run[1:], fused_run[1:]):
        for want, got in zip(jax.tree.leaves(want_tree), jax.tree.leaves(got_tree)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lowering_is_measured_once_per_shape_and_cached(tmp_path, monkeypatch):
    assert (
        measured_lowering((2, 3, 4), 8, jnp.float32, reverse=False) == "flax"
    )  # the suite runs untuned
    monkeypatch.setattr(autotune, "REPEATS", 2)
    monkeypatch.setattr(autotune, "SCAN_LENGTH", 2)
    autotune.configure(enabled=True, cache_dir=tmp_path)
    try:
        before = autotune.measurements()
        choice = measured_lowering((2, 3, 4), 8, jnp.float32, reverse=True)
        assert choice in LOWERINGS
        assert measured_lowering((2, 3, 4), 8, jnp.float32, reverse=True) == choice
        assert autotune.measurements() == before + 1
        assert (
            measured_lowering((2, 3, 4), 8, jnp.bfloat16, reverse=True) == "flax"
        )  # bf16: never measured
        assert autotune.measurements() == before + 1
        (path,) = tmp_path.glob("*.json")
        ((key, entry),) = json.loads(path.read_text())["entries"].items()
        assert key.startswith("lstm_layer") and set(entry["us"]) == set(LOWERINGS)
    finally:
        autotune.configure(enabled=None, cache_dir=None)
