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
more than half are live, the pick streams the whole pool as the plain greedy does.
Skipping whole blocks of rows instead (rows sorted by centre, even nested by the centre
hierarchy) was measured first and skipped almost nothing on digits embeddings: the live
points of one pick are spread over most cells (benchmarks/README.md).

The test keeps a relative safety margin (``_MARGIN``) far above float32 rounding, so a
skipped point is one whose distance could not have gone down, and the picks are the plain
greedy's (the distance kernels are compiled separately and may round differently in the
last bit, so the radii agree to float32 precision, not bit for bit). On a pool without
cluster structure (Gaussian noise in 128-d, where every distance is about the same)
nothing can be pruned and every pick streams the whole pool, plus the per-point test.
It is an option, ``k_center_greedy(..., prune=True)``, because it compiles 3-4x slower
than the plain loop, and since the plain pass streams at the machine's rate (next
paragraph) it no longer pays on a 2-core EPYC; benchmarks/README.md has the measurements.

Both loops share two pieces that keep a pick at one streaming pass on XLA:CPU:
``row_blocks``/``blocked_pool`` (the distance pass over a ``[B, N/B, F]`` view, which XLA's
YNNPACK reduction spreads over every core, where ``[N, F]`` ran on one) and
``first_argmax`` (``argmax`` as a ``max`` and a ``min`` over indices, which vectorise
where the variadic argmax reduction does not).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

# d(a, c)^2 >= 4 (1 + _MARGIN) d(x)^2 skips x: float32 distances are off by ~1e-6 relative.
_MARGIN = 1e-3
_CHUNKS = 16  # live rows are gathered N/16 at a time
_EXACT_FLOAT_INDEX = 2**24  # float32 holds every integer up to here


# Row blocks for the distance pass. XLA:CPU hands the pass to YNNPACK, which splits a
# reduction's output over threads along its leading dimensions only: ``[N, F] -> [N]``
# ran on one core (half the machine's streaming rate on 2 cores), ``[B, N/B, F] -> [B, N/B]``
# on all of them, with bitwise the same sums (each row's 128-wide sum is unchanged).
# Measured on a 2-core EPYC, 100 picks from 100,000 x 128: 0.42-0.54 s plain, 0.27-0.32 s
# for any B from 2 to 98 (benchmarks/README.md "k-center"); B follows the core count.
MIN_BLOCK_ROWS = 256
BLOCKS_PER_CORE = 4


def row_blocks(rows: int, cores: int | None = None) -> int:
    """How many row blocks the pool's distance pass is split into (1: not split).

    At least ``BLOCKS_PER_CORE`` per usable core (16 at least) so every core gets work, and
    blocks of at least ``MIN_BLOCK_ROWS`` rows. A divisor of ``rows`` near that count is
    preferred, because then the split is a free reshape; otherwise the pool is padded,
    which copies it once per call.
    """
    from ml_adv.devices import usable_cores

    target = max(16, BLOCKS_PER_CORE * (cores or usable_cores()))
    target = min(target, rows // MIN_BLOCK_ROWS)
    if target < 2:
        return 1
    for count in range(target, 4 * target + 1):
        if rows % count == 0:
            return count
    return target


def blocked_pool(features, blocks: int):
    """``[N, F] -> [blocks, ceil(N / blocks), F]``, zero rows appended when ``blocks`` does
    not divide N.
    """
    rows, width = features.shape
    per_block = -(-rows // blocks)
    pad = blocks * per_block - rows
    if pad:
        features = jnp.concatenate([features, jnp.zeros((pad, width), features.dtype)])
    return features.reshape(blocks, per_block, width)


def sq_dist(pool, c, rows: int | None = None):
    """``|pool_i - c|^2`` in float32 for the first ``rows`` rows (all by default) of a
    (blocked) pool.
    """
    diff = pool.astype(jnp.float32) - c.reshape((1,) * (pool.ndim - 1) + c.shape)
    return jnp.sum(diff * diff, axis=-1).reshape(-1)[:rows]


def narrow_in_loop(pool, carry):
    """``pool``, tied to a loop ``carry`` when narrower than float32, so it is widened
    inside the pass.

    Without the tie, XLA sees ``pool.astype(float32)`` as loop-invariant, hoists it out of
    the pick loop and streams a float32 copy every pick: a bfloat16 pool then saved no
    traffic (measured 1.01-1.06x slower than float32). Tied through an optimization
    barrier, each pass reads the bfloat16 rows and widens them in registers. The values,
    and so the picks, are unchanged (the same arithmetic in the same order, tested).
    """
    if pool.dtype == jnp.float32:
        return pool
    return jax.lax.optimization_barrier((pool, carry))[0]


def first_argmax(score):
    """``jnp.argmax`` for NaN-free scores, as two plain reductions.

    XLA:CPU lowers ``argmax`` to a variadic (value, index) reduction that runs on one core
    without vectorising: 0.5 ms per pick over 100,000 scores, a quarter of the pass itself.
    A ``max`` then the lowest index holding it (a ``min`` over indices) is the same pick and
    vectorises. The indices are float32 (exact below 2**24 rows): XLA:CPU hands a float
    ``min`` to YNNPACK as one multi-threaded reduction, where an int32 ``min`` became a
    chain of five single-threaded reduce-window kernels (0.14-0.2 ms a pick over 100,000
    scores, 6% of a 128-d pick). The scores here are never NaN: ``k_center_greedy``
    rejects non-finite features and zeroes non-finite weights.
    """
    rows = score.shape[0]
    top = jnp.max(score)
    dtype = jnp.float32 if rows <= _EXACT_FLOAT_INDEX else jnp.int32
    index = jnp.arange(rows, dtype=dtype)
    return jnp.min(jnp.where(score == top, index, jnp.asarray(rows, dtype))).astype(jnp.int32)


@partial(jax.jit, static_argnames=("n", "blocks"))
def pruned_greedy(features, available, min_dist, assign, centres, weights, n: int, blocks: int = 1):
    """Greedy k-center picks with triangle-inequality pruning; the plain greedy's picks.

    Args:
        features: ``[N, F]`` pool (float32 or bfloat16; distances are float32).
        available: ``[N]`` bool.
        min_dist: ``[N]`` squared distance to the nearest given centre (``inf`` if none).
        assign: ``[N]`` int32 index of that centre in ``centres`` (``-1`` if none).
        centres: ``[M, F]`` given centres (``M`` may be 0), same dtype as ``features``.
        weights: ``[N]`` float32 multipliers of ``min_dist`` (ones for plain k-center).
        n: number of picks.
        blocks: row blocks of the full pass (``row_blocks``).

    Returns:
        ``([n] int32 picks, [n] float32 radii, [n] int32 live points per pick)``.
    """
    rows, _ = features.shape
    m = centres.shape[0]
    chunk = max(1, -(-rows // _CHUNKS))
    chunk_blocks = row_blocks(chunk)
    pool = blocked_pool(features, blocks)
    table = jnp.concatenate([centres, jnp.zeros((n, features.shape[1]), features.dtype)])

    def sparse(live, count, c, slot, d2, assign):
        # live rows first, then row 0 as filler: recomputing a row's minimum is always
        # correct (and gives the same value), so the filler needs no masking
        idx = jnp.nonzero(live, size=chunk * _CHUNKS, fill_value=0)[0]

        def update(k, carry):
            d2, assign = carry
            part = jax.lax.dynamic_slice_in_dim(idx, k * chunk, chunk)
            gathered = narrow_in_loop(features, d2).at[part].get(mode="promise_in_bounds")
            new = sq_dist(blocked_pool(gathered, chunk_blocks), c, chunk)
            old = d2.at[part].get(mode="promise_in_bounds")
            old_a = assign.at[part].get(mode="promise_in_bounds")
            d2 = d2.at[part].set(jnp.minimum(old, new), mode="promise_in_bounds")
            assign = assign.at[part].set(
                jnp.where(new < old, slot, old_a), mode="promise_in_bounds"
            )
            return d2, assign

        return jax.lax.fori_loop(0, (count + chunk - 1) // chunk, update, (d2, assign))

    def full(live, count, c, slot, d2, assign):
        new = sq_dist(narrow_in_loop(pool, d2), c, rows)
        return jnp.minimum(d2, new), jnp.where(new < d2, slot, assign)

    def pick(i, carry):
        d2, assign, avail, table, picks, radii, counts = carry
        gap = jnp.where(jnp.isinf(d2), weights, d2 * weights)
        score = jnp.where(avail, gap, -jnp.inf)
        j = first_argmax(score)
        slot = m + i
        row = narrow_in_loop(features, d2)[j]
        table = table.at[slot].set(row)
        c = row.astype(jnp.float32)
        dc2 = sq_dist(table, c)  # d(a, c)^2 for every slot (unfilled slots are nobody's centre)
        live = jnp.isinf(d2) | (dc2[assign] < (4.0 * (1.0 + _MARGIN)) * d2)
        count = jnp.sum(live, dtype=jnp.int32)
        # gathering costs more per row than streaming: past half the pool, stream it all
        d2, assign = jax.lax.cond(2 * count > rows, full, sparse, live, count, c, slot, d2, assign)
        return (
            d2,
            assign,
            avail.at[j].set(False),
            table,
            picks.at[i].set(j),
            radii.at[i].set(score[j]),
            counts.at[i].set(count),
        )

    init = (
        min_dist,
        assign,
        available,
        table,
        jnp.zeros((n,), jnp.int32),
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((n,), jnp.int32),
    )
    _, _, _, _, picks, radii, counts = jax.lax.fori_loop(0, n, pick, init)
    return picks, radii, counts
