"""Tests for ml_adv.models.conv: values and gradients equal XLA autodiff; nn.Conv drop-in."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax import lax  # noqa: E402

from ml_adv.errors import ConfigError, ShapeError  # noqa: E402
from ml_adv.models.conv import Conv, conv2d  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")

# (x shape, kernel shape, strides, padding): odd sizes, cin 1 and 3, batch 1,
# non-square kernels, strides, explicit pads.
CASES = [
    ((2, 7, 9, 1), (3, 3, 1, 4), (1, 1), "SAME"),
    ((1, 5, 6, 3), (3, 3, 3, 5), (1, 1), "VALID"),
    ((3, 8, 8, 3), (2, 3, 3, 2), (1, 1), "SAME"),
    ((2, 9, 7, 12), (3, 3, 12, 6), (1, 1), "SAME"),
    ((2, 6, 5, 2), (1, 1, 2, 3), (1, 1), "VALID"),
    ((2, 9, 8, 3), (3, 3, 3, 4), (2, 2), "SAME"),
    ((1, 10, 7, 1), (3, 2, 1, 3), (2, 3), "VALID"),
    ((2, 6, 7, 3), (3, 3, 3, 2), (1, 2), ((2, 0), (1, 3))),
]


def _ref(x, k, strides, padding):
    pads = padding if isinstance(padding, str) else tuple(padding)
    return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=DN)


def _value_and_grads(f, x, k, g):
    y, pull = jax.vjp(f, x, k)
    return (y, *pull(g))


def _inputs(case, dtype=jnp.float32, seed=0):
    xs, ks, strides, padding = case
    kx, kk, kg = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, xs, jnp.float32)
    k = jax.random.normal(kk, ks, jnp.float32)
    g = jax.random.normal(kg, _ref(x, k, strides, padding).shape, jnp.float32)
    return x.astype(dtype), k.astype(dtype), g.astype(dtype)


def _assert_close(got, want, rel):
    got = np.asarray(got, np.float32)
    want = np.asarray(want, np.float32)
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("impl,wgrad", [("auto", None), ("matmul_grad", "offset"),
                                        ("matmul_grad", "row"), ("matmul_grad", "im2col"),
                                        ("xla", None)])  # fmt: skip
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_values_and_grads_match_xla_autodiff_f32(case, impl, wgrad):
    _, _, strides, padding = case
    x, k, g = _inputs(case)
    ours = jax.jit(lambda x, k, g: _value_and_grads(
        lambda x, k: conv2d(x, k, strides=strides, padding=padding, impl=impl, _wgrad=wgrad),
        x, k, g))  # fmt: skip
    want = _value_and_grads(lambda x, k: _ref(x, k, strides, padding), x, k, g)
    for a, b in zip(ours(x, k, g), want):
        _assert_close(a, b, 1e-5)


@pytest.mark.parametrize("impl", ["auto", "xla"])
@pytest.mark.parametrize("case", CASES[:2] + CASES[5:6], ids=str)
def test_values_and_grads_bf16(case, impl):
    _, _, strides, padding = case
    x, k, g = _inputs(case, jnp.bfloat16)
    y, dx, dk = jax.jit(lambda x, k, g: _value_and_grads(
        lambda x, k: conv2d(x, k, strides=strides, padding=padding, impl=impl), x, k, g))(x, k, g)  # fmt: skip
    assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16
    # Reference: f32 autodiff on the same (bf16-rounded) numbers.
    f32 = [a.astype(jnp.float32) for a in (x, k, g)]
    want = _value_and_grads(lambda x, k: _ref(x, k, strides, padding), *f32)
    for a, b in zip((y, dx, dk), want):
        _assert_close(a, b, 2e-2)


def test_grad_under_jit_through_a_loss():
    x, k, _ = _inputs(CASES[0])

    def loss(k, x, impl):
        return jnp.sum(jnp.tanh(conv2d(x, k, impl=impl)) ** 2)

    ours = jax.jit(jax.value_and_grad(loss), static_argnums=2)(k, x, "auto")
    want = jax.value_and_grad(lambda k, x: jnp.sum(jnp.tanh(_ref(x, k, (1, 1), "SAME")) ** 2))(k, x)
    _assert_close(ours[0], want[0], 1e-5)
    _assert_close(ours[1], want[1], 1e-5)


def test_auto_lowers_to_matmul_grad_on_cpu_without_a_conditional():
    if jax.default_backend() != "cpu":
        pytest.skip("checks the CPU lowering")
    x, k, _ = _inputs(CASES[3])
    hlo = jax.jit(jax.grad(lambda x, k: conv2d(x, k).sum(), (0, 1))).lower(x, k).compile().as_text()
    assert "conditional" not in hlo
    assert hlo.count("convolution(") == 2  # forward + input gradient; dW is matmuls


# --------------------------------------------------------------------------- Conv module


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("padding,strides", [("SAME", 1), ("VALID", (1, 2)), (((1, 0), (2, 1)), 2)])
def test_params_and_outputs_identical_to_nn_conv(use_bias, padding, strides):
    x = jax.random.normal(jax.random.key(1), (2, 9, 8, 3))
    kw = dict(features=5, kernel_size=(3, 3), strides=strides, padding=padding, use_bias=use_bias)
    ours, ref = Conv(**kw), nn.Conv(**kw)
    p_ours = ours.init(jax.random.key(7), x)
    p_ref = ref.init(jax.random.key(7), x)
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_ref)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_ref)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    if use_bias:  # make the bias matter
        p_ref = jax.tree.map(lambda a: a + 0.1, p_ref)
    _assert_close(jax.jit(ours.apply)(p_ref, x), ref.apply(p_ref, x), 1e-5)
    g_ours = jax.jit(jax.grad(lambda p: jnp.sum(ours.apply(p, x) ** 2)))(p_ref)
    g_ref = jax.grad(lambda p: jnp.sum(ref.apply(p, x) ** 2))(p_ref)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        _assert_close(a, b, 1e-5)


def test_conv_batch_dims_like_nn_conv():
    kw = dict(features=4, kernel_size=3)
    ref = nn.Conv(features=4, kernel_size=(3, 3))
    for shape in [(6, 7, 2), (2, 3, 6, 7, 2)]:
        x = jax.random.normal(jax.random.key(2), shape)
        p = ref.init(jax.random.key(0), x)
        y = Conv(**kw).apply(p, x)
        _assert_close(y, ref.apply(p, x), 1e-5)


def test_conv_impl_xla_and_matmul_grad_agree():
    x = jax.random.normal(jax.random.key(3), (2, 7, 7, 3))
    m_auto, m_xla = Conv(6, (3, 3)), Conv(6, (3, 3), impl="xla")
    p = m_auto.init(jax.random.key(0), x)

    def grads(m):
        return jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), (0, 1)))(p, x)

    for a, b in zip(jax.tree.leaves(grads(m_auto)), jax.tree.leaves(grads(m_xla))):
        _assert_close(a, b, 1e-5)


def test_conv_bfloat16_params_and_inputs():
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 3))
    ours = Conv(4, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ref = nn.Conv(4, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    p = ref.init(jax.random.key(0), x)
    assert jax.tree.leaves(p)[0].dtype == jnp.bfloat16
    xb = x.astype(jnp.bfloat16)
    y = jax.jit(ours.apply)(p, xb)
    assert y.dtype == jnp.bfloat16
    _assert_close(y, ref.apply(p, xb), 2e-2)
    g = jax.jit(jax.grad(lambda p: jnp.sum(ours.apply(p, xb).astype(jnp.float32) ** 2)))(p)
    g_ref = jax.grad(lambda p: jnp.sum(ref.apply(p, xb).astype(jnp.float32) ** 2))(p)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        assert a.dtype == jnp.bfloat16
        _assert_close(a, b, 3e-2)
    # mixed precision: f32 params, bf16 compute
    p32 = Conv(4, (3, 3)).init(jax.random.key(0), x)
    y16 = Conv(4, (3, 3), dtype=jnp.bfloat16).apply(p32, x)
    assert y16.dtype == jnp.bfloat16


def test_vmap_over_stacked_params_matches_loop():
    x = jax.random.normal(jax.random.key(5), (3, 6, 6, 2))
    y = jax.random.normal(jax.random.key(6), (3, 6, 6, 4))
    m = Conv(4, (3, 3))
    stacked = jax.vmap(lambda key: m.init(key, x))(jax.random.split(jax.random.key(0), 3))

    def loss(p):
        return jnp.mean((m.apply(p, x) - y) ** 2)

    g_vmapped = jax.jit(jax.vmap(jax.grad(loss)))(stacked)
    for i in range(3):
        p_i = jax.tree.map(lambda a, i=i: a[i], stacked)
        g_i = jax.grad(lambda p: jnp.mean((nn.Conv(4, (3, 3)).apply(p, x) - y) ** 2))(p_i)
        for a, b in zip(jax.tree.leaves(g_vmapped), jax.tree.leaves(g_i)):
            _assert_close(a[i], b, 1e-5)
    # vmap over params and inputs together
    xs = jnp.stack([x, 2 * x, -x])
    out = jax.jit(jax.vmap(m.apply))(stacked, xs)
    assert out.shape == (3, 3, 6, 6, 4)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding="CIRCULAR"),
        dict(padding="same-ish"),
        dict(padding=((1, -1), (0, 0))),
        dict(padding=((1, 1),)),
        dict(strides=0),
        dict(strides=(1, 2, 3)),
        dict(impl="cuda"),
    ],
)
def test_bad_options_raise_config_error(kwargs):
    x, k = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 3))
    with pytest.raises(ConfigError):
        conv2d(x, k, **kwargs)
    module_kwargs = {("kernel_size" if a == "k" else a): v for a, v in kwargs.items()}
    with pytest.raises(ConfigError):
        Conv(3, (3, 3), **module_kwargs).init(jax.random.key(0), x)


def test_bad_module_fields_and_shapes():
    x = jnp.ones((1, 5, 5, 2))
    with pytest.raises(ConfigError):
        Conv(3, (3, 3, 3)).init(jax.random.key(0), x)
    with pytest.raises(ConfigError):
        Conv(3, (0, 3)).init(jax.random.key(0), x)
    with pytest.raises(ShapeError):
        conv2d(x, jnp.ones((3, 3, 4, 3)))  # channel mismatch
    with pytest.raises(ShapeError):
        conv2d(x, jnp.ones((7, 7, 2, 3)), padding="VALID")  # empty output
    with pytest.raises(ConfigError):
        conv2d(x.astype(jnp.int32), jnp.ones((3, 3, 2, 3), jnp.int32))
