"""Deep ensembles and K-fold cross-validation through the stacked training core.

``train_members`` trains K members of one spec as ONE program
(``ml_adv.training.stacked.fit_stacked``: a leading member axis on the whole train
state, ``vmap`` inside the scanned epoch) and returns them as ``TrainedModel`` s.
Cross-validation is the same call with ``example_masks``: member i trains on every
example outside fold i (stratified, seeded folds, ``folds.py``), so the k fold models
train together with no Python loop over folds. ``cross_validation_scores`` then scores
member i on fold i, in one jitted, vmapped function.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.ensembles import persistence
from ml_adv.ensembles.combine import safe_log
from ml_adv.ensembles.folds import stratified_fold_ids, training_masks
from ml_adv.ensembles.metrics import probability_metrics
from ml_adv.errors import ConfigError, DataError, NotFittedError, check_positive, describe
from ml_adv.rundir import NO_RUN, Run

DEFAULT_MEMBERS = 5


def stacked_core():
    """``fit_stacked`` from the training core (ConfigError while it is not available)."""
    try:
        from ml_adv.training.stacked import fit_stacked
    except ImportError as exc:  # the stacked core (issue 9) is not installed in this tree
        raise ConfigError(
            f"deep ensembles need ml_adv.training.stacked.fit_stacked, which is unavailable: {exc}"
        ) from exc
    return fit_stacked


def train_members(
    spec,
    data,
    config,
    *,
    members: int,
    key=None,
    val=None,
    member_hparams=None,
    bootstrap: bool = False,
    example_masks=None,
    run: Run = NO_RUN,
    model_ids=None,
) -> tuple[list, Any]:
    """Train ``members`` models of ``spec`` as one program; ``(trained models, StackedFitResult)``.

    Member i gets ``model_ids[i]`` (default: the core's fresh ids). Members the core
    reports as failed (diverged) are left out of the returned list.
    """
    fit_stacked = stacked_core()
    result = fit_stacked(
        spec,
        data,
        config,
        members=members,
        key=key,
        val=val,
        member_hparams=member_hparams,
        bootstrap=bootstrap,
        example_masks=example_masks,
        run=run,
    )
    failed = np.asarray(result.failed, bool)
    trained = []
    for i in range(members):
        if not failed[i]:
            model = result.member(i)
            trained.append(
                model if model_ids is None else dataclasses.replace(model, model_id=model_ids[i])
            )
    return trained, result


def train_ensemble(
    spec, data, config, *, members: int | None, folds: int | None, seed: int, **fit_kwargs
) -> tuple[list, dict[str, Any], np.ndarray | None]:
    """Validate, then train a deep ensemble (``folds=None``) or the k fold models of a CV run.

    ``spec`` is a ``ModelSpec`` or an architecture name (its ``"small"`` size for ``data``).

    Returns ``(trained models, training report, fold ids [N] or None)``. With ``folds``,
    member i trains on the examples outside fold i (stratified folds seeded with ``seed``).
    With a run folder (``run``), the members' ids and weights are recorded there before training
    (``persistence.run_record``), so a killed run resumes as the same members; the report
    holds the trained members' ``weights``.
    """
    from ml_adv.data.dataset import ArrayDataset
    from ml_adv.training.config import TrainConfig

    if not isinstance(data, ArrayDataset):
        raise DataError(f"data: expected an ArrayDataset, got {describe(data)}")
    if isinstance(spec, str):  # an architecture name: its "small" variant for this data
        from ml_adv.models.registry import make_spec

        spec = make_spec(
            spec,
            input_shape=data.example_shape,
            input_kind=data.input_kind,
            num_classes=data.num_classes,
            size="small",
        )
    config = TrainConfig() if config is None else config
    if folds is not None:
        if members is not None and members != folds:
            raise ConfigError(
                f"members: cross-validation trains one member per fold ({folds}), got {members}"
            )
        members = folds
    members = DEFAULT_MEMBERS if members is None else members
    check_positive("members", members)
    fold_ids = stratified_fold_ids(data.y, folds, seed) if folds is not None else None
    masks = training_masks(fold_ids, folds) if folds is not None else None
    stacked_core()  # fail before anything else if the core is missing
    folder = fit_kwargs["run"].directory if "run" in fit_kwargs else None
    record = (
        persistence.run_record(folder, members=members, folds=folds) if folder is not None else None
    )
    trained, result = train_members(
        spec,
        data,
        config,
        members=members,
        example_masks=masks,
        model_ids=record["model_ids"] if record else None,
        **fit_kwargs,
    )
    failed = np.asarray(result.failed, bool)
    if folds is not None and failed.any():
        raise NotFittedError(
            f"cross-validation: fold models {np.flatnonzero(failed).tolist()} diverged; no CV score"
        )
    weights = record["weights"] if record else [1.0] * members
    report = {
        "members": members,
        "trained": [m.model_id for m in trained],
        "failed": failed.tolist(),
        "weights": [w for w, f in zip(weights, failed) if not f],
        "resumed_from": result.resumed_from,
    }
    return trained, report, fold_ids


@jax.jit
def _fold_scores(probs: jax.Array, labels: jax.Array, fold_ids: jax.Array) -> dict[str, jax.Array]:
    k = probs.shape[0]
    held_out = (fold_ids[None, :] == jnp.arange(k)[:, None]).astype(jnp.float32)  # [K, N]
    count = jnp.sum(held_out, axis=1)
    correct = (jnp.argmax(probs, -1) == labels[None]).astype(jnp.float32)
    true_logp = jnp.take_along_axis(safe_log(probs), labels[None, :, None], axis=-1)[..., 0]
    onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    sq = jnp.sum((probs - onehot[None]) ** 2, axis=-1)
    per_fold = {
        "accuracy": jnp.sum(held_out * correct, 1) / count,
        "nll": -jnp.sum(held_out * true_logp, 1) / count,
        "brier": jnp.sum(held_out * sq, 1) / count,
    }
    # Out-of-fold prediction of every example: the fold model that did not train on it.
    oof = jnp.take_along_axis(probs, fold_ids[None, :, None], axis=0)[0]
    return {"per_fold": per_fold, "out_of_fold": probability_metrics(oof, labels)}


def cross_validation_scores(probs, labels, fold_ids) -> dict[str, Any]:
    """CV report from fold models' probabilities ``[k, N, C]`` on the training data.

    ``per_fold[m][i]`` is member i's metric ``m`` on fold i (held out from its training);
    ``mean``/``std`` summarise them (the CV score, mean +- std over folds);
    ``out_of_fold`` scores the pooled held-out predictions.
    """
    scores = jax.device_get(
        _fold_scores(jnp.asarray(probs), jnp.asarray(labels), jnp.asarray(fold_ids))
    )
    per_fold = {m: np.asarray(v).tolist() for m, v in scores["per_fold"].items()}
    return {
        "folds": int(np.asarray(probs).shape[0]),
        "per_fold": per_fold,
        "mean": {m: float(np.mean(v)) for m, v in per_fold.items()},
        "std": {m: float(np.std(v)) for m, v in per_fold.items()},
        "out_of_fold": {m: float(v) for m, v in scores["out_of_fold"].items()},
    }
