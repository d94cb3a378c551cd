"""Stacking meta-learner and its vmapped K-fold evaluation (ml_adv.ensembles.stacking, .folds)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.ensembles import stacking
from ml_adv.ensembles.combine import average
from ml_adv.ensembles.folds import stratified_fold_ids, training_masks
from ml_adv.ensembles.metrics import probability_metrics
from ml_adv.errors import ConfigError, DataError


def _permuted_members(n=120, seed=0):
    """Member 0 is right 60% of the time; member 1 always names (label + 1) % 4, confidently."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    right = rng.random(n) < 0.6
    p0 = np.where(right[:, None], np.eye(4)[labels], np.eye(4)[rng.integers(0, 4, n)]) * 0.6 + 0.1
    p1 = np.eye(4)[(labels + 1) % 4] * 0.8 + 0.05
    return np.stack([p0, p1]).astype(np.float32), labels


def test_meta_learner_learns_what_averaging_cannot():
    probs, labels = _permuted_members()
    folds = stratified_fold_ids(labels, 4, seed=0)
    meta, oof = stacking.fit_stacking(
        jnp.asarray(probs), jnp.asarray(labels), jnp.asarray(folds), 4
    )
    assert float(probability_metrics(oof, labels)["accuracy"]) > 0.95  # held-out rows only
    assert float(probability_metrics(average(probs), labels)["accuracy"]) < 0.7
    assert meta["kernel"].shape == (8, 4) and meta["bias"].shape == (4,)
    np.testing.assert_allclose(np.asarray(stacking.meta_proba(meta, probs)).sum(-1), 1.0, atol=1e-5)


def test_out_of_fold_rows_come_from_the_model_that_did_not_see_them():
    probs, labels = (
        _permuted_members()
    )  # the shapes and fold count above: one compiled fit_stacking
    folds = stratified_fold_ids(labels, 4, seed=0)
    meta, oof = stacking.fit_stacking(
        jnp.asarray(probs), jnp.asarray(labels), jnp.asarray(folds), 4
    )
    oof = np.asarray(oof)
    # Looped reference for fold 1: fit on the other folds only, predict fold 1; and on all rows.
    features = stacking.stack_features(jnp.asarray(probs))
    fit = jax.jit(stacking.fit_masked, static_argnums=(3, 4))
    ref = fit(
        features,
        jnp.asarray(labels),
        jnp.asarray((folds != 1).astype(np.float32)),
        4,
        stacking.META_L2,
    )
    np.testing.assert_allclose(
        oof[folds == 1], np.asarray(stacking.meta_proba(ref, probs))[folds == 1], atol=1e-4
    )
    full = fit(
        features, jnp.asarray(labels), jnp.ones(len(labels), jnp.float32), 4, stacking.META_L2
    )
    np.testing.assert_allclose(meta["kernel"], full["kernel"], atol=1e-4)


def test_stratified_folds():
    labels = np.repeat(np.arange(3), 10)
    ids = stratified_fold_ids(labels, 5, seed=3)
    np.testing.assert_array_equal(ids, stratified_fold_ids(labels, 5, seed=3))
    for f in range(5):  # each fold holds 2 of every class
        np.testing.assert_array_equal(np.bincount(labels[ids == f], minlength=3), [2, 2, 2])
    masks = training_masks(ids, 5)
    assert masks.shape == (5, 30) and not np.any(
        masks[np.arange(5)[:, None], np.arange(30)[None]] & (ids[None] == np.arange(5)[:, None])
    )
    np.testing.assert_array_equal(masks.sum(0), 4)  # each example is held out by exactly one member
    with pytest.raises(DataError, match="at least 11 examples"):
        stratified_fold_ids(labels, 11)
    with pytest.raises(ConfigError, match="folds: expected an integer >= 2"):
        stratified_fold_ids(labels, 1)
