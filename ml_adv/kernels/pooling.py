"""Non-overlapping max pooling with a cheap backward pass (first-maximum rule).

Why hand-written: ``nn.max_pool``'s gradient lowers to XLA's select-and-scatter, which is
much slower on CPU; the gradient of a plain reshape + max is better but still a large share
of a CNN's step (tie counting and several passes over a 6-D tensor).

Here the forward is the reshape + max and also records, per window, the
position of the first maximum (row-major) as an int8; the backward is a single
fused ``where`` that drops each output gradient at that position. That is
exactly select-and-scatter's (and PyTorch's) rule, so gradients equal
``nn.max_pool``'s, ties included. It beat the autodiff of reshape + max, a backward that
rebuilds the first-max mask from x and y, and max over strided slices.
Measurements: benchmarks/README.md, 'Kernel and step measurements'.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _windows(x: jax.Array, size: int) -> jax.Array:
    """``[N, H, W, C]`` -> ``[N, H/s, s, W/s, s, C]`` (a ragged border is dropped, as VALID
    pooling does)."""
    n, h, w, c = x.shape
    h, w = h - h % size, w - w % size
    return x[:, :h, :w, :].reshape(n, h // size, size, w // size, size, c)


def _window_positions(size: int) -> jax.Array:
    """``[1, 1, s, 1, s, 1]`` int8 row-major position of each element inside its window."""
    pos = (
        jnp.arange(size, dtype=jnp.int8)[:, None] * size + jnp.arange(size, dtype=jnp.int8)[None, :]
    )
    return pos[None, None, :, None, :, None]


def max_pool(x: jax.Array, size: int) -> jax.Array:
    """``size x size`` max pooling with stride ``size`` (VALID: a ragged border is dropped), NHWC.

    The backward has two forms with identical gradients (``BACKWARD_FORMS``): ``"index"``
    keeps the first maximum's position from the forward pass, ``"mask"`` rebuilds it from
    the input and output in the backward pass. On a CPU the faster for this shape is
    measured once and cached (``ml_adv.kernels.autotune``); ``"index"`` is the static choice
    (faster on AMD EPYC: 3,176 vs 2,611 samples/s in the 28x28 CNN's scanned epoch).
    """
    return _BACKWARDS[_measured_backward(x, size)](x, size)


BACKWARD_FORMS = ("index", "mask")


def _first_max(x: jax.Array, y: jax.Array, size: int) -> jax.Array:
    """Per window, the row-major position of the first element equal to the window's max."""
    is_max = _windows(x, size) == y[:, :, None, :, None, :]
    return jnp.where(is_max, _window_positions(size), jnp.int8(size * size)).min(axis=(2, 4))


def _scatter_to_first(
    first: jax.Array, dy: jax.Array, size: int, height: int, width: int
) -> jax.Array:
    """Each output gradient at its window's first maximum, zeros elsewhere (and on a ragged
    border)."""
    dx = jnp.where(
        first[:, :, None, :, None, :] == _window_positions(size),
        dy[:, :, None, :, None, :],
        jnp.zeros((), dy.dtype),
    )
    n, rows, _, cols, _, c = dx.shape
    dx = dx.reshape(n, rows * size, cols * size, c)
    if (height, width) != dx.shape[1:3]:
        dx = jnp.pad(dx, ((0, 0), (0, height - dx.shape[1]), (0, width - dx.shape[2]), (0, 0)))
    return dx


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_index(x: jax.Array, size: int) -> jax.Array:
    return _windows(x, size).max(axis=(2, 4))


def _max_pool_index_fwd(x: jax.Array, size: int):
    y = _windows(x, size).max(axis=(2, 4))
    # A zero-size array carries the input's spatial shape (for the ragged border) at no cost.
    return y, (_first_max(x, y, size), jnp.zeros((x.shape[1], x.shape[2], 0), jnp.int8))


def _max_pool_index_bwd(size: int, residuals, dy: jax.Array):
    first, shape_carrier = residuals
    return (_scatter_to_first(first, dy, size, *shape_carrier.shape[:2]),)


_max_pool_index.defvjp(_max_pool_index_fwd, _max_pool_index_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_mask(x: jax.Array, size: int) -> jax.Array:
    return _windows(x, size).max(axis=(2, 4))


def _max_pool_mask_fwd(x: jax.Array, size: int):
    y = _windows(x, size).max(axis=(2, 4))
    return y, (x, y)


def _max_pool_mask_bwd(size: int, residuals, dy: jax.Array):
    x, y = residuals
    return (_scatter_to_first(_first_max(x, y, size), dy, size, x.shape[1], x.shape[2]),)


_max_pool_mask.defvjp(_max_pool_mask_fwd, _max_pool_mask_bwd)

_BACKWARDS = {"index": _max_pool_index, "mask": _max_pool_mask}


def _measured_backward(x: jax.Array, size: int) -> str:
    """The faster backward form for this shape on this device (cached), or the static one.

    Both forms are plain JAX, so a GPU measures its own choice too (``autotune.CPU_AND_GPU``).
    """
    from ml_adv.kernels import autotune

    candidates = {
        name: jax.grad(lambda v, f=fn: 0.5 * jnp.sum(jnp.square(f(v, size).astype(jnp.float32))))
        for name, fn in _BACKWARDS.items()
    }
    signature = {"x": tuple(x.shape), "size": size, "dtype": str(x.dtype)}
    return autotune.choose(
        "max_pool_training",
        signature,
        candidates,
        [jax.ShapeDtypeStruct(x.shape, x.dtype)],
        default="index",
        backends=autotune.CPU_AND_GPU,
    )
