"""Tests for ml_adv.kernels.conv: values and gradients equal XLA autodiff; nn.Conv drop-in."""

import os

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax import lax  # noqa: E402

from ml_adv.devices import CHEAP_COMPILE_FLAGS  # noqa: E402
from ml_adv.errors import ConfigError, ShapeError  # noqa: E402
from ml_adv.kernels.conv import Conv, conv2d  # noqa: E402

# Whether tests/conftest.py turned on XLA:CPU's cheap compile settings for this process.
CHEAP_COMPILES = CHEAP_COMPILE_FLAGS in os.environ.get("XLA_FLAGS", "")

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
    ((2, 6, 7, 5), (3, 2, 5, 4), (1, 1), ((2, 0), (0, 1))),  # input grad as a forward conv
    ((2, 7, 6, 4), (2, 2, 4, 3), (1, 1), ((3, 0), (0, 2))),  # pad > k - 1: transposed conv
]


def _ref(x, k, strides, padding):
    pads = padding if isinstance(padding, str) else tuple(padding)
    return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=DN)


def _value_and_grads(f, x, k, g):
    y, pull = jax.vjp(f, x, k)
    return (y, *pull(g))


def _inputs(case, dtype=jnp.float32, seed=0):
    # numpy RNG and eval_shape: no eager XLA op (each would compile) before the test's jit
    xs, ks, strides, padding = case
    rng = np.random.default_rng(seed)
    out_shape = jax.eval_shape(
        lambda x, k: _ref(x, k, strides, padding),
        jax.ShapeDtypeStruct(xs, jnp.float32),
        jax.ShapeDtypeStruct(ks, jnp.float32),
    ).shape
    return tuple(jnp.asarray(rng.standard_normal(s), dtype) for s in (xs, ks, out_shape))


def _assert_close(got, want, rel):
    got = np.asarray(got, np.float32)
    want = np.asarray(want, np.float32)
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * scale)


VARIANTS = {  # name -> conv2d keyword arguments; every code path of the gradient
    "auto": dict(
        impl="auto"
    ),  # on CPU: matmul_grad, "conv" wgrad on these small stride-1 cases, else "row"
    "xla": dict(impl="xla"),
    "matmul_grad/offset": dict(impl="matmul_grad", _wgrad="offset"),
    "matmul_grad/row": dict(impl="matmul_grad", _wgrad="row"),
    "matmul_grad/im2col": dict(impl="matmul_grad", _wgrad="im2col"),
    "matmul_grad/conv": dict(impl="matmul_grad", _wgrad="conv"),  # stride 1 only
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_values_and_grads_match_xla_autodiff_f32(case):
    _, _, strides, padding = case
    x, k, g = _inputs(case)

    @jax.jit  # one compile per case: reference and every variant in one program
    def run(x, k, g):
        out = {"ref": _value_and_grads(lambda x, k: _ref(x, k, strides, padding), x, k, g)}
        for name, kw in VARIANTS.items():
            if kw.get("_wgrad") == "conv" and strides != (1, 1):
                continue
            f = lambda x, k, kw=kw: conv2d(x, k, strides=strides, padding=padding, **kw)  # noqa: E731
            out[name] = _value_and_grads(f, x, k, g)
        return out

    out = run(x, k, g)
    want = out.pop("ref")
    for name, got in out.items():
        for what, a, b in zip(("y", "dx", "dkernel"), got, want):
            try:
                _assert_close(a, b, 1e-5)
            except AssertionError as e:
                raise AssertionError(f"{name} {what}: {e}") from None


@pytest.mark.parametrize("impl", ["auto", "xla"])
@pytest.mark.parametrize("case", CASES[:2] + CASES[5:6], ids=str)
def test_values_and_grads_bf16(case, impl):
    _, _, strides, padding = case
    x, k, g = _inputs(case, jnp.bfloat16)
    y, dx, dk = jax.jit(lambda x, k, g: _value_and_grads(
        lambda x, k: conv2d(x, k, strides=strides, padding=padding, impl=impl),
        x, k, g))(x, k, g)  # fmt: skip
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


# The CPU weight gradient: kernel-row matmuls, or for few contracted positions (N*Ho*Wo <=
# conv._WGRAD_CONV_MAX_POSITIONS) one standard-form conv with the batch as channels.
ROW_CASE = ((3, 30, 30, 12), (3, 3, 12, 6), (1, 1), "SAME")  # 2,700 positions: row matmuls
WGRAD_LOWERINGS = [  # case, convolutions (forward, dx, [dW]), dots (dW rows)
    pytest.param(CASES[3], 3, 0, id="small-conv-wgrad"),
    pytest.param(ROW_CASE, 2, 3, id="large-row-wgrad"),
]


@pytest.mark.parametrize("case, convs, dots", WGRAD_LOWERINGS)
def test_auto_lowers_to_matmul_grad_on_cpu_without_a_conditional(case, convs, dots):
    if jax.default_backend() != "cpu":
        pytest.skip("checks the CPU lowering")
    x, k, _ = _inputs(case)

    def loss(x, k):
        return jnp.sum(conv2d(x, k) ** 2)

    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, k).compile().as_text()
    assert " conditional(" not in hlo
    assert hlo.count(" convolution(") == convs
    assert hlo.count(" dot(") == dots


@pytest.mark.parametrize("case, convs, dots", WGRAD_LOWERINGS)
def test_gradients_are_standard_forward_convs_inside_scan(case, convs, dots):
    """Stride 1: dx (and a conv dW) are plain NHWC/HWIO convs (XLA:CPU's fast kernel), not
    transposed ones, also inside a scanned loop."""
    if jax.default_backend() != "cpu":
        pytest.skip("checks the CPU lowering")
    x, k, _ = _inputs(case)

    def epoch(k, xs):
        def body(k, x):
            dk, dx = jax.grad(lambda k, x: jnp.sum(conv2d(x, k) ** 2), (0, 1))(k, x)
            return k - 0.1 * dk * jnp.mean(dx), None

        return lax.scan(body, k, xs)[0]

    hlo = jax.jit(epoch).lower(k, jnp.stack([x, x])).compile().as_text()
    found = [line for line in hlo.splitlines() if " convolution(" in line]
    assert len(found) == convs and all("dim_labels=b01f_01io->b01f" in c for c in found), found


# --------------------------------------------------------------------------- Conv module


def _normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize(
    "padding,strides,use_bias",
    [("SAME", 1, True), ("VALID", (1, 2), False), (((1, 0), (2, 1)), 2, True)],
)
def test_params_and_outputs_identical_to_nn_conv(padding, strides, use_bias):
    x = _normal((2, 9, 8, 3), 1)
    kw = dict(features=5, kernel_size=(3, 3), strides=strides, padding=padding, use_bias=use_bias)
    ours, ref = Conv(**kw), nn.Conv(**kw)

    @jax.jit  # one compile: both inits, outputs and gradients
    def run(key, x):
        p_ours, p_ref = ours.init(key, x), ref.init(key, x)
        p = jax.tree.map(lambda a: a + 0.1, p_ref)  # a non-zero bias

        def grad(m):
            return jax.grad(lambda p: jnp.sum(m.apply(p, x) ** 2))(p)

        return p_ours, p_ref, ours.apply(p, x), ref.apply(p, x), grad(ours), grad(ref)

    p_ours, p_ref, y, y_ref, g, g_ref = run(jax.random.key(7), x)
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_ref)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_ref)):
        assert a.shape == b.shape and a.dtype == b.dtype
        if CHEAP_COMPILES:
            # The same random bits; the suite's unoptimised XLA:CPU code (tests/conftest.py)
            # rounds the 2-D and 4-D normal transforms differently (seen: 3e-8 absolute).
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        else:  # XLA's default optimisation: bit for bit, as _drawn_as_matrix promises
            np.testing.assert_array_equal(a, b)
    _assert_close(y, y_ref, 1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        _assert_close(a, b, 1e-5)


def test_conv_batch_dims_like_nn_conv():
    ours, ref = Conv(features=4, kernel_size=3), nn.Conv(features=4, kernel_size=(3, 3))
    p = jax.jit(ref.init)(jax.random.key(0), jnp.zeros((1, 6, 7, 2)))
    x_unbatched, x_multi = _normal((6, 7, 2), 2), _normal((2, 3, 6, 7, 2), 3)
    got = jax.jit(lambda p, a, b: (ours.apply(p, a), ours.apply(p, b)))(p, x_unbatched, x_multi)
    want = jax.jit(lambda p, a, b: (ref.apply(p, a), ref.apply(p, b)))(p, x_unbatched, x_multi)
    for a, b in zip(got, want):
        _assert_close(a, b, 1e-5)
    assert got[1].shape == (2, 3, 6, 7, 4)


def test_conv_impl_xla_and_matmul_grad_agree():
    x = _normal((2, 7, 7, 3), 3)
    models = [Conv(6, (3, 3), impl=impl) for impl in ("auto", "matmul_grad", "xla")]
    p = jax.jit(models[0].init)(jax.random.key(0), x)

    @jax.jit
    def grads(p, x):
        return [jax.grad(lambda p, x, m=m: jnp.sum(jnp.sin(m.apply(p, x))), (0, 1))(p, x)
                for m in models]  # fmt: skip

    g_auto, g_matmul, g_xla = grads(p, x)
    for a, b, c in zip(jax.tree.leaves(g_auto), jax.tree.leaves(g_matmul), jax.tree.leaves(g_xla)):
        _assert_close(a, c, 1e-5)
        _assert_close(b, c, 1e-5)


def test_conv_bfloat16_params_and_inputs():
    x = _normal((2, 8, 8, 3), 4)
    ours = Conv(4, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    ref = nn.Conv(4, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    p = jax.jit(ref.init)(jax.random.key(0), x)
    assert jax.tree.leaves(p)[0].dtype == jnp.bfloat16
    xb = x.astype(jnp.bfloat16)

    @jax.jit
    def run(p, xb):
        def loss(m):
            return lambda p: jnp.sum(m.apply(p, xb).astype(jnp.float32) ** 2)

        return (ours.apply(p, xb), ref.apply(p, xb), jax.grad(loss(ours))(p),
                jax.grad(loss(ref))(p))  # fmt: skip

    y, y_ref, g, g_ref = run(p, xb)
    assert y.dtype == jnp.bfloat16
    _assert_close(y, y_ref, 2e-2)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        assert a.dtype == jnp.bfloat16
        _assert_close(a, b, 3e-2)
    # mixed precision: f32 params, bf16 compute
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p)
    y16 = jax.jit(Conv(4, (3, 3), dtype=jnp.bfloat16).apply)(p32, x)
    assert y16.dtype == jnp.bfloat16


def test_vmap_over_stacked_params_matches_loop():
    x, y = _normal((3, 6, 6, 2), 5), _normal((3, 6, 6, 4), 6)
    m = Conv(4, (3, 3))
    stacked = jax.jit(jax.vmap(lambda key: m.init(key, x)))(jax.random.split(jax.random.key(0), 3))

    def loss(p):
        return jnp.mean((m.apply(p, x) - y) ** 2)

    def loss_ref(p):
        return jnp.mean((nn.Conv(4, (3, 3)).apply(p, x) - y) ** 2)

    @jax.jit
    def run(stacked):
        looped = [jax.grad(loss_ref)(jax.tree.map(lambda a, i=i: a[i], stacked)) for i in range(3)]
        return jax.vmap(jax.grad(loss))(stacked), looped

    g_vmapped, g_looped = run(stacked)
    for i, g_i in enumerate(g_looped):
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
    with pytest.raises(ConfigError):
        Conv(3, (3, 3), **kwargs).init(jax.random.key(0), x)


def test_bad_module_fields_and_shapes():
    x = jnp.ones((1, 5, 5, 2))
    with pytest.raises(ConfigError):
        Conv(3, (3, 3, 3)).init(jax.random.key(0), x)
    with pytest.raises(ConfigError):
        Conv(3, (0, 3)).init(jax.random.key(0), x)
    with pytest.raises(ConfigError):
        Conv(0, (3, 3)).init(jax.random.key(0), x)
    with pytest.raises(ShapeError):
        conv2d(x, jnp.ones((3, 3, 4, 3)))  # channel mismatch
    with pytest.raises(ShapeError):
        conv2d(x, jnp.ones((7, 7, 2, 3)), padding="VALID")  # empty output
    with pytest.raises(ConfigError):
        conv2d(x.astype(jnp.int32), jnp.ones((3, 3, 2, 3), jnp.int32))


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_auto_keeps_native_conv_and_autodiff_on_accelerators(platform):
    # Lowering for an accelerator needs no device: jax.export lowers for any platform.
    x, k, _ = _inputs(ROW_CASE)
    step = jax.jit(jax.grad(lambda x, k: jnp.sum(conv2d(x, k) ** 2), (0, 1)))
    text = jax.export.export(step, platforms=[platform])(x, k).mlir_module()
    assert text.count("stablehlo.convolution") == 3  # forward, input and weight gradient
    assert "stablehlo.dot_general" not in text
    cpu_text = jax.export.export(step, platforms=["cpu"])(x, k).mlir_module()
    assert cpu_text.count("stablehlo.convolution") == 2
    assert cpu_text.count("stablehlo.dot_general") == 3


def test_default_kernel_is_drawn_as_a_matrix_with_the_same_values():
    """The default LeCun-normal kernel comes out bit for bit as nn.Conv's (a faster compile)."""
    layer, reference = Conv(8, (3, 3)), nn.Conv(8, (3, 3))
    x = jnp.ones((1, 6, 6, 5))
    ours = layer.init(jax.random.PRNGKey(3), x)["params"]["kernel"]
    theirs = reference.init(jax.random.PRNGKey(3), x)["params"]["kernel"]
    np.testing.assert_array_equal(ours, theirs)
