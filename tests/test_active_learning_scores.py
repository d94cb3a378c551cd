"""Acquisition scores against hand-computed values, and streamed scoring against direct scoring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.active_learning import scores as S
from ml_adv.errors import ConfigError, DataError


def logits_of(probs):
    return jnp.log(jnp.asarray(probs, jnp.float32))


def test_entropy_hand_values():
    probs = [[0.5, 0.5, 0.0 + 1e-30], [1.0, 1e-30, 1e-30], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]]
    expected = [
        np.log(2),
        0.0,
        np.log(3),
        -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)),
    ]
    np.testing.assert_allclose(S.entropy(logits_of(probs)), expected, atol=1e-5)


def test_entropy_is_finite_for_extreme_logits():
    out = S.entropy(jnp.array([[1000.0, -1000.0], [0.0, 0.0]]))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [0.0, np.log(2)], atol=1e-6)


def test_margin_and_least_confidence_hand_values():
    probs = [[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.5, 0.5, 1e-30]]
    np.testing.assert_allclose(
        S.margin(logits_of(probs)), [-(0.7 - 0.2), -(0.4 - 0.35), 0.0], atol=1e-6
    )
    np.testing.assert_allclose(S.least_confidence(logits_of(probs)), [0.3, 0.6, 0.5], atol=1e-6)
    # Both rank the near-tie as most uncertain.
    assert int(jnp.argmax(S.margin(logits_of(probs)))) == 2


def test_bald_hand_values():
    # Two samples, confident and disagreeing: H[mean] = log 2, mean H = 0 -> BALD = log 2.
    disagree = [[[1.0, 1e-30]], [[1e-30, 1.0]]]
    # Two samples that agree on 50/50: H[mean] = mean H = log 2 -> BALD = 0 (aleatoric only).
    agree = [[[0.5, 0.5]], [[0.5, 0.5]]]
    # A general case computed by hand: p1 = (0.9, 0.1), p2 = (0.3, 0.7); mean = (0.6, 0.4).
    h = lambda p: -sum(v * np.log(v) for v in p)  # noqa: E731
    general = h([0.6, 0.4]) - 0.5 * (h([0.9, 0.1]) + h([0.3, 0.7]))
    samples = jnp.concatenate(
        [logits_of(disagree), logits_of(agree), logits_of([[[0.9, 0.1]], [[0.3, 0.7]]])], axis=1
    )
    np.testing.assert_allclose(S.bald(samples), [np.log(2), 0.0, general], atol=1e-5)


def test_bald_equals_entropy_of_mean_minus_mean_entropy_random():
    key = jax.random.PRNGKey(0)
    logits = 3.0 * jax.random.normal(key, (7, 50, 5))
    p = jax.nn.softmax(logits, -1)
    mean = p.mean(0)
    reference = -(mean * jnp.log(mean)).sum(-1) - (-(p * jnp.log(p)).sum(-1)).mean(0)
    np.testing.assert_allclose(S.bald(logits), reference, atol=1e-5)
    assert np.all(np.asarray(S.bald(logits)) >= 0)


def test_random_scores_deterministic_per_key():
    x = jnp.zeros((100, 3))
    a, b = S.random_scores(x, jax.random.PRNGKey(1)), S.random_scores(x, jax.random.PRNGKey(1))
    c = S.random_scores(x, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == (100,)


def test_score_pool_streams_like_direct_scoring():
    x = np.random.default_rng(0).normal(size=(103, 4)).astype(np.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)
    calls = []

    def outputs(part):
        calls.append(part.shape)
        return jnp.asarray(part) @ w

    streamed = S.score_pool(outputs, S.entropy, x, chunk=32)
    np.testing.assert_allclose(streamed, S.entropy(jnp.asarray(x) @ w), atol=1e-6)
    assert set(calls) == {(32, 4)}  # the last chunk is padded: one shape, one compilation
    assert streamed.dtype == np.float32 and streamed.shape == (103,)


def test_mc_dropout_samples_differ_and_bald_positive():
    from ml_adv import make_spec

    spec = make_spec(
        "mlp", input_shape=(8,), input_kind="features", num_classes=3, size="tiny", dropout=0.5
    )
    module = spec.build()
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    variables = module.init(jax.random.PRNGKey(0), x[:1])
    samples = S.mc_dropout_logits(module.apply, variables, x, jax.random.PRNGKey(3), 4)
    assert samples.shape == (4, 20, 3)
    assert not np.allclose(samples[0], samples[1])
    assert float(jnp.max(S.bald(samples))) > 0


def test_errors():
    with pytest.raises(ConfigError, match="score"):
        S.resolve_score("nope")
    with pytest.raises(DataError, match="non-empty"):
        S.stream_map(lambda p: p, np.zeros((0, 3)))
    with pytest.raises(ConfigError, match="chunk"):
        S.stream_map(lambda p: p, np.zeros((3, 3)), chunk=0)
    with pytest.raises(DataError, match=r"\[S, N, C\]"):
        S.check_logits("sample_logits", np.zeros((3, 2)), samples=True)
