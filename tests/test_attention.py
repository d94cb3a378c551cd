"""ml_adv.kernels.attention: the encoder's attention_fn computes Flax's attention, faster on CPU."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.kernels.attention import dot_product_attention
from ml_adv.models.layers import EncoderBlock

B, L, H, D = 3, 7, 2, 4


def _qkv(dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    return [jax.random.normal(k, (B, L, H, D)).astype(dtype) for k in keys]


def _mask():
    valid = (
        jnp.asarray(np.random.default_rng(1).random((B, L)) > 0.3).at[0].set(False)
    )  # row 0: all padding
    return nn.make_attention_mask(valid, valid)


CASES = {
    "plain": {},
    "mask": {"mask": _mask()},
    "bias": {"bias": jax.random.normal(jax.random.PRNGKey(5), (B, H, L, L))},
    "dropout": {"mask": _mask(), "dropout_rng": jax.random.PRNGKey(3), "dropout_rate": 0.3},
    "dropout per head": {
        "mask": _mask(),
        "dropout_rng": jax.random.PRNGKey(3),
        "dropout_rate": 0.3,
        "broadcast_dropout": False,
    },
    "deterministic": {
        "mask": _mask(),
        "dropout_rng": jax.random.PRNGKey(3),
        "dropout_rate": 0.3,
        "deterministic": True,
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_and_gradients_match_flax(case):
    kwargs = CASES[case]
    q, k, v = _qkv()

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, **kwargs)))

    np.testing.assert_allclose(
        dot_product_attention(q, k, v, **kwargs),
        nn.dot_product_attention(q, k, v, **kwargs),
        rtol=1e-5,
        atol=1e-6,
    )
    got = jax.grad(loss(dot_product_attention), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss(nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_fully_masked_query_gets_uniform_weights_and_no_gradient():
    q, k, v = _qkv()
    mask = _mask()
    out = dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(
        out[0], jnp.broadcast_to(v[0].mean(axis=0), out[0].shape), rtol=1e-5, atol=1e-6
    )
    dq = jax.grad(lambda q: jnp.sum(dot_product_attention(q, k, v, mask=mask)))(q)
    assert not np.any(np.asarray(dq[0]))


def test_bf16_softmax_runs_in_float32_and_returns_the_value_dtype():
    q, k, v = _qkv(jnp.bfloat16)
    out = dot_product_attention(q, k, v, mask=_mask(), force_fp32_for_softmax=True)
    assert out.dtype == jnp.bfloat16
    want = nn.dot_product_attention(*_qkv(), mask=_mask())
    np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=0.03)


def test_encoder_block_keeps_flax_parameters_and_outputs():
    """Same parameter tree as nn.MultiHeadDotProductAttention's (checkpoints unchanged), same
    outputs."""
    x = jax.random.normal(jax.random.PRNGKey(7), (B, L, 8))
    block = EncoderBlock(
        num_heads=2, mlp_dim=16, dropout=0.0, attention_dropout=0.2, pre_norm=False
    )
    params = block.init(jax.random.PRNGKey(0), x)
    attn = nn.MultiHeadDotProductAttention(num_heads=2)
    reference = attn.init(jax.random.PRNGKey(0), x, x)["params"]
    assert jax.tree.structure(params["params"]["attention"]) == jax.tree.structure(reference)

    import ml_adv.models.layers as layers

    mask = _mask()
    rngs = {"dropout": jax.random.PRNGKey(9)}  # attention dropout on: the same draws either way
    ours = block.apply(params, x, mask, train=True, rngs=rngs)
    original, layers.measured_attention = layers.measured_attention, nn.dot_product_attention
    try:
        flax_out = block.apply(params, x, mask, train=True, rngs=rngs)
    finally:
        layers.measured_attention = original
    np.testing.assert_allclose(ours, flax_out, rtol=1e-5, atol=1e-5)


def test_a_gpu_measures_both_forms_and_runs_the_faster(tmp_path, monkeypatch):
    """On a (simulated) GPU the encoder's attention_fn times the head-major form against
    Flax's once per shape and runs the choice; on a CPU it runs the head-major form unmeasured."""
    import json

    from ml_adv.kernels import autotune
    from ml_adv.kernels.attention import ATTENTION_FORMS, measured_attention

    q, k, v = _qkv()
    kwargs = CASES["dropout"]
    want = nn.dot_product_attention(q, k, v, **kwargs)
    autotune.configure(enabled=True, cache_dir=tmp_path)
    try:
        before = autotune.measurements()
        np.testing.assert_allclose(
            measured_attention(q, k, v, **kwargs), want, rtol=1e-5, atol=1e-6
        )
        assert autotune.measurements() == before and not list(tmp_path.iterdir())  # CPU: unmeasured
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
        monkeypatch.setattr(autotune, "REPEATS", 2)
        autotune.configure(enabled=True, cache_dir=tmp_path)
        np.testing.assert_allclose(
            measured_attention(q, k, v, **kwargs), want, rtol=1e-5, atol=1e-6
        )
        assert autotune.measurements() == before + 1
        (path,) = tmp_path.glob("gpu-*.json")
        ((key, entry),) = json.loads(path.read_text())["entries"].items()
        assert key.startswith("attention") and set(entry["us"]) == set(ATTENTION_FORMS)
    finally:
        autotune.configure(enabled=None, cache_dir=None)
