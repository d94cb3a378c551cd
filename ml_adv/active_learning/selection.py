"""Batch selection from scores and embeddings: top-k, k-center greedy, uncertainty-weighted
k-center.

All three are jitted and work on the whole pool with an ``available`` mask (labelled or
already-picked rows are ``False``), so the pool keeps one shape for the whole loop and a
round never recompiles the selection for a shrinking pool.

* ``top_k``: the ``n`` highest scores among available rows (uncertainty, BALD, random).
* ``k_center_greedy``: the core-set rule of Sener & Savarese (2018). Each pick is the
  available point farthest from every centre so far (the labelled set's embeddings, then
  the earlier picks), which greedily minimises the covering radius. One pick streams the
  pool once: ``min_dist = min(min_dist, |f - f_pick|^2)``, so 1,000 picks from a
  100,000 x 128 pool are memory-bound, not compute-bound.
* ``k_center_greedy(..., weights=u)``: the hybrid. Each pick maximises ``u_i * min_dist_i``.
  Why this and not BADGE: it keeps the k-center guarantee that a near-duplicate of a
  centre has ``min_dist ~ 0`` and therefore a score of ~0, so a batch never holds
  near-duplicates while any distinct candidate is left (BADGE's k-means++ draw only makes
  them unlikely); it is deterministic given the model; it reuses the same streaming
  kernel on ``[N, F]`` embeddings, while BADGE's gradient embeddings are ``[N, C * F]``
  (C times the traffic); and it has no extra knob beyond the uncertainty score.
  Uncertainty ``u`` is rescaled to ``[floor, 1]`` so a pool of confident points still
  falls back to pure k-center instead of to index order.

Two options for large pools: ``precision="bfloat16"`` stores and streams the pool in half
the bytes (picks near-identical, not identical), and ``prune=True`` skips points whose distance
provably cannot change (``kcenter.py``; identical picks). ``benchmarks/kcenter.py``
measures both against the streaming floor and scikit-activeml.

Distances are squared Euclidean in float32, computed as ``sum((f - c)^2)`` rather than
``|f|^2 + |c|^2 - 2 f.c``: the expanded form cancels catastrophically for near-duplicate
points, which is exactly where the no-duplicate guarantee is decided.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ml_adv.active_learning.kcenter import (
    blocked_pool,
    first_argmax,
    narrow_in_loop,
    pruned_greedy,
    row_blocks,
    sq_dist,
)
from ml_adv.errors import ConfigError, DataError, check_positive, describe, unknown_name


def check_request(n: int, available) -> None:
    """ConfigError unless ``0 < n <= available.sum()`` (run on the host, before compiling)."""
    check_positive("n_samples", n)
    left = int(np.sum(np.asarray(available)))
    if n > left:
        raise ConfigError(
            f"n_samples: expected at most the {left} unlabelled pool samples left, got {n}"
        )


@partial(jax.jit, static_argnames=("n",))
def top_k(scores: Float[Array, " N"], available: Bool[Array, " N"], n: int) -> Int[Array, " n"]:
    """Indices of the ``n`` highest scores among available rows, best first (NaN counts as
    lowest).
    """
    # Available rows with NaN/-inf scores become the lowest finite value, so they still
    # outrank every unavailable row (-inf) and a request for n <= available never picks one.
    lowest = jnp.finfo(scores.dtype).min
    clean = jnp.where(jnp.isnan(scores), lowest, jnp.maximum(scores, lowest))
    return jax.lax.top_k(jnp.where(available, clean, -jnp.inf), n)[1]


@partial(jax.jit, static_argnames=("chunk",))
def nearest_centres(
    points: Float[Array, "N F"], centres: Float[Array, "M F"], *, chunk: int = 256
) -> tuple[Float[Array, " N"], Int[Array, " N"]]:
    """``(min_j |points_i - centres_j|^2, argmin_j)``, scanning ``chunk`` centres at a time
    (``M >= 1``).

    Memory stays at ``[N, chunk]``; the centre list is padded with copies of its first
    row, which cannot change a minimum (ties keep the lowest index). Either array may be
    bfloat16; distances are float32.
    """
    points = points.astype(jnp.float32)
    centres = centres.astype(jnp.float32)
    m = centres.shape[0]
    chunk = min(chunk, m)
    pad = (-m) % chunk
    if pad:
        centres = jnp.concatenate([centres, jnp.broadcast_to(centres[:1], (pad, centres.shape[1]))])
    blocks = centres.reshape(-1, chunk, centres.shape[1])

    def body(carry, xs):
        best, arg = carry
        block, offset = xs
        diff = points[:, None, :] - block[None, :, :]
        d = jnp.sum(diff * diff, axis=-1)
        closer = jnp.min(d, axis=1) < best
        arg = jnp.where(closer, offset + jnp.argmin(d, axis=1).astype(jnp.int32), arg)
        return (jnp.minimum(best, jnp.min(d, axis=1)), arg), None

    init = (
        jnp.full((points.shape[0],), jnp.inf, jnp.float32),
        jnp.zeros((points.shape[0],), jnp.int32),
    )
    offsets = jnp.arange(blocks.shape[0], dtype=jnp.int32) * chunk
    return jax.lax.scan(body, init, (blocks, offsets))[0]


def min_sq_distances(
    points: Float[Array, "N F"], centres: Float[Array, "M F"], *, chunk: int = 256
) -> Float[Array, " N"]:
    """``min_j |points_i - centres_j|^2`` (``nearest_centres`` without the argmin)."""
    return nearest_centres(points, centres, chunk=chunk)[0]


@partial(jax.jit, static_argnames=("n", "blocks"))
def _greedy(features, available, min_dist, weights, n: int, blocks: int = 1):
    rows = features.shape[0]
    pool = blocked_pool(features, blocks)  # the same rows, split so every core streams a share

    def body(i, carry):
        min_dist, available, picks, radii = carry
        block = narrow_in_loop(pool, min_dist)
        # Before the first centre every distance is +inf (no centres given): the weights
        # alone decide the first pick; after it every distance is finite.
        gap = jnp.where(jnp.isinf(min_dist), weights, min_dist * weights)
        score = jnp.where(available, gap, -jnp.inf)
        j = first_argmax(score)
        centre = narrow_in_loop(features, min_dist)[j].astype(jnp.float32)
        min_dist = jnp.minimum(min_dist, sq_dist(block, centre, rows))
        return min_dist, available.at[j].set(False), picks.at[i].set(j), radii.at[i].set(score[j])

    init = (min_dist, available, jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.float32))
    _, _, picks, radii = jax.lax.fori_loop(0, n, body, init)
    return picks, radii


POOL_PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def k_center_greedy(
    features: Float[Array, "N F"],
    available: Bool[Array, " N"],
    n: int,
    *,
    centres: Float[Array, "M F"] | None = None,
    weights: Float[Array, " N"] | None = None,
    weight_floor: float = 1e-3,
    return_radii: bool = False,
    precision: str = "float32",
    prune: bool = False,
):
    """Greedy k-center (core-set) picks from the available rows of ``features``.

    Args:
        features: ``[N, F]`` pool embeddings.
        available: ``[N]`` bool, rows that may be picked.
        n: number of picks.
        centres: ``[M, F]`` embeddings already covered (the labelled set); ``None`` or
            ``M = 0`` starts from the highest-weight (or first) available row.
        weights: optional ``[N]`` non-negative uncertainty: the hybrid rule
            ``argmax u_i * min_dist_i``; rescaled to ``[weight_floor, 1]``.
        return_radii: also return each pick's (weighted) squared distance at pick time.
        precision: ``"float32"``, or ``"bfloat16"`` to store the pool (and centres) in half
            the bytes; arithmetic stays float32. Picks are near-identical, not identical
            (benchmarks/README.md, "k-center greedy at scale", reports how near). Each
            pick streams the bfloat16 rows and widens them in registers
            (``kcenter.narrow_in_loop``), so a pick
            reads half the bytes: below the float32 streaming floor on XLA:CPU
            (``benchmarks/kcenter.py``); for accelerators, unmeasured.
        prune: skip points whose distance provably cannot change (``kcenter.py``): the same
            picks, less traffic on clustered embeddings, more work on unclustered ones.

    Returns:
        ``[n]`` int32 pool indices in pick order (and ``[n]`` radii).
    """
    if precision not in POOL_PRECISIONS:
        raise unknown_name("precision", precision, list(POOL_PRECISIONS))
    dtype = POOL_PRECISIONS[precision]
    features = jnp.asarray(features, jnp.float32).astype(dtype)
    available = jnp.asarray(available, bool)
    if features.ndim != 2 or available.shape != (features.shape[0],):
        raise DataError(
            "features: expected [N, F] embeddings with an [N] available mask, got "
            f"{describe(features)} and mask {describe(available)}"
        )
    check_request(n, available)
    if not bool(jnp.all(jnp.isfinite(features))):
        raise DataError(
            f"features: expected finite embeddings, got NaN or inf in {describe(features)}"
        )
    if centres is not None and np.shape(centres)[0] > 0:
        centres = jnp.asarray(centres, jnp.float32)
        if centres.ndim != 2 or centres.shape[1] != features.shape[1]:
            raise DataError(
                f"centres: expected [M, {features.shape[1]}] embeddings, got {describe(centres)}"
            )
        if not bool(jnp.all(jnp.isfinite(centres))):
            raise DataError(
                f"centres: expected finite embeddings, got NaN or inf in {describe(centres)}"
            )
        centres = centres.astype(dtype)
        min_dist, assign = nearest_centres(features, centres)
    else:
        centres = jnp.zeros((0, features.shape[1]), dtype)
        min_dist = jnp.full((features.shape[0],), jnp.inf, jnp.float32)
        assign = jnp.full((features.shape[0],), -1, jnp.int32)
    if weights is None:
        w = jnp.ones_like(min_dist)
    else:
        w = jnp.asarray(weights, jnp.float32)
        if w.shape != min_dist.shape:
            raise DataError(
                f"weights: expected [{features.shape[0]}] scores, got {describe(weights)}"
            )
        w = _rescale(w, available, weight_floor)
    blocks = row_blocks(features.shape[0])
    if prune:
        picks, radii, _ = pruned_greedy(
            features, available, min_dist, assign, centres, w, n, blocks=blocks
        )
    else:
        picks, radii = _greedy(features, available, min_dist, w, n, blocks=blocks)
    return (picks, radii) if return_radii else picks


@jax.jit
def _rescale(w, available, floor):
    w = jnp.where(available & jnp.isfinite(w), jnp.maximum(w, 0.0), 0.0)
    top = jnp.max(w)
    scaled = jnp.where(top > 0, w / jnp.where(top > 0, top, 1.0), 0.0)
    return jnp.maximum(scaled, floor)
