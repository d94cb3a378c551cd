"""``dot_general`` for dense layers whose weight gradient runs on XLA:CPU's fast matmul.

Why: a dense layer's weight gradient ``x^T @ dy`` contracts the leading (batch and sequence)
axis of both operands, and XLA:CPU sends that transposed-lhs form to its slower Eigen
fallback, while the standard ``[M, K] @ [K, N]`` form goes to YNNPACK. These are the weight
gradients of every projection in the transformer and BERT blocks.

``dense_dot_general`` has the signature of ``lax.dot_general``: pass it as ``dot_general=`` to
``nn.Dense`` / ``nn.DenseGeneral``, or as ``qkv_dot_general`` / ``out_dot_general`` to
``nn.MultiHeadDotProductAttention``; forward pass and parameters are unchanged. On CPU its
``custom_vjp`` computes the kernel gradient as a standard-form matmul from an explicitly
transposed operand (``lax.optimization_barrier`` keeps XLA from folding it back): ``x^T @ dy``
when the layer widens (``K <= N``), ``(dy^T @ x)^T`` when it narrows. Which form runs (XLA's
folded dot, transpose ``x``, transpose ``dy``; a narrowing layer never transposes ``x``) is
measured per (rows, K, N, dtype) by ``ml_adv.kernels.autotune`` and cached per CPU model; when a
train step shards its batch over per-core devices, on one core's rows with every core busy.
With autotuning off the narrower operand is transposed. The input gradient and other backends
use plain autodiff (``lax.platform_dependent``). Only the dense layout (lhs contracting its
trailing axes, kernel its leading ones, no batch dimensions) is rewritten; any other
``dimension_numbers`` go to ``lax.dot_general`` unchanged.

Used by every projection of ``EncoderBlock``; not by the MLP and CNN, whose dense layers
measured slower with it. Measurements: benchmarks/README.md, 'Kernel and step measurements'.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
from jax import lax

from ml_adv.kernels import autotune

__all__ = ["dense_dot_general"]


def _is_dense_layout(lhs_ndim: int, rhs_ndim: int, dimension_numbers) -> bool:
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    n = len(lhs_contract)
    return (
        not lhs_batch
        and not rhs_batch
        and n > 0
        and tuple(lhs_contract) == tuple(range(lhs_ndim - n, lhs_ndim))
        and tuple(rhs_contract) == tuple(range(n))
        and rhs_ndim > n
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense_matmul(x: jax.Array, kernel: jax.Array, n_contract: int, preferred: Any) -> jax.Array:
    dims = ((tuple(range(x.ndim - n_contract, x.ndim)), tuple(range(n_contract))), ((), ()))
    return lax.dot_general(x, kernel, dims, preferred_element_type=preferred)


def _dense_matmul_fwd(x, kernel, n_contract, preferred):
    return _dense_matmul(x, kernel, n_contract, preferred), (x, kernel)


def _dense_matmul_bwd(n_contract, preferred, residuals, dy):
    x, kernel = residuals
    k = math.prod(kernel.shape[:n_contract])
    n = math.prod(kernel.shape[n_contract:])
    x_flat = x.reshape(-1, k)
    dy_flat = dy.reshape(-1, n).astype(x.dtype)
    # dx: dy @ kernel^T in the dense layout (YNNPACK handles the transposed rhs at full speed).
    dx = lax.dot_general(
        dy_flat, kernel.reshape(k, n).astype(x.dtype), (((1,), (1,)), ((), ()))
    ).reshape(x.shape)

    def materialised(x_flat, dy_flat):
        return lax.optimization_barrier(x_flat.T) @ dy_flat

    def folded(x_flat, dy_flat):
        return lax.dot_general(x_flat, dy_flat, (((0,), (0,)), ((), ())))

    def materialised_dy(x_flat, dy_flat):
        # (dy^T @ x)^T: the barrier on the product keeps XLA from folding the small
        # [n, k] output transpose back into the dot (which sends it to Eigen again).
        return lax.optimization_barrier(lax.optimization_barrier(dy_flat.T) @ x_flat).T

    forms = {"xla": folded, "transpose_x": materialised, "transpose_dy": materialised_dy}

    def measured(x_flat, dy_flat):  # the CPU branch: the form autotune measured fastest
        def in_context(form):
            # In a network x is an activation's output, and XLA may fuse that elementwise op
            # into the x transpose (the transformer MLP's GELU: ~35 ms a layer), so the
            # candidates are timed with one in front, as they run.
            return lambda x_, dy_: form(jax.nn.gelu(x_), dy_)

        # A narrowing layer (k > n) never transposes x: x is then the wide output of an
        # activation, and XLA fuses that activation into the transpose loop, reading its
        # inputs strided; timed alone the form can win, in the model it lost
        # (benchmarks/README.md, 'Kernel and step measurements').
        candidates = forms if k <= n else {name: forms[name] for name in ("xla", "transpose_dy")}
        # With the batch sharded over per-core devices each core computes this on its own
        # rows while the other does the same, so it is timed that way (timed alone on the
        # whole batch, the choice was wrong for the sharded step: benchmarks/README.md).
        devices = autotune.batch_split_devices(x_flat.shape[0])
        rows = x_flat.shape[0] // devices  # one device's share
        signature = {"rows": rows, "k": k, "n": n, "dtype": str(x_flat.dtype)}
        if devices > 1:
            signature["devices"] = devices
        choice = autotune.choose(
            "dense_weight_grad",
            signature,
            {name: in_context(form) for name, form in candidates.items()},
            [
                jax.ShapeDtypeStruct((rows, k), x_flat.dtype),
                jax.ShapeDtypeStruct((rows, n), dy_flat.dtype),
            ],
            # Without measuring: transpose the narrower operand (dy is 4x smaller than the
            # transformer MLP's wide input and comes straight from the layer above).
            default="transpose_x" if k <= n else "transpose_dy",
            concurrent=devices,
        )
        return forms[choice](x_flat, dy_flat)

    dk = lax.platform_dependent(x_flat, dy_flat, cpu=measured, default=folded)
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers,
    precision: Any = None,
    preferred_element_type: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.dot_general`` with a CPU-fast weight gradient for the dense-layer layout."""
    if (
        precision is None
        and not kwargs
        and lhs.dtype == rhs.dtype
        and _is_dense_layout(lhs.ndim, rhs.ndim, dimension_numbers)
    ):
        return _dense_matmul(lhs, rhs, len(dimension_numbers[0][0]), preferred_element_type)
    return lax.dot_general(
        lhs,
        rhs,
        dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
        **kwargs,
    )
