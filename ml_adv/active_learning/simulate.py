"""Simulated active learning: an oracle (held-back true labels) answers every query.

``simulate_loop`` runs one strategy with one seed through ``AdvancedActiveLearning``
exactly as a user would (select, label, update); ``summarise_curves`` turns many such
runs into mean +- std curves and the labels each strategy needs to reach a target
accuracy. With a ``run_dir`` per loop, a killed simulation resumes from the journals.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ml_adv.active_learning.facade import AdvancedActiveLearning
from ml_adv.active_learning.loop import ActiveLearningConfig
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, check_positive


def initial_split(train: ArrayDataset, n_initial: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(seed_indices, pool_indices)``: a seeded random initial labelled set; the rest is
    the pool.
    """
    check_positive("initial", n_initial)
    if n_initial >= len(train):
        raise ConfigError(
            f"initial: expected fewer than the {len(train)} training examples, got {n_initial}"
        )
    order = np.random.default_rng(seed).permutation(len(train))
    return np.sort(order[:n_initial]), np.sort(order[n_initial:])


def simulate_loop(
    strategy: str,
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    rounds: int,
    query_size: int,
    initial: int,
    seed: int,
    architecture: str = "mlp",
    size: str = "small",
    config: ActiveLearningConfig | None = None,
    run_dir=None,
) -> list[dict[str, Any]]:
    """One active-learning run with an oracle; returns its learning curve (test accuracy per
    round).
    """
    check_positive("rounds", rounds)
    check_positive("query_size", query_size)
    seed_idx, pool_idx = initial_split(train, initial, seed)
    if rounds * query_size > len(pool_idx):
        raise ConfigError(
            f"rounds: {rounds} rounds of {query_size} need {rounds * query_size} pool samples, "
            f"the pool has {len(pool_idx)}"
        )
    config = config or ActiveLearningConfig()
    config = dataclasses.replace(config, train=config.train.replace(seed=seed))
    al = AdvancedActiveLearning(
        strategy,
        architecture=architecture,
        size=size,
        num_classes=train.num_classes,
        validation_data=test,
        run_dir=run_dir,
        config=config,
        seed=seed,
    )
    al.add_labeled_data(train.x[seed_idx], train.y[seed_idx])
    al.add_unlabeled_data(train.x[pool_idx])
    oracle = train.y[pool_idx]
    while al.store.rounds < rounds:  # a restored loop continues from its journal
        _, idx = al.select_samples(query_size)
        al.update_model(oracle[idx])
    if not al.store.model_is_current:
        al.select_samples(query_size)  # trains a model owed from before a crash
    return [dict(entry, strategy_name=strategy, seed=seed) for entry in al.get_learning_curve()]


def labels_to_reach(curve: list[dict[str, Any]], target: float) -> int | None:
    """The fewest labels at which ``curve`` reached ``target`` accuracy (None if never)."""
    return next(
        (
            p["labels"]
            for p in curve
            if p["val_accuracy"] is not None and p["val_accuracy"] >= target
        ),
        None,
    )


def summarise_curves(
    curves: dict[str, list[list[dict[str, Any]]]], targets=(0.9, 0.95)
) -> dict[str, dict[str, Any]]:
    """Per strategy: mean/std accuracy at each label count over seeds, and labels to reach
    each target.
    """
    out = {}
    for name, runs in curves.items():
        labels = sorted({p["labels"] for run in runs for p in run})
        table = np.full((len(runs), len(labels)), np.nan)
        for i, run in enumerate(runs):
            for p in run:
                table[i, labels.index(p["labels"])] = p["val_accuracy"]
        reach = {}
        for t in targets:
            per_seed = [labels_to_reach(run, t) for run in runs]
            hit = [v for v in per_seed if v is not None]
            reach[f"{t:g}"] = {
                "per_seed": per_seed,
                "mean": float(np.mean(hit)) if len(hit) == len(runs) else None,
                "reached": f"{len(hit)}/{len(runs)}",
            }
        out[name] = {
            "labels": labels,
            "mean": np.nanmean(table, 0).tolist(),
            "std": np.nanstd(table, 0).tolist(),
            "seeds": len(runs),
            "final_mean": float(np.nanmean(table[:, -1])),
            "labels_to_reach": reach,
        }
    return out
