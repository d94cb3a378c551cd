"""Combination rules (ml_adv.ensembles.combine): hand-checked values and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_adv.ensembles.combine import (
    COMBINATION_RULES,
    average,
    normalized,
    resolve_rule,
    vote,
    vote_shares,
    weighted_average,
)
from ml_adv.errors import ConfigError

PROBS = np.array(
    [
        [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]],
        [[0.2, 0.5, 0.3], [0.3, 0.4, 0.3]],
        [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]],
    ],
    np.float32,
)
W = np.array([0.5, 0.3, 0.2], np.float32)


def test_rules_by_hand():
    np.testing.assert_allclose(average(PROBS), [[0.5, 1 / 3, 1 / 6], [0.2, 0.3, 0.5]], atol=1e-6)
    np.testing.assert_allclose(
        weighted_average(PROBS, W), [[0.53, 0.31, 0.16], [0.18, 0.31, 0.51]], atol=1e-6
    )
    # Unnormalised weights give the same result.
    np.testing.assert_allclose(
        weighted_average(PROBS, 10 * W), weighted_average(PROBS, W), atol=1e-6
    )
    # Votes: example 0 -> members vote 0, 1, 0; example 1 -> 2, 1, 2.
    np.testing.assert_allclose(vote_shares(PROBS, W), [[0.7, 0.3, 0.0], [0.0, 0.3, 0.7]], atol=1e-6)
    np.testing.assert_array_equal(vote(PROBS, W), [0, 2])
    # Weights decide a vote the majority would lose: member 1 alone outweighs members 0 and 2.
    np.testing.assert_array_equal(vote(PROBS, np.array([0.2, 0.7, 0.1], np.float32)), [1, 1])


def test_vote_tie_rule():
    weights = np.ones(2, np.float32)
    # Tied votes (one each): the higher weighted-mean probability wins, not the lower class id.
    probs = np.array([[[0.6, 0.4]], [[0.1, 0.9]]], np.float32)
    np.testing.assert_array_equal(vote(probs, weights), [1])
    # Votes and mean probabilities both tied: the lowest class id.
    probs = np.array([[[0.6, 0.4]], [[0.4, 0.6]]], np.float32)
    np.testing.assert_array_equal(vote(probs, weights), [0])
    # 0.1 + 0.2 vs 0.3 differ in the last float bit; still a tie, decided by probability.
    probs = np.array([[[0.9, 0.1]], [[0.9, 0.1]], [[0.4, 0.6]]], np.float32)  # mean p(0) = 0.65
    np.testing.assert_array_equal(vote(probs, np.array([0.1, 0.2, 0.3], np.float32)), [0])
    probs = np.array(
        [[[0.55, 0.45]], [[0.55, 0.45]], [[0.0, 1.0]]], np.float32
    )  # mean p(1) = 0.725
    np.testing.assert_array_equal(vote(probs, np.array([0.1, 0.2, 0.3], np.float32)), [1])


def test_registry_and_custom_rule():
    assert COMBINATION_RULES.names() == ["averaging", "stacking", "voting", "weighted"]
    with pytest.raises(ConfigError, match="combination_method.*'median'.*averaging"):
        resolve_rule("median")
    rule = resolve_rule(lambda probs, weights: jnp.max(probs, axis=0))
    np.testing.assert_allclose(rule.proba(PROBS, W), PROBS.max(0))
    with pytest.raises(ConfigError, match="combination_method"):
        resolve_rule(3)


C, N = 3, 5


@st.composite
def ensembles(draw):
    k = draw(
        st.sampled_from([2, 3])
    )  # one member: test_one_member_is_that_member; two shapes, two compiles
    logits = draw(
        st.lists(
            st.floats(-5, 5, allow_nan=False, width=32), min_size=k * N * C, max_size=k * N * C
        )
    )
    weights = draw(st.lists(st.floats(0.05, 10), min_size=k, max_size=k))
    probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float32).reshape(k, N, C), axis=-1))
    return probs, np.asarray(weights, np.float32), draw(st.permutations(list(range(k))))


@settings(max_examples=30, deadline=None)
@given(ensembles())
def test_invariants(case):
    probs, weights, perm = case
    # Weights sum to one.
    assert np.isclose(float(jnp.sum(normalized(weights))), 1.0, atol=1e-6)
    # Member order does not change the result.
    p2, w2 = probs[np.asarray(perm)], weights[np.asarray(perm)]
    for rule in (average, weighted_average, vote_shares):
        np.testing.assert_allclose(rule(p2, w2), rule(probs, weights), atol=1e-5)
    np.testing.assert_array_equal(vote(p2, w2), vote(probs, weights))
    # Averaged probabilities lie within the members' range, and rows sum to one.
    for rule in (average, weighted_average):
        out = np.asarray(rule(probs, weights))
        assert np.all(out >= probs.min(0) - 1e-6) and np.all(out <= probs.max(0) + 1e-6)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=N * C, max_size=N * C),
    st.floats(0.1, 5),
)
def test_one_member_is_that_member(logits, weight):
    probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float32).reshape(1, N, C), axis=-1))
    w = np.array([weight], np.float32)
    np.testing.assert_allclose(average(probs, w), probs[0], atol=1e-6)
    np.testing.assert_allclose(weighted_average(probs, w), probs[0], atol=1e-6)
    np.testing.assert_array_equal(vote(probs, w), np.argmax(probs[0], -1))
