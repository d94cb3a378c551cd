"""Selection invariants, k-center greedy against a brute-force reference, no near-duplicates,
pruning and bf16."""

import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.active_learning.kcenter import first_argmax, pruned_greedy, row_blocks
from ml_adv.active_learning.selection import (
    _greedy,
    k_center_greedy,
    min_sq_distances,
    nearest_centres,
    top_k,
)
from ml_adv.errors import ConfigError, DataError


def brute_force_k_center(features, available, n, centres=None, weights=None, floor=1e-3):
    """The textbook rule, recomputing every distance from scratch at each pick (float64)."""
    f = np.asarray(features, np.float64)
    avail = np.asarray(available).copy()
    chosen = [np.asarray(c, np.float64) for c in (centres if centres is not None else [])]
    if weights is None:
        w = np.ones(len(f))
    else:
        w = np.where(avail, np.maximum(weights, 0), 0)
        w = np.maximum(w / w.max(), floor)
    picks = []
    for _ in range(n):
        if chosen:
            d = np.min(((f[:, None, :] - np.stack(chosen)[None]) ** 2).sum(-1), axis=1)
        else:
            d = np.ones(len(f))
        score = np.where(avail, d * w, -np.inf)
        j = int(np.argmax(score))
        picks.append(j)
        chosen.append(f[j])
        avail[j] = False
    return np.array(picks)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5)).astype(np.float32)
    available = rng.random(60) > 0.2
    centres = rng.normal(size=(4, 5)).astype(np.float32)
    return features, available, centres


def test_top_k_invariants():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(rng.normal(size=50), jnp.float32)
    available = rng.random(50) > 0.5
    picks = np.asarray(top_k(scores, jnp.asarray(available), 10))
    assert len(picks) == 10 and len(set(picks.tolist())) == 10
    assert available[picks].all()
    expected = np.argsort(-np.where(available, np.asarray(scores), -np.inf))[:10]
    np.testing.assert_array_equal(picks, expected)


def test_top_k_never_picks_unavailable_even_with_nan_scores():
    scores = jnp.array([np.nan, 5.0, -np.inf, 1.0], jnp.float32)
    available = jnp.array([True, False, True, False])
    picks = np.asarray(top_k(scores, available, 2))
    assert sorted(picks.tolist()) == [0, 2]


def test_min_sq_distances_matches_numpy(pool):
    features, _, centres = pool
    expected = ((features[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(
        min_sq_distances(jnp.asarray(features), jnp.asarray(centres), chunk=3), expected, rtol=1e-5
    )


@pytest.mark.parametrize("with_centres", [False, True])
def test_k_center_matches_brute_force(pool, with_centres):
    features, available, centres = pool
    c = centres if with_centres else None
    picks = np.asarray(k_center_greedy(features, available, 12, centres=c))
    np.testing.assert_array_equal(picks, brute_force_k_center(features, available, 12, centres=c))
    assert available[picks].all() and len(set(picks.tolist())) == 12


def test_weighted_k_center_matches_brute_force(pool):
    features, available, centres = pool
    weights = np.random.default_rng(2).random(60).astype(np.float32)
    picks = np.asarray(k_center_greedy(features, available, 12, centres=centres, weights=weights))
    np.testing.assert_array_equal(
        picks, brute_force_k_center(features, available, 12, centres, weights)
    )


def test_k_center_returns_covering_radii_decreasing(pool):
    features, available, centres = pool
    _, radii = k_center_greedy(features, available, 12, centres=centres, return_radii=True)
    radii = np.asarray(radii)
    assert np.all(np.diff(radii) <= 1e-6)  # each pick is farther than anything later


@pytest.mark.parametrize("weighted", [False, True])
def test_no_near_duplicates_in_one_batch(weighted):
    # 10 distinct points, each present 5 times with tiny noise; the duplicates are the
    # most uncertain, which tempts an uncertainty-weighted rule to take them together.
    rng = np.random.default_rng(3)
    base = rng.normal(size=(10, 4)).astype(np.float32) * 5
    features = np.repeat(base, 5, axis=0) + 1e-4 * rng.normal(size=(50, 4)).astype(np.float32)
    weights = np.repeat(np.linspace(1.0, 0.5, 10), 5).astype(np.float32) if weighted else None
    picks = np.asarray(k_center_greedy(features, np.ones(50, bool), 10, weights=weights))
    groups = picks // 5
    assert len(set(groups.tolist())) == 10, f"near-duplicates picked together: {picks}"


def test_hybrid_prefers_uncertain_among_equally_far():
    features = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    weights = np.array([0.1, 0.2, 1.0, 0.3], np.float32)
    picks = np.asarray(k_center_greedy(features, np.ones(4, bool), 1, weights=weights))
    assert picks.tolist() == [2]


def test_selection_errors(pool):
    features, available, _ = pool
    with pytest.raises(ConfigError, match="n_samples"):
        k_center_greedy(features, available, int(available.sum()) + 1)
    with pytest.raises(ConfigError, match="n_samples"):
        k_center_greedy(features, available, 0)
    with pytest.raises(DataError, match="centres"):
        k_center_greedy(features, available, 2, centres=np.zeros((3, 4), np.float32))
    with pytest.raises(DataError, match="weights"):
        k_center_greedy(features, available, 2, weights=np.ones(3, np.float32))
    with pytest.raises(DataError, match="features"):
        k_center_greedy(features[:, 0], available, 2)
    with pytest.raises(ConfigError, match="precision"):
        k_center_greedy(features, available, 2, precision="float16")
    bad = features.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="features: expected finite"):
        k_center_greedy(bad, available, 2)
    with pytest.raises(DataError, match="centres: expected finite"):
        k_center_greedy(features, available, 2, centres=np.full((1, 5), np.inf, np.float32))


@pytest.mark.parametrize("with_centres", [False, True])
def test_pruned_picks_equal_plain_and_reference(pool, with_centres):
    features, available, centres = pool
    c = centres if with_centres else None
    weights = np.random.default_rng(2).random(60).astype(np.float32)
    for w in (None, weights):
        plain, r_plain = k_center_greedy(
            features, available, 12, centres=c, weights=w, return_radii=True
        )
        pruned, r_pruned = k_center_greedy(
            features, available, 12, centres=c, weights=w, return_radii=True, prune=True
        )
        np.testing.assert_array_equal(np.asarray(pruned), np.asarray(plain))
        np.testing.assert_array_equal(
            np.asarray(pruned), brute_force_k_center(features, available, 12, c, w)
        )
        np.testing.assert_allclose(np.asarray(r_pruned), np.asarray(r_plain), rtol=1e-6)
    if with_centres:  # the skipping really happens: some picks read less than half the pool
        d, a = nearest_centres(jnp.asarray(features), jnp.asarray(centres))
        live = np.asarray(
            pruned_greedy(
                jnp.asarray(features),
                jnp.asarray(available),
                d,
                a,
                jnp.asarray(centres),
                jnp.ones(60),
                12,
            )[2]
        )
        assert live.min() < 30 and live.max() <= 60, live


def test_bf16_pool_picks_are_near_identical(pool):
    features, available, centres = pool
    f32 = np.asarray(k_center_greedy(features, available, 12, centres=centres))
    bf16 = np.asarray(
        k_center_greedy(features, available, 12, centres=centres, precision="bfloat16")
    )
    assert available[bf16].all() and len(set(bf16.tolist())) == 12
    assert len(set(f32.tolist()) & set(bf16.tolist())) >= 10

    def radius(picks):  # covering radius of the centres + picks over the pool, float64
        chosen = np.concatenate([centres, features[picks]]).astype(np.float64)
        return np.sqrt(((features[:, None, :] - chosen[None]) ** 2).sum(-1).min(1).max())

    assert radius(bf16) <= 1.05 * radius(f32)


def test_row_blocks_rule():
    assert row_blocks(400, cores=2) == 1  # too small to split
    assert row_blocks(100_000, cores=2) == 16  # 16 blocks divide 100,000: a free reshape
    assert row_blocks(100_000, cores=8) == 32
    assert row_blocks(99_991, cores=2) == 16  # prime: no divisor near 16, so padded
    assert row_blocks(4_096, cores=64) == 16  # never below 256 rows a block


@pytest.mark.parametrize("float_index_limit", [2**24, 4])  # float32 indices; int32 past the limit
def test_first_argmax_is_argmax_with_ties(monkeypatch, float_index_limit):
    import ml_adv.active_learning.kcenter as kcenter

    monkeypatch.setattr(kcenter, "_EXACT_FLOAT_INDEX", float_index_limit)
    scores = jnp.asarray([0.5, 2.0, -jnp.inf, 2.0, 1.0, jnp.inf, jnp.inf])
    assert int(first_argmax(scores)) == int(jnp.argmax(scores)) == 5
    assert int(first_argmax(scores[:5])) == int(jnp.argmax(scores[:5])) == 1
    big = jnp.asarray(
        np.random.default_rng(5).integers(0, 50, 9_000).astype(np.float32)
    )  # many ties
    assert int(first_argmax(big)) == int(jnp.argmax(big))


@pytest.mark.parametrize("blocks", [3, 7])  # 3 divides 600; 7 pads the pool with zero rows
def test_blocked_pass_is_bitwise_the_plain_pass(blocks):
    """Splitting the pool into row blocks (so every core streams a share) changes nothing."""
    rng = np.random.default_rng(3)
    features = jnp.asarray(rng.normal(size=(600, 9)).astype(np.float32))
    available = jnp.asarray(rng.random(600) > 0.1)
    min_dist, assign = nearest_centres(features, features[:4])
    weights = jnp.asarray(rng.random(600).astype(np.float32))
    plain = _greedy(features, available, min_dist, weights, 40, blocks=1)
    split = _greedy(features, available, min_dist, weights, 40, blocks=blocks)
    np.testing.assert_array_equal(np.asarray(split[0]), np.asarray(plain[0]))
    np.testing.assert_array_equal(np.asarray(split[1]), np.asarray(plain[1]))
    pruned = pruned_greedy(
        features, available, min_dist, assign, features[:4], weights, 40, blocks=blocks
    )
    np.testing.assert_array_equal(np.asarray(pruned[0]), np.asarray(plain[0]))


def test_bf16_pool_is_widened_inside_the_pass():
    """A bfloat16 pool is read as bfloat16 every pick (not hoisted into a float32 copy), same
    values."""
    rng = np.random.default_rng(4)
    narrow = jnp.asarray(rng.normal(size=(600, 9)), jnp.bfloat16)
    available = jnp.asarray(rng.random(600) > 0.1)
    min_dist, _ = nearest_centres(narrow, narrow[:4])
    weights = jnp.asarray(rng.random(600).astype(np.float32))
    in_loop = _greedy(narrow, available, min_dist, weights, 40, blocks=3)
    widened = _greedy(narrow.astype(jnp.float32), available, min_dist, weights, 40, blocks=3)
    np.testing.assert_array_equal(np.asarray(in_loop[0]), np.asarray(widened[0]))
    np.testing.assert_array_equal(np.asarray(in_loop[1]), np.asarray(widened[1]))
    _, assign = nearest_centres(narrow, narrow[:4])
    pruned = pruned_greedy(narrow, available, min_dist, assign, narrow[:4], weights, 40, blocks=3)
    np.testing.assert_array_equal(np.asarray(pruned[0]), np.asarray(widened[0]))
    for compiled in (
        _greedy.lower(narrow, available, min_dist, weights, 40, blocks=3),
        pruned_greedy.lower(narrow, available, min_dist, assign, narrow[:4], weights, 40, blocks=3),
    ):
        entry = compiled.compile().as_text().split("ENTRY", 1)[1]
        assert (
            "f32[600,9]" not in entry and "f32[3,200,9]" not in entry
        )  # no float32 copy outside the loop
