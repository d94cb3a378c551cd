"""Gradient reversal (Ganin & Lempitsky, 2015) and its lambda schedule.

``gradient_reversal(x, lam)`` is the identity on the forward pass and multiplies the
incoming gradient by ``-lam`` on the backward pass. It is a ``jax.custom_vjp`` whose
scale ``lam`` is an *array argument*, not a Python constant closed over: a schedule that
changes lambda every step feeds new values to the same compiled program, never a new
trace. ``lam`` itself gets a zero cotangent: the reversal is a fixed coupling between
the feature extractor and the domain discriminator, not something to learn.

``grl_schedule(p)`` is the DANN paper's ramp ``lambda_p = 2 / (1 + exp(-gamma p)) - 1``
for training progress ``p`` in [0, 1] (``gamma = 10``): near 0 early, when the domain
signal from random features is noise, and near 1 at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

DEFAULT_GAMMA = 10.0


@jax.custom_vjp
def gradient_reversal(x: Float[Array, ...], lam: Float[Array, ""]) -> Float[Array, ...]:
    """Identity forward; backward multiplies the gradient by ``-lam``.

    Example:
        >>> g = jax.grad(lambda x: jnp.sum(gradient_reversal(x, jnp.float32(0.5))))(jnp.ones(3))
        >>> g.tolist()
        [-0.5, -0.5, -0.5]
    """
    return x


def _forward(x, lam):
    return x, lam


def _backward(lam, g):
    return (-jnp.asarray(lam, g.dtype) * g, jnp.zeros_like(lam))


gradient_reversal.defvjp(_forward, _backward)


def grl_schedule(
    progress: Float[Array, ""] | float, gamma: float = DEFAULT_GAMMA
) -> Float[Array, ""]:
    """``2 / (1 + exp(-gamma * p)) - 1`` with ``p`` clipped to [0, 1]; traceable."""
    p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    return 2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0
