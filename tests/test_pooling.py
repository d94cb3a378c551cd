"""max_pool: values and gradients equal to flax's nn.max_pool (select-and-scatter), ties
included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.kernels.pooling import max_pool


def _reference(x, size):
    return nn.max_pool(x, (size, size), strides=(size, size), padding="VALID")


@pytest.mark.parametrize("shape, size", [((2, 8, 8, 3), 2), ((3, 7, 9, 2), 2), ((1, 9, 9, 4), 3)])
def test_matches_nn_max_pool_values_and_gradients(shape, size):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)  # continuous values: no ties
    np.testing.assert_array_equal(max_pool(x, size), _reference(x, size))
    cot = jax.random.normal(jax.random.PRNGKey(1), _reference(x, size).shape)
    ours = jax.grad(lambda v: jnp.sum(max_pool(v, size) * cot))(x)
    ref = jax.grad(lambda v: jnp.sum(_reference(v, size) * cot))(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_ties_send_the_gradient_to_the_first_maximum_like_select_and_scatter():
    x = (
        jnp.zeros((1, 4, 4, 1)).at[0, 2, 3, 0].set(1.0)
    )  # three all-zero windows (ties), one clear max
    cot = jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    ours = jax.grad(lambda v: jnp.sum(max_pool(v, 2) * cot))(x)
    ref = jax.grad(lambda v: jnp.sum(_reference(v, 2) * cot))(x)
    np.testing.assert_array_equal(ours, ref)
    assert float(ours.sum()) == float(cot.sum())  # each window's gradient counted once


def test_ragged_border_gets_zero_gradient():
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 7, 3))
    grad = jax.grad(lambda v: jnp.sum(max_pool(v, 2)))(x)
    assert grad.shape == x.shape
    assert (
        float(jnp.abs(grad[:, 4, :, :]).sum()) == 0 and float(jnp.abs(grad[:, :, 6, :]).sum()) == 0
    )


def test_bfloat16_jit_and_vmap():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 8, 8, 3)).astype(jnp.bfloat16)
    g = jax.jit(jax.vmap(jax.grad(lambda v: jnp.sum(max_pool(v, 2).astype(jnp.float32)))))(x)
    assert g.dtype == jnp.bfloat16 and g.shape == x.shape
    assert float(g.astype(jnp.float32).sum()) == 4 * 2 * 4 * 4 * 3  # one gradient per window


def test_backward_forms_agree_bitwise_and_the_faster_is_measured(tmp_path, monkeypatch):
    import json

    from ml_adv.kernels import autotune
    from ml_adv.kernels.pooling import _BACKWARDS, BACKWARD_FORMS

    x = (
        jnp.round(jax.random.normal(jax.random.PRNGKey(3), (2, 7, 9, 3)) * 2) / 2
    )  # many ties, a ragged border
    cot = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 4, 3))
    grads = [
        jax.grad(lambda v, f=form: jnp.sum(_BACKWARDS[f](v, 2) * cot))(x) for form in BACKWARD_FORMS
    ]
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], jax.grad(lambda v: jnp.sum(_reference(v, 2) * cot))(x))
    monkeypatch.setattr(autotune, "REPEATS", 2)
    monkeypatch.setattr(autotune, "SCAN_LENGTH", 2)
    autotune.configure(enabled=True, cache_dir=tmp_path)
    try:
        measured = jax.grad(lambda v: jnp.sum(max_pool(v, 2) * cot))(x)
        (path,) = tmp_path.glob("*.json")
        [entry] = [
            v
            for k, v in json.loads(path.read_text())["entries"].items()
            if k.startswith("max_pool_training")
        ]
    finally:
        autotune.configure(enabled=None, cache_dir=None)
    assert set(entry["us"]) == set(BACKWARD_FORMS) and entry["choice"] in BACKWARD_FORMS
    np.testing.assert_array_equal(measured, grads[0])
