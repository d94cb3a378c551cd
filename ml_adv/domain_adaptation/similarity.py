"""How far apart two domains are, measured on a model's features.

All measures take two feature matrices ``[N_s, F]`` and ``[N_t, F]`` (a model's
penultimate features: ``features_of``):

* ``mmd2``: the squared maximum mean discrepancy (biased V-statistic) with a Gaussian
  kernel ``k(a, b) = exp(-||a - b||^2 / h)``, ``h`` the median of the pooled pairwise
  squared distances (median heuristic, scale-free). With ``0 <= k <= 1`` it lies in
  [0, 2], so ``mmd_similarity = 1 - mmd2 / 2`` is a similarity in [0, 1]: 1 for
  identical samples. This is ``get_domain_similarity``'s number.
* ``coral_distance``: ``||C_s - C_t||_F^2 / (4 F^2)`` between the feature covariances
  (Sun & Saenko, 2016, Deep CORAL).
* ``proxy_a_distance``: ``2 (1 - 2 err)`` where ``err`` is the held-out error of a linear
  domain classifier (Ben-David et al., 2007; scikit-learn's logistic regression on
  standardised features, half the rows held out). 0 when the domains cannot be told
  apart (err 0.5), 2 when they separate perfectly. Not jitted: a fitted classifier.

``mmd2`` and ``coral_distance`` are jitted pure functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ml_adv.errors import DataError, describe


def _check_pair(source, target) -> tuple[np.ndarray, np.ndarray]:
    s, t = np.asarray(source, np.float32), np.asarray(target, np.float32)
    for name, a in (("source", s), ("target", t)):
        if a.ndim != 2 or len(a) < 2:
            raise DataError(
                f"{name}: expected a [N, F] feature matrix with N >= 2, got {describe(a)}"
            )
        if not np.all(np.isfinite(a)):
            raise DataError(f"{name}: expected finite features, got NaN or inf")
    if s.shape[1] != t.shape[1]:
        raise DataError(
            f"target: expected {s.shape[1]} features per row like the source, got {t.shape[1]}"
        )
    return s, t


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    d = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(d, 0.0)


@jax.jit
def _mmd2(source: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    pooled = jnp.concatenate([source, target])
    d = _sq_dists(pooled, pooled)
    n = pooled.shape[0]
    off_diagonal = ~jnp.eye(n, dtype=bool)
    h = jnp.nanmedian(jnp.where(off_diagonal, d, jnp.nan))
    h = jnp.where(h > 0, h, 1.0)  # all points equal: any bandwidth gives mmd 0
    k = jnp.exp(-d / h)
    ns = source.shape[0]
    value = jnp.mean(k[:ns, :ns]) + jnp.mean(k[ns:, ns:]) - 2.0 * jnp.mean(k[:ns, ns:])
    return jnp.maximum(value, 0.0), h


def mmd2(source: Float[Array, "Ns F"], target: Float[Array, "Nt F"]) -> float:
    """Squared MMD (Gaussian kernel, median-heuristic bandwidth), in [0, 2]."""
    return float(_mmd2(*map(jnp.asarray, _check_pair(source, target)))[0])


def mmd_similarity(source: Float[Array, "Ns F"], target: Float[Array, "Nt F"]) -> float:
    """``1 - mmd2 / 2`` in [0, 1]: 1 when the two samples are identical."""
    return 1.0 - mmd2(source, target) / 2.0


@jax.jit
def _coral(source: jax.Array, target: jax.Array) -> jax.Array:
    def cov(x):
        c = x - jnp.mean(x, 0, keepdims=True)
        return c.T @ c / (x.shape[0] - 1)

    f = source.shape[1]
    return jnp.sum((cov(source) - cov(target)) ** 2) / (4.0 * f * f)


def coral_distance(source: Float[Array, "Ns F"], target: Float[Array, "Nt F"]) -> float:
    """``||C_s - C_t||_F^2 / (4 F^2)`` between the (unbiased) feature covariances."""
    return float(_coral(*map(jnp.asarray, _check_pair(source, target))))


def proxy_a_distance(
    source: Float[Array, "Ns F"], target: Float[Array, "Nt F"], *, seed: int = 0
) -> float:
    """``2 (1 - 2 err)`` with ``err`` a held-out linear domain classifier's error (clipped
    to 0.5).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    s, t = _check_pair(source, target)
    x = np.concatenate([s, t])
    d = np.concatenate([np.zeros(len(s), np.int32), np.ones(len(t), np.int32)])
    x_fit, x_held, d_fit, d_held = train_test_split(
        x, d, test_size=0.5, random_state=seed, stratify=d
    )
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(x_fit, d_fit)
    err = min(float(np.mean(clf.predict(x_held) != d_held)), 0.5)
    return 2.0 * (1.0 - 2.0 * err)


def features_of(model, data, *, max_examples: int | None = 1000) -> np.ndarray:
    """A ``TrainedModel``'s penultimate features ``[N, F]`` of ``data`` (first ``max_examples``)."""
    from ml_adv.training.steps import predict_logits

    x = data.x if hasattr(data, "x") else np.asarray(data)
    if max_examples is not None:
        x = x[:max_examples]
    return np.asarray(
        predict_logits(model.apply_fn, model.variables, model._inputs(x), method="features")
    )


def domain_similarity_report(
    model, source, target, *, max_examples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Every measure on ``model``'s features of ``source`` and ``target`` (ArrayDatasets)."""
    fs = features_of(model, source, max_examples=max_examples)
    ft = features_of(model, target, max_examples=max_examples)
    m = mmd2(fs, ft)
    return {
        "mmd2": m,
        "mmd_similarity": 1.0 - m / 2.0,
        "coral_distance": coral_distance(fs, ft),
        "proxy_a_distance": proxy_a_distance(fs, ft, seed=seed),
    }
