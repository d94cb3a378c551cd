"""Seeded, stratified fold assignment (scikit-learn ``StratifiedKFold``) and fold masks."""

from __future__ import annotations

import numpy as np

from ml_adv.errors import ConfigError, DataError, describe


def check_folds(folds) -> int:
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"folds: expected an integer >= 2, got {describe(folds)}")
    return int(folds)


def stratified_fold_ids(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """``[N]`` int32 fold id of each example: stratified by label, shuffled with ``seed``."""
    from sklearn.model_selection import (
        StratifiedKFold,  # imported here: scikit-learn takes ~2 s to import
    )

    folds = check_folds(folds)
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min()) if labels.size else 0
    if smallest < folds:
        raise DataError(
            f"folds: expected every class to have at least {folds} examples for {folds}-fold "
            f"stratified cross-validation, got a class with {smallest}"
        )
    ids = np.empty(labels.shape[0], np.int32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros((labels.shape[0], 1)), labels)):
        ids[held_out] = fold
    return ids


def training_masks(fold_ids: np.ndarray, folds: int) -> np.ndarray:
    """``[folds, N]`` bool: row i is True where example n is *not* in fold i (member i
    trains there).
    """
    return np.asarray(fold_ids)[None, :] != np.arange(folds)[:, None]
