"""k-center greedy with exact triangle-inequality pruning (Elkan-style), for large pools.

The plain greedy (``selection._greedy``) streams the whole pool once per pick. A new centre
``c`` can only lower the nearest-centre distance ``d(x)`` of a point ``x`` if
``d(x, c) < d(x)``, and by the triangle inequality ``d(x, c) >= d(a, c) - d(x)`` where
``a`` is ``x``'s current nearest centre. So ``d(a, c) >= 2 d(x)`` proves that ``x``
cannot change, from two numbers per point (its squared distance and its centre id: 8
bytes, against the 512 of a 128-d float32 row).

XLA has no data-dependent skipping, so the skip is made physical: each pick tests every
point, lists the live ones (those that may change), and a ``while`` loop gathers them
``N/16`` rows at a time, computes their distances and scatters the new minima back; when
more than half are live, the pick streams the whole pool as the plain greedy does. Skipping whole blocks of rows
instead (rows sorted by centre, even nested by the centre hierarchy) was measured first
and skipped almost nothing on digits embeddings: the live points of one pick are spread
over most cells (benchmarks/README.md).

The test keeps a relative safety margin (``_MARGIN``) far above float32 rounding, so a
skipped point is one whose distance could not have gone down, and the picks are the plain
greedy's (the distance kernels are compiled separately and may round differently in the
last bit, so the radii agree to float32 precision, not bit for bit). On a pool without
cluster structure (Gaussian noise in 128-d, where every distance is about the same)
nothing can be pruned and every pick streams the whole pool, plus the per-point test.
It is an option, ``k_center_greedy(..., prune=True)``, because it compiles 3-4x slower
than the plain loop; benchmarks/README.md has the measurements.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

# d(a, c)^2 >= 4 (1 + _MARGIN) d(x)^2 skips x: float32 distances are off by ~1e-6 relative.
_MARGIN = 1e-3
_CHUNKS = 16  # live rows are gathered N/16 at a time


def _sq_dist(rows, c):
    diff = rows.astype(jnp.float32) - c[None, :]
    return jnp.sum(diff * diff, axis=-1)  # the plain kernel's expression


@partial(jax.jit, static_argnames=("n",))
def pruned_greedy(features, available, min_dist, assign, centres, weights, n: int):
    """Greedy k-center picks with triangle-inequality pruning; the plain greedy's picks.

    Args:
        features: ``[N, F]`` pool (float32 or bfloat16; distances are float32).
        available: ``[N]`` bool.
        min_dist: ``[N]`` squared distance to the nearest given centre (``inf`` if none).
        assign: ``[N]`` int32 index of that centre in ``centres`` (``-1`` if none).
        centres: ``[M, F]`` given centres (``M`` may be 0), same dtype as ``features``.
        weights: ``[N]`` float32 multipliers of ``min_dist`` (ones for plain k-center).
        n: number of picks.

    Returns:
        ``([n] int32 picks, [n] float32 radii, [n] int32 live points per pick)``.
    """
    rows, _ = features.shape
    m = centres.shape[0]
    chunk = max(1, -(-rows // _CHUNKS))
    table = jnp.concatenate([centres, jnp.zeros((n, features.shape[1]), features.dtype)])

    def sparse(live, count, c, slot, d2, assign):
        # live rows first, then row 0 as filler: recomputing a row's minimum is always
        # correct (and gives the same value), so the filler needs no masking
        idx = jnp.nonzero(live, size=chunk * _CHUNKS, fill_value=0)[0]

        def update(k, carry):
            d2, assign = carry
            part = jax.lax.dynamic_slice_in_dim(idx, k * chunk, chunk)
            new = _sq_dist(features.at[part].get(mode="promise_in_bounds"), c)
            old = d2.at[part].get(mode="promise_in_bounds")
            old_a = assign.at[part].get(mode="promise_in_bounds")
            d2 = d2.at[part].set(jnp.minimum(old, new), mode="promise_in_bounds")
            assign = assign.at[part].set(jnp.where(new < old, slot, old_a), mode="promise_in_bounds")
            return d2, assign

        return jax.lax.fori_loop(0, (count + chunk - 1) // chunk, update, (d2, assign))

    def full(live, count, c, slot, d2, assign):
        new = _sq_dist(features, c)
        return jnp.minimum(d2, new), jnp.where(new < d2, slot, assign)

    def pick(i, carry):
        d2, assign, avail, table, picks, radii, counts = carry
        gap = jnp.where(jnp.isinf(d2), weights, d2 * weights)
        score = jnp.where(avail, gap, -jnp.inf)
        j = jnp.argmax(score)
        slot = m + i
        table = table.at[slot].set(features[j])
        c = features[j].astype(jnp.float32)
        dc2 = _sq_dist(table, c)  # d(a, c)^2 for every slot (unfilled slots are nobody's centre)
        live = jnp.isinf(d2) | (dc2[assign] < (4.0 * (1.0 + _MARGIN)) * d2)
        count = jnp.sum(live, dtype=jnp.int32)
        # gathering costs more per row than streaming: past half the pool, stream it all
        d2, assign = jax.lax.cond(2 * count > rows, full, sparse, live, count, c, slot, d2, assign)
        return (d2, assign, avail.at[j].set(False), table, picks.at[i].set(j), radii.at[i].set(score[j]),
                counts.at[i].set(count))

    init = (min_dist, assign, available, table, jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.float32),
            jnp.zeros((n,), jnp.int32))
    _, _, _, _, picks, radii, counts = jax.lax.fori_loop(0, n, pick, init)
    return picks, radii, counts
