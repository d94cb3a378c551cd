"""One LSTM layer over a whole sequence with a hand-written backward (weight gradients as GEMMs).

Why hand-written: autodiff of ``nn.RNN(nn.OptimizedLSTMCell)`` accumulates the weight
gradients inside the backward loop, one ``[D+H, B] x [B, 4H]`` product and a read-modify-write
of the ``[D+H, 4H]`` accumulator per time step, on the loop's serial chain. Here the backward
loop computes only what is serial (the gate gradients and ``dh = dz @ W_h^T``) and stacks the
gate gradients; the weight gradients are then one GEMM each over all ``T * B`` rows, which
XLA:CPU runs near its matmul peak. The forward keeps the input projection inside the loop:
hoisting it as one ``[B*T, D] x [D, 4H]`` matmul made the forward slower on XLA:CPU. The gain
over Flax's cell is small and shape-dependent, so which of the two a layer uses is measured per
shape (``ml_adv.kernels.autotune``, operation ``lstm_layer``); Flax's cell is the static choice
and the only one off CPU. Measurements: benchmarks/README.md, 'Kernel and step measurements'.

The maths is ``nn.OptimizedLSTMCell``'s, on the same parameters (``LSTMCellParams`` declares
them under the same names, initialisers and scope, so a model initialises identically with
either lowering): gates ``i, f, g, o = sigmoid, sigmoid, tanh, sigmoid`` of
``x_t W_i + h W_h + b``; ``c' = f c + i g``; ``h' = o tanh(c')``; zero initial carry. Only
float32 layers take it (bf16 stays on Flax's cell, whose mixed-precision rules it would have
to copy).
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import DenseParams

GATES = "ifgo"
LOWERINGS = ("flax", "fused")


class LSTMCellParams(nn.Module):
    """``nn.OptimizedLSTMCell``'s parameters (same names and initialisers), packed for
    ``lstm_sequence``.

    Returns ``(w_i [D, 4H], w_h [H, 4H], b [4H])`` with the gates in ``i, f, g, o`` order.
    """

    features: int

    @nn.compact
    def __call__(self, input_features: int):
        cell = nn.OptimizedLSTMCell  # its defaults: the one source of the initialisers
        fields = cell.__dataclass_fields__
        kernel_init, recurrent_init = (
            fields["kernel_init"].default,
            fields["recurrent_kernel_init"].default,
        )
        bias_init = fields["bias_init"].default
        w_i, w_h, b = [], [], []
        for gate in GATES:  # the cell's creation order: input then hidden, gate by gate
            w_i.append(
                DenseParams(
                    self.features,
                    use_bias=False,
                    kernel_init=kernel_init,
                    bias_init=bias_init,
                    name=f"i{gate}",
                )(jnp.zeros((1, input_features)))[0]
            )
            k, bias = DenseParams(
                self.features,
                use_bias=True,
                kernel_init=recurrent_init,
                bias_init=bias_init,
                name=f"h{gate}",
            )(jnp.zeros((1, self.features)))
            w_h.append(k)
            b.append(bias)
        return jnp.concatenate(w_i, -1), jnp.concatenate(w_h, -1), jnp.concatenate(b, -1)


def _cell(z, c):
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    return c_new, o * tanh_c, (i, f, g, o, tanh_c)


def _forward(xs, w_i, w_h, b):
    """Time-major scan: ``xs [T, B, D]`` -> ``((c_T, h_T), (hs [T, B, H], residuals))``."""
    zero = jnp.zeros((xs.shape[1], w_h.shape[0]), jnp.float32)
    bias = b.reshape(1, -1)

    def step(carry, x_t):
        c, h = carry
        c_new, h_new, gates = _cell(x_t @ w_i + h @ w_h + bias, c)
        return (c_new, h_new), (h_new, (h, c) + gates)

    (c, h), (hs, residuals) = jax.lax.scan(step, (zero, zero), xs)
    return (c, h), hs, residuals


@jax.custom_vjp
def _lstm_time_major(xs, w_i, w_h, b):
    (c, h), hs, _ = _forward(xs, w_i, w_h, b)
    return c, h, hs


def _lstm_fwd(xs, w_i, w_h, b):
    (c, h), hs, residuals = _forward(xs, w_i, w_h, b)
    return (c, h, hs), (xs, w_i, w_h, residuals)


def _lstm_bwd(saved, cotangents):
    xs, w_i, w_h, (h_prev, c_prev, i, f, g, o, tanh_c) = saved
    dc_last, dh_last, dhs = cotangents
    w_h_t = w_h.T

    def step(carry, inputs):
        dc, dh = carry
        dh_out, c_p, i, f, g, o, tanh_c = inputs
        dh = dh + dh_out
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        dz = jnp.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * c_p * f * (1.0 - f),
                dc * i * (1.0 - g * g),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=-1,
        )
        return (dc * f, dz @ w_h_t), dz

    _, dz = jax.lax.scan(step, (dc_last, dh_last), (dhs, c_prev, i, f, g, o, tanh_c), reverse=True)
    steps, batch, _ = xs.shape
    dz_rows = dz.reshape(steps * batch, -1)
    # The weight gradients, once, over every (step, example) row: the GEMMs this layer is for.
    dw_i = xs.reshape(steps * batch, -1).T @ dz_rows
    dw_h = h_prev.reshape(steps * batch, -1).T @ dz_rows
    dxs = (dz_rows @ w_i.T).reshape(xs.shape)  # dropped by XLA when x is data (first layer)
    return dxs, dw_i, dw_h, jnp.sum(dz_rows, axis=0)


_lstm_time_major.defvjp(_lstm_fwd, _lstm_bwd)


def lstm_sequence(x, w_i, w_h, b, *, reverse: bool = False):
    """An LSTM layer over ``x [B, T, D]`` from a zero carry: ``((c, h) final, outputs [B, T, H])``.

    ``reverse``: run from the last step to the first (outputs stay in input order, and the
    final carry is the one after the first step), as ``nn.RNN(reverse=True, keep_order=True)``.
    """
    xs = jnp.swapaxes(x, 0, 1)
    if reverse:
        xs = xs[::-1]
    c, h, hs = _lstm_time_major(xs, w_i, w_h, b)
    if reverse:
        hs = hs[::-1]
    return (c, h), jnp.swapaxes(hs, 0, 1)


@partial(jax.jit, static_argnames=("reverse",))
def _flax_sequence(x, w_i, w_h, b, reverse: bool = False):
    """The same layer through ``nn.RNN(nn.OptimizedLSTMCell)`` (the autotune reference)."""
    hidden = w_h.shape[0]
    gates_i, gates_h, gates_b = (jnp.split(w, 4, axis=-1) for w in (w_i, w_h, b))
    params = {f"i{g}": {"kernel": k} for g, k in zip(GATES, gates_i)}
    params |= {f"h{g}": {"kernel": k, "bias": bb} for g, k, bb in zip(GATES, gates_h, gates_b)}
    rnn = nn.RNN(nn.OptimizedLSTMCell(hidden), return_carry=True, reverse=reverse, keep_order=True)
    return rnn.apply({"params": {"cell": params}}, x)


def measured_lowering(x_shape, hidden: int, dtype, *, reverse: bool) -> str:
    """``"fused"`` or ``"flax"`` for an LSTM layer of this shape: the faster here (cached).

    Timed as training runs it: the gradient with respect to the weights and the input of a
    loss on every output and the final state. Measured on CPUs and GPUs alike, each in its
    own cache: the fused layer was written for XLA:CPU and runs on a GPU only where it
    measured faster there. With autotuning off, on other backends or for a non-float32
    layer: ``"flax"``, Flax's own cell.
    """
    from ml_adv.kernels import autotune

    if jnp.dtype(dtype) != jnp.float32:
        return "flax"
    batch, steps, features = x_shape

    def training(sequence):
        def loss(x, w_i, w_h, b):
            (c, h), hs = sequence(x, w_i, w_h, b, reverse=reverse)
            return jnp.sum(h) + jnp.sum(c) + jnp.sum(hs)

        return jax.grad(loss, argnums=(0, 1, 2, 3))

    example = [
        jax.ShapeDtypeStruct(s, jnp.float32)
        for s in (
            (batch, steps, features),
            (features, 4 * hidden),
            (hidden, 4 * hidden),
            (4 * hidden,),
        )
    ]
    signature = {
        "batch": batch,
        "steps": steps,
        "features": features,
        "hidden": hidden,
        "reverse": reverse,
    }
    return autotune.choose(
        "lstm_layer",
        signature,
        {"flax": training(_flax_sequence), "fused": training(lstm_sequence)},
        example,
        default="flax",
        backends=autotune.CPU_AND_GPU,
    )
