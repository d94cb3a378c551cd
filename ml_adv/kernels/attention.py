"""Scaled dot-product attention laid out for XLA:CPU's batched matmul (``attention_fn``).

A drop-in ``attention_fn`` for ``nn.MultiHeadDotProductAttention``: same arguments, same
maths and the same dropout draws as ``flax.linen.dot_product_attention``, so parameters,
checkpoints and dropout masks do not change. Two things differ, both for speed:

* **Head-major batched matmuls.** Flax contracts ``'bqhd,bkhd->bhqk'``, whose batch axes
  (b, h) are not leading in the operands. XLA:CPU lowers that dot through layout copies
  around a slower kernel. Here q, k and v are transposed once to ``[B, H, L, d]`` and the
  two products are plain ``[..., L, d] @ [..., d, L]`` matmuls.
* **Normalisation after the value product.** ``softmax(s) @ v`` is computed as
  ``(exp(s - max) @ v) / sum(exp(s - max))``: one divide per output element
  (``[B, H, L, d]``) instead of one per attention weight (``[B, H, L, L]``), and no
  normalised weight matrix is kept for the backward pass. The values agree with Flax's to
  float32 rounding (~1e-6). Dropout scales the unnormalised weights, which is the same
  product because each row is divided by one number.

The backward is autodiff of this form: a hand-written (flash-attention style) one was no
faster. Measurements: benchmarks/README.md, 'Kernel and step measurements'.

Mixed precision follows the encoder's policy: the scores are taken in the compute dtype,
the exponentials, their row sums and the final division run in float32 when
``force_fp32_for_softmax`` is set, and the value product runs in the value dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import random

__all__ = ["ATTENTION_FORMS", "dot_product_attention", "measured_attention"]


def _head_major(x: jax.Array) -> jax.Array:
    """``[..., L, H, d]`` <-> ``[..., H, L, d]`` (its own inverse)."""
    return jnp.swapaxes(x, -3, -2)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype=None,
    precision=None,
    force_fp32_for_softmax: bool = False,
) -> jax.Array:
    """Attention over ``[..., L, H, d]`` query/key/value; returns ``[..., Lq, H, d]``.

    Arguments mean what they mean in ``flax.linen.dot_product_attention``; ``mask`` and
    ``bias`` broadcast to ``[..., H, Lq, Lk]`` (True keeps a position).
    """
    query, key, value = promote_dtype(query, key, value, dtype=dtype)
    dtype = query.dtype
    depth = query.shape[-1]
    q = _head_major(query / jnp.sqrt(depth).astype(dtype))
    k = _head_major(key)
    v = _head_major(value)
    scores = jnp.matmul(q, jnp.swapaxes(k, -1, -2), precision=precision)  # [..., H, Lq, Lk]
    if force_fp32_for_softmax:
        scores = scores.astype(jnp.float32)
    if bias is not None:
        scores = scores + bias.astype(scores.dtype)
    if mask is not None:
        # A fully masked row becomes uniform, as in Flax (every score equals the minimum).
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    # The shift only guards exp against overflow; softmax does not depend on it, so its
    # gradient is zero and stop_gradient saves the backward pass an argmax scatter.
    shifted = scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    weights = jnp.exp(shifted)
    row_sum = jnp.sum(weights, axis=-1, keepdims=True)
    if not deterministic and dropout_rate > 0.0:
        # Same draw, shape and scaling as Flax's, applied before the (row-wise) division.
        keep_prob = 1.0 - dropout_rate
        shape = ((1,) * (key.ndim - 2) + weights.shape[-2:]) if broadcast_dropout else weights.shape
        keep = random.bernoulli(dropout_rng, keep_prob, shape)
        weights = weights * (keep.astype(weights.dtype) / jnp.asarray(keep_prob, weights.dtype))
    out = jnp.matmul(weights.astype(v.dtype), v, precision=precision)
    out = (out.astype(row_sum.dtype) / row_sum).astype(dtype)
    return _head_major(out)


def _flax_attention(*args, **kwargs):
    import flax.linen as nn

    return nn.dot_product_attention(*args, **kwargs)


# The two forms compute the same function with the same dropout draws; which is faster
# depends on the backend. On a CPU the head-major form was measured faster (benchmarks/README.md)
# and is the static choice; a GPU measures both (``measured_attention``).
ATTENTION_FORMS = {"head_major": dot_product_attention, "flax": _flax_attention}


def measured_attention(
    query,
    key,
    value,
    bias=None,
    mask=None,
    broadcast_dropout=True,
    dropout_rng=None,
    dropout_rate=0.0,
    deterministic=False,
    dtype=None,
    precision=None,
    force_fp32_for_softmax=False,
):
    """``attention_fn`` that runs the form measured fastest for this shape on this device.

    On a CPU: the head-major form, unmeasured (measured once on EPYC, benchmarks/README.md).
    On a GPU the two forms are timed once per shape, forward and backward as training runs
    them (``autotune.GPU``), and the choice is cached in the GPU's own autotune file.
    """
    from ml_adv.kernels import autotune

    form = "head_major"
    if autotune.active(autotune.GPU):

        def training(fn):
            def loss(q, k, v):
                out = fn(
                    q,
                    k,
                    v,
                    mask=None,
                    deterministic=True,
                    dtype=dtype,
                    precision=precision,
                    force_fp32_for_softmax=force_fp32_for_softmax,
                )
                return jnp.sum(out.astype(jnp.float32) ** 2)

            return jax.grad(loss, argnums=(0, 1, 2))

        example = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (query, key, value)]
        signature = {"q": tuple(query.shape), "k": tuple(key.shape), "dtype": str(query.dtype)}
        form = autotune.choose(
            "attention",
            signature,
            {name: training(fn) for name, fn in ATTENTION_FORMS.items()},
            example,
            default="head_major",
            backends=autotune.GPU,
        )
    return ATTENTION_FORMS[form](
        query,
        key,
        value,
        bias=bias,
        mask=mask,
        broadcast_dropout=broadcast_dropout,
        dropout_rng=dropout_rng,
        dropout_rate=dropout_rate,
        deterministic=deterministic,
        dtype=dtype,
        precision=precision,
        force_fp32_for_softmax=force_fp32_for_softmax,
    )
