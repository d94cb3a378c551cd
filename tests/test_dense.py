"""ml_adv.kernels.dense: the dense-layer dot_general equals lax.dot_general, gradients included."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax import lax  # noqa: E402

from ml_adv.kernels.dense import dense_dot_general  # noqa: E402

# (input shape, module factory): Dense narrow->wide (the materialised-transpose path),
# wide->narrow (Eigen path), DenseGeneral to heads (attention q/k/v) and from heads (out).
LAYERS = {
    "dense_k_le_n": ((2, 5, 8), lambda dg: nn.Dense(12, dot_general=dg)),
    "dense_k_gt_n": ((2, 5, 12), lambda dg: nn.Dense(4, dot_general=dg)),
    "to_heads": ((3, 4, 8), lambda dg: nn.DenseGeneral((2, 4), axis=-1, dot_general=dg)),
    "from_heads": ((3, 4, 2, 4), lambda dg: nn.DenseGeneral(8, axis=(-2, -1), dot_general=dg)),
}


def _grads(make, dg, params, x, g):
    module = make(dg)
    y, pull = jax.vjp(lambda p, x: module.apply(p, x), params, x)
    return y, *pull(g)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_values_and_gradients_match_lax(name, dtype):
    shape, make = LAYERS[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), dtype)
    params = make(lax.dot_general).init(jax.random.PRNGKey(0), x)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    out_shape = jax.eval_shape(lambda p, x: make(lax.dot_general).apply(p, x), params, x).shape
    g = jnp.asarray(rng.standard_normal(out_shape), dtype)

    @jax.jit
    def both(params, x, g):
        return _grads(make, lax.dot_general, params, x, g), _grads(
            make, dense_dot_general, params, x, g
        )

    want, got = both(params, x, g)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol
        )


def test_vmap_over_stacked_params_matches_a_loop():
    shape, make = LAYERS["dense_k_le_n"]
    module = make(dense_dot_general)
    x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
    stacked = jax.vmap(lambda k: module.init(k, x))(jax.random.split(jax.random.PRNGKey(0), 3))

    def grad_of(p):
        return jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2))(p)

    batched = jax.jit(jax.vmap(grad_of))(stacked)
    for i in range(3):
        one = grad_of(jax.tree.map(lambda a, i=i: a[i], stacked))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


def test_other_layouts_fall_through_to_lax():
    a = jnp.ones((2, 3, 4))
    b = jnp.ones((2, 4, 5))
    dims = (((2,), (1,)), ((0,), (0,)))  # a batched matmul, not a dense layer
    np.testing.assert_array_equal(dense_dot_general(a, b, dims), lax.dot_general(a, b, dims))


@pytest.mark.parametrize("name", ["dense_k_le_n", "dense_k_gt_n"])
def test_cpu_weight_gradient_is_a_standard_form_matmul(name):
    """No transposed-lhs dot (XLA:CPU's Eigen fallback) in the compiled gradient."""
    if jax.default_backend() != "cpu":
        pytest.skip("checks the CPU lowering")
    shape, make = LAYERS[name]
    x = jnp.ones(shape)

    def hlo(dg):
        module = make(dg)
        params = module.init(jax.random.PRNGKey(0), x)
        loss = lambda p: jnp.sum(module.apply(p, x) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss)).lower(params).compile().as_text()

    assert "lhs_contracting_dims={0}" in hlo(lax.dot_general)  # autodiff's form
    assert "lhs_contracting_dims={0}" not in hlo(dense_dot_general)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_accelerators_keep_the_autodiff_weight_gradient(platform):
    # jax.export lowers for any platform without the device; the CPU-only branch is pruned.
    shape, make = LAYERS["dense_k_le_n"]
    x = jnp.ones(shape)
    module = make(dense_dot_general)
    params = module.init(jax.random.PRNGKey(0), x)
    step = jax.jit(jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2)))
    text = jax.export.export(step, platforms=[platform])(params).mlir_module()
    assert "optimization_barrier" not in text
    assert (
        "optimization_barrier" in jax.export.export(step, platforms=["cpu"])(params).mlir_module()
    )
