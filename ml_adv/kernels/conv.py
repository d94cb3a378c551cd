"""2-D convolution whose training step is fast on XLA:CPU.

Why: XLA:CPU lowers a conv's *weight gradient* (autodiff of ``lax.conv_general_dilated``) to a
conv over the batch and spatial axes that runs far below its forward speed, so a plain Flax CNN
trained slower than PyTorch eager. That gradient is a sum of matmuls, ``dW[i, j] =
x_shifted(i, j)^T @ dy`` per kernel offset, so on CPU ``conv2d`` is a ``jax.custom_vjp``:

* weight gradient: one matmul per kernel row over a channel-major ``(C, N, H, W)`` copy of
  the padded input (float32 accumulation); with stride 1 and few contracted positions, one
  forward conv with the batch as channels (``_weight_grad_conv``), which XLA runs well there.
* input gradient: with stride 1, a forward conv of ``dy`` with the flipped, in/out-swapped
  kernel (``_input_grad``), the only form XLA:CPU keeps on its fast kernel inside a
  ``lax.scan``; other strides use XLA's transposed conv (``jax.linear_transpose``).
* forward: XLA's conv, except for thin (grayscale/RGB) inputs, where XLA's conv is slow and
  ``kh*kw*Cin`` broadcast multiply-adds fused with the bias and activation are faster.

The best lowering differs between machines, so with ``impl="auto"`` on a CPU ``autotune`` times
the candidates per layer shape and caches the winner per CPU model (``ML_ADV_AUTOTUNE=0``: the
static rules above). The branch is chosen at lowering time (``lax.platform_dependent``), so
GPU/TPU get XLA's conv with plain autodiff. ``impl="xla"`` / ``"matmul_grad"`` force a path.

Supported: NHWC/HWIO, strides >= 1, padding ``"SAME"``, ``"VALID"``, an int or ``(low, high)``
pairs >= 0; no dilation or feature groups. ``Conv`` is the drop-in for the 2-D ``nn.Conv``.
Measurements: benchmarks/README.md, 'Kernel and step measurements' and 'Conv lowerings'.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from jax import lax

from ml_adv.errors import ConfigError, ShapeError, check_positive, describe
from ml_adv.kernels import autotune

__all__ = ["IMPLS", "Conv", "conv2d", "resolve_padding"]

IMPLS: tuple[str, ...] = ("auto", "xla", "matmul_grad")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_WGRAD_METHODS = ("auto", "row", "offset", "im2col", "conv")  # see _weight_grad
# "auto" takes the batch-as-channels forward conv ("conv") when the stride is 1 and the
# gradient contracts at most this many positions (N * Ho * Wo), else the kernel-row matmuls
# ("row"). Timings: benchmarks/README.md, 'Kernel and step measurements'.
_WGRAD_CONV_MAX_POSITIONS = 2048
# Forward as fused multiply-adds up to this many input channels (_conv_direct); beyond it
# XLA's conv wins. Timings: benchmarks/README.md, 'Kernel and step measurements'.
_DIRECT_FWD_MAX_CHANNELS = 3
# With autotuning on, the multiply-add forward is measured against XLA's up to this width.
_DIRECT_FWD_CANDIDATE_CHANNELS = 8

Pads = tuple[tuple[int, int], tuple[int, int]]


# --------------------------------------------------------------------------- checks


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigError(f"{name}: expected an int or a pair of ints, got {describe(value)}")
    return int(value[0]), int(value[1])


def resolve_padding(
    padding: Any,
    spatial_shape: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int],
) -> Pads:
    """Turn ``"SAME"``/``"VALID"``/int/pairs into explicit ``((top, bottom), (left, right))``.

    ``"SAME"`` follows ``lax.conv_general_dilated`` exactly (extra padding at the
    end when it is odd, stride-aware).
    """
    bad = ConfigError(
        "padding: expected 'SAME', 'VALID', an int or two (low, high) pairs, "
        f"got {describe(padding)}"
    )
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise bad
        pads = lax.padtype_to_pads(
            tuple(spatial_shape), tuple(kernel_size), tuple(strides), padding.upper()
        )
        return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore[return-value]
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        pads = ((int(padding), int(padding)),) * 2
    elif isinstance(padding, Sequence) and len(padding) == 2:
        pads = tuple(_pair("padding", p) for p in padding)  # an int per axis: (p, p), as nn.Conv
    else:
        raise bad
    if any(p < 0 for pair in pads for p in pair):
        raise ConfigError(f"padding: negative padding is not supported, got {pads}")
    return pads  # type: ignore[return-value]


def _check_strides(strides: Any) -> tuple[int, int]:
    sh, sw = _pair("strides", strides)
    if sh < 1 or sw < 1:
        raise ConfigError(f"strides: expected positive ints, got {(sh, sw)}")
    return sh, sw


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ConfigError(f"impl: unknown name {impl!r}; expected one of {list(IMPLS)}")
    return impl


def _out_size(size: int, k: int, lo: int, hi: int, s: int) -> int:
    return (size + lo + hi - k) // s + 1


# --------------------------------------------------------------------------- kernels


def _accumulation_dtype(dtype) -> Any:
    """float32 for float32 and narrower floats, float64 for float64. Spelled out rather than
    ``promote_types(dtype, float32)``, which strict dtype promotion refuses for bfloat16."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _conv_xla(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS)


def _shifted(xt: jax.Array, i: int, j: int, out_hw: tuple[int, int], strides: tuple[int, int]):
    """The (C, N, Ho, Wo) view of the channel-major padded input that offset (i, j) multiplies."""
    (ho, wo), (sh, sw) = out_hw, strides
    c, n, _, _ = xt.shape
    return lax.slice(
        xt, (0, 0, i, j), (c, n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1), (1, 1, sh, sw)
    )


def _weight_grad(
    x: jax.Array,
    dy: jax.Array,
    kernel_shape: tuple[int, ...],
    strides: tuple[int, int],
    pads: Pads,
    method: str = "auto",
) -> jax.Array:
    """dW[i, j] = sum over (n, h, w) of x_shifted(i, j)[n, h, w, :]^T dy[n, h, w, :], as matmuls.

    The padded input is transposed once to channel-major (C, N, H, W), so every
    shifted view flattens to a (K, N*Ho*Wo) row-major lhs and each matmul is a
    plain (K, M) @ (M, Cout) with a long contraction: measured 1.1-3x faster
    than slicing NHWC views (a transposed-lhs matmul per offset). ``method``:
    "row" (kh matmuls with K = kw*Cin: one kernel row's kw views stacked),
    "offset" (kh*kw matmuls, K = Cin), "im2col" (one matmul, K = kh*kw*Cin),
    "conv" (``_weight_grad_conv``, stride 1) or "auto" ("conv" for small stride-1
    cases, else "row"); see benchmarks/conv_bench.py for the comparison.
    """
    kh, kw, cin, cout = kernel_shape
    n, ho, wo, _ = dy.shape
    if method == "auto":
        small = n * ho * wo <= _WGRAD_CONV_MAX_POSITIONS
        method = "conv" if strides == (1, 1) and small else "row"
    if method == "conv":
        if strides != (1, 1):
            raise ConfigError(f"wgrad method 'conv': expected strides (1, 1), got {strides}")
        return _weight_grad_conv(x, dy, pads)
    acc = _accumulation_dtype(dy.dtype)
    xt = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))).transpose(3, 0, 1, 2)
    dy2 = dy.reshape(n * ho * wo, cout)

    def views(offsets):
        parts = [_shifted(xt, i, j, (ho, wo), strides) for i, j in offsets]
        cols = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
        return lax.dot(cols.reshape(len(parts) * cin, n * ho * wo), dy2, preferred_element_type=acc)

    if method == "row":
        dw = jnp.stack([views([(i, j) for j in range(kw)]) for i in range(kh)])
    elif method == "offset":
        dw = jnp.stack([views([(i, j)]) for i in range(kh) for j in range(kw)])
    elif method == "im2col":
        dw = views([(i, j) for i in range(kh) for j in range(kw)])
    else:
        raise ConfigError(f"wgrad method: expected one of {list(_WGRAD_METHODS)}, got {method!r}")
    return dw.reshape(kernel_shape).astype(x.dtype)


def _weight_grad_conv(x: jax.Array, dy: jax.Array, pads: Pads) -> jax.Array:
    """The stride-1 weight gradient as one standard-form (VALID, NHWC/HWIO) forward conv.

    ``dW[i, j, c, o] = sum over (n, h, w) of xp[n, h + i, w + j, c] * dy[n, h, w, o]`` is a
    conv of the padded input with the batch as its channels and ``Cin`` as its batch,
    by ``dy`` as a ``(Ho, Wo, N, Cout)`` kernel. XLA:CPU keeps that form on YNNPACK inside a
    ``lax.scan``; it beats the row matmuls only when few positions are contracted
    (``_WGRAD_CONV_MAX_POSITIONS``). Accumulates in float32.
    """
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    dw = lax.conv_general_dilated(
        xp.transpose(3, 1, 2, 0),  # (Cin, Hp, Wp, N)
        dy.transpose(1, 2, 0, 3),  # (Ho, Wo, N, Cout)
        (1, 1),
        "VALID",
        dimension_numbers=_DIMENSION_NUMBERS,
        preferred_element_type=_accumulation_dtype(dy.dtype),
    )  # (Cin, kh, kw, Cout)
    return dw.transpose(1, 2, 0, 3).astype(x.dtype)


def _nhwc_shifted(xp: jax.Array, i: int, j: int, out_hw: tuple[int, int], strides):
    """The (N, Ho, Wo, C) view of the padded NHWC input that kernel offset (i, j) multiplies."""
    (ho, wo), (sh, sw) = out_hw, strides
    n, _, _, c = xp.shape
    return lax.slice(
        xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1)
    )


def _conv_direct(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads):
    """Forward conv for thin inputs as kh*kw*Cin broadcast multiply-adds.

    XLA fuses the whole sum (and a following bias/activation) into one loop
    that reads the small input once and writes the output once; its conv
    kernel handles Cin = 1..3 poorly (2.7-4x slower, see _DIRECT_FWD_MAX_CHANNELS).
    Accumulates in float32.
    """
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    out_hw = tuple(_out_size((h, w)[a], kernel.shape[a], *pads[a], strides[a]) for a in range(2))
    acc = _accumulation_dtype(x.dtype)
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))).astype(acc)
    k = kernel.astype(acc)
    y = None
    for i in range(kh):
        for j in range(kw):
            view = _nhwc_shifted(xp, i, j, out_hw, strides)
            for c in range(cin):
                term = view[..., c : c + 1] * k[i, j, c][None, None, None, :]
                y = term if y is None else y + term
    return y.astype(x.dtype)


def _conv_cpu_forward(x, kernel, strides, pads, forward: str = "auto"):
    if forward == "auto":
        forward = "direct" if kernel.shape[2] <= _DIRECT_FWD_MAX_CHANNELS else "xla"
    if forward == "direct":
        return _conv_direct(x, kernel, strides, pads)
    return _conv_xla(x, kernel, strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_matmul_grad(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int],
    pads: Pads,
    method: str,
    forward: str = "auto",
) -> jax.Array:
    return _conv_cpu_forward(x, kernel, strides, pads, forward)


def _conv_matmul_grad_fwd(x, kernel, strides, pads, method, forward="auto"):
    return _conv_cpu_forward(x, kernel, strides, pads, forward), (x, kernel)


def _input_grad(dy: jax.Array, kernel: jax.Array, x_shape, strides, pads: Pads) -> jax.Array:
    """dL/dx, written as a *forward* conv when the stride is 1.

    With stride 1, ``dx = conv(dy, flip(kernel) with in/out swapped)`` padded by
    ``k - 1 - low`` in front. Spelled that way it has the same standard
    NHWC/HWIO form as the forward pass, which XLA:CPU lowers to its fast
    (YNNPACK) convolution also inside a ``lax.scan`` body; autodiff's
    transposed form (a conv over a reversed kernel with swapped kernel
    dimensions) stays on the slow generic path inside loops. Measured in the
    scanned epoch of the 28x28 reference CNN (batch 128): 21.5 against 37.4
    ms per step. Strides > 1 and paddings wider than ``k - 1`` (where the
    front padding would be negative) keep ``jax.linear_transpose`` of the
    forward, which traces only the transpose (a ``jax.vjp`` would also stage
    a dead forward conv).
    """
    kh, kw = kernel.shape[:2]
    (ho, wo), (h, w) = dy.shape[1:3], x_shape[1:3]
    front = (kh - 1 - pads[0][0], kw - 1 - pads[1][0])
    back = (h + kh - 1 - ho - front[0], w + kw - 1 - wo - front[1])
    if strides == (1, 1) and min(front + back) >= 0:
        flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
        return _conv_xla(dy, flipped, (1, 1), ((front[0], back[0]), (front[1], back[1])))
    (dx,) = jax.linear_transpose(
        lambda x_: _conv_xla(x_, kernel, strides, pads), jax.ShapeDtypeStruct(x_shape, dy.dtype)
    )(dy)
    return dx


def _conv_matmul_grad_bwd(strides, pads, method, forward, residuals, dy):
    x, kernel = residuals
    dx = _input_grad(dy, kernel, x.shape, strides, pads)
    dw = _weight_grad(x, dy, kernel.shape, strides, pads, method)
    return dx, dw


_conv_matmul_grad.defvjp(_conv_matmul_grad_fwd, _conv_matmul_grad_bwd)


# --------------------------------------------------------------------------- public


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = (1, 1),
    padding: Any = "SAME",
    impl: str = "auto",
    _wgrad: str = "auto",
) -> jax.Array:
    """2-D convolution, NHWC input and HWIO kernel, with a fast CPU weight gradient.

    Args:
        x: ``(N, H, W, Cin)`` input.
        kernel: ``(kh, kw, Cin, Cout)`` kernel; ``x`` and ``kernel`` are promoted
            to a common floating dtype.
        strides: int or ``(sh, sw)``, each >= 1.
        padding: ``"SAME"``, ``"VALID"``, an int, or ``((top, bottom), (left, right))``
            (an int per axis means symmetric), non-negative.
        impl: ``"auto"`` (matmul weight gradient on CPU, XLA autodiff elsewhere,
            decided at lowering time), ``"xla"`` or ``"matmul_grad"``.

    Returns:
        ``(N, Ho, Wo, Cout)``, equal to ``lax.conv_general_dilated`` with the same
        arguments, with gradients equal to its autodiff to float tolerance.

    Example:
        >>> y = conv2d(jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 4)))
        >>> y.shape
        (2, 8, 8, 4)
    """
    _check_impl(impl)
    if _wgrad not in _WGRAD_METHODS:
        raise ConfigError(f"_wgrad: expected one of {list(_WGRAD_METHODS)}, got {_wgrad!r}")
    strides = _check_strides(strides)
    if _wgrad == "conv" and strides != (1, 1):
        raise ConfigError(f"_wgrad: 'conv' needs strides (1, 1), got {strides}")
    if getattr(x, "ndim", None) != 4:
        raise ShapeError(f"x: expected an (N, H, W, C) array, got {describe(x)}")
    if getattr(kernel, "ndim", None) != 4:
        raise ShapeError(f"kernel: expected a (kh, kw, Cin, Cout) array, got {describe(kernel)}")
    if kernel.shape[2] != x.shape[3]:
        raise ShapeError(
            f"kernel: expected {x.shape[3]} input channels to match x, got {describe(kernel)}"
        )
    pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    out_hw = [_out_size(x.shape[1 + a], kernel.shape[a], *pads[a], strides[a]) for a in range(2)]
    if min(out_hw) < 1:
        raise ShapeError(
            f"x: spatial size {x.shape[1:3]} with padding {pads} is smaller than the "
            f"kernel {kernel.shape[:2]}"
        )
    dtype = jnp.result_type(x, kernel)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(f"x, kernel: expected floating dtypes, got {x.dtype} and {kernel.dtype}")
    x, kernel = x.astype(dtype), kernel.astype(dtype)

    def xla(x_, k_):
        return _conv_xla(x_, k_, strides, pads)

    def matmul(x_, k_):
        return _conv_matmul_grad(x_, k_, strides, pads, _wgrad, "auto")

    if impl == "xla":
        return xla(x, kernel)
    if impl == "matmul_grad":
        return matmul(x, kernel)
    if _wgrad == "auto":  # on CPU, the lowering autotune measured fastest for this shape
        return lax.platform_dependent(
            x, kernel, cpu=lambda x_, k_: _conv_measured(x_, k_, strides, pads), default=xla
        )
    return lax.platform_dependent(x, kernel, cpu=matmul, default=xla)


def _static_training_choice(x_shape, kernel_shape, strides: tuple[int, int], pads: Pads) -> str:
    """``"<wgrad method>/<forward>"`` by the measured-on-EPYC rules (autotuning off)."""
    n, (ho, wo) = (
        x_shape[0],
        [_out_size(x_shape[1 + a], kernel_shape[a], *pads[a], strides[a]) for a in range(2)],
    )
    small = strides == (1, 1) and n * ho * wo <= _WGRAD_CONV_MAX_POSITIONS
    return f"{'conv' if small else 'row'}/{_static_forward(kernel_shape)}"


def _static_forward(kernel_shape) -> str:
    return "direct" if kernel_shape[2] <= _DIRECT_FWD_MAX_CHANNELS else "xla"


def _forward_forms(kernel_shape) -> tuple[str, ...]:
    # The multiply-add forward is a candidate only for thin inputs (it is kh*kw*Cin passes).
    return ("direct", "xla") if kernel_shape[2] <= _DIRECT_FWD_CANDIDATE_CHANNELS else ("xla",)


def _signature(x, kernel, strides, pads) -> dict[str, Any]:
    return {
        "x": x.shape,
        "kernel": kernel.shape,
        "strides": strides,
        "pads": pads,
        "dtype": str(x.dtype),
    }


def _examples(x, kernel) -> list[jax.ShapeDtypeStruct]:
    return [
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        jax.ShapeDtypeStruct(kernel.shape, kernel.dtype),
    ]


def _measured_training(x, kernel, strides: tuple[int, int], pads: Pads) -> tuple[str, str]:
    """(weight-gradient method, forward form) of a differentiated layer, timed as a training
    step runs it: forward, input gradient and weight gradient. XLA's own conv gradient is not
    a candidate: inside a ``lax.scan`` it falls to a generic loop (50-150x slower here)."""
    methods = ("row", "conv") if strides == (1, 1) else ("row",)
    candidates = {}
    for method in methods:
        for forward in _forward_forms(kernel.shape):
            conv = functools.partial(
                _conv_matmul_grad, strides=strides, pads=pads, method=method, forward=forward
            )
            candidates[f"{method}/{forward}"] = _training_pass(conv)
    choice = autotune.choose(
        "conv2d_training",
        _signature(x, kernel, strides, pads),
        candidates,
        _examples(x, kernel),
        default=_static_training_choice(x.shape, kernel.shape, strides, pads),
    )
    method, forward = choice.split("/")
    return method, forward


def _measured_forward(x, kernel, strides: tuple[int, int], pads: Pads) -> str:
    """The forward form of a layer that is not differentiated (prediction), timed alone."""
    candidates = {
        f: functools.partial(_conv_cpu_forward, strides=strides, pads=pads, forward=f)
        for f in _forward_forms(kernel.shape)
    }
    return autotune.choose(
        "conv2d_forward",
        _signature(x, kernel, strides, pads),
        candidates,
        _examples(x, kernel),
        default=_static_forward(kernel.shape),
    )


def _training_pass(conv: Callable) -> Callable:
    """What a training step runs of one layer: the forward pass and both gradients."""
    return jax.grad(
        lambda x, k: 0.5 * jnp.sum(jnp.square(conv(x, k).astype(jnp.float32))), argnums=(0, 1)
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_measured(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads
) -> jax.Array:
    """The CPU conv with measured lowerings: the forward form alone when not differentiated,
    the (forward, weight-gradient) pair timed together when it is. The backward asks for
    the same cached decision the forward rule made."""
    return _conv_cpu_forward(x, kernel, strides, pads, _measured_forward(x, kernel, strides, pads))


def _conv_measured_fwd(x, kernel, strides, pads):
    _, forward = _measured_training(x, kernel, strides, pads)
    return _conv_cpu_forward(x, kernel, strides, pads, forward), (x, kernel)


def _conv_measured_bwd(strides, pads, residuals, dy):
    x, kernel = residuals
    method, _ = _measured_training(x, kernel, strides, pads)
    return _conv_matmul_grad_bwd(strides, pads, method, "auto", residuals, dy)


_conv_measured.defvjp(_conv_measured_fwd, _conv_measured_bwd)


class Conv(nn.Module):
    """Drop-in for the 2-D ``flax.linen.Conv`` with a fast CPU training step.

    Parameters are ``'kernel'`` ``(kh, kw, Cin, features)`` and ``'bias'``
    ``(features,)``, created in the same order with the same initialisers as
    ``nn.Conv``, so the same key gives identical params and checkpoints are
    interchangeable. Inputs are ``(*batch, H, W, C)`` (no batch axis is fine).

    Attributes:
        features: number of output channels.
        kernel_size: int (a square kernel; ``nn.Conv`` would read an int as a
            1-D kernel) or ``(kh, kw)``.
        strides: int, ``(sh, sw)`` or None (= 1).
        padding: ``"SAME"``, ``"VALID"``, an int, or two ``(low, high)`` pairs.
        use_bias: add a learned bias.
        dtype: computation dtype (``None``: promoted from inputs and params).
        param_dtype: dtype the parameters are created in.
        kernel_init, bias_init: as in ``nn.Conv``.
        impl: ``"auto"`` | ``"xla"`` | ``"matmul_grad"``, see ``conv2d``.

    Example:
        >>> layer = Conv(features=8, kernel_size=(3, 3))
        >>> params = layer.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] | None = 1
    padding: Any = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable[..., jax.Array] = nn.linear.default_kernel_init
    bias_init: Callable[..., jax.Array] = nn.initializers.zeros_init()
    impl: str = "auto"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        check_positive("features", self.features)
        kernel_size = _pair("kernel_size", self.kernel_size)
        if min(kernel_size) < 1:
            raise ConfigError(f"kernel_size: expected positive ints, got {kernel_size}")
        strides = _check_strides(1 if self.strides is None else self.strides)
        _check_impl(self.impl)
        if inputs.ndim < 3:
            raise ShapeError(f"inputs: expected (*batch, H, W, C), got {describe(inputs)}")
        batch_shape = inputs.shape[:-3]
        x = inputs.reshape((-1,) + inputs.shape[-3:])
        # Validate padding before any parameter is created (fail fast).
        resolve_padding(self.padding, x.shape[1:3], kernel_size, strides)

        kernel_shape = kernel_size + (x.shape[-1], self.features)
        kernel = self.param(
            "kernel", _drawn_as_matrix(self.kernel_init), kernel_shape, self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, strides=strides, padding=self.padding, impl=self.impl)
        if bias is not None:
            y = y + bias.reshape((1, 1, 1, -1))
        return y.reshape(batch_shape + y.shape[1:])


def _drawn_as_matrix(init: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """The default kernel initialiser, drawn as a ``[kh * kw * cin, cout]`` matrix and reshaped.

    Why: XLA:CPU compiled the 4-D draw 2-15x more slowly than the same draw as a matrix
    (e.g. (3, 3, 8, 16): 9.4 against 0.56 s), and every new conv shape of every run paid it.
    For the default (LeCun normal: its fan-in is ``kh * kw * cin`` in both layouts) the
    values are bit for bit the same (tested); another initialiser is used as it is.
    """
    if init is not nn.linear.default_kernel_init:
        return init

    def init_as_matrix(key, shape, dtype=jnp.float32):
        return init(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)

    return init_as_matrix
