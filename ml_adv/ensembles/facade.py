"""``AdvancedModelEnsemble``: the SEED.md facade over the ensemble core.

It holds members (``TrainedModel`` s of any architecture), their weights and the
fitted extras (stacking meta-learner, temperature); every number comes from the pure
functions of ``ml_adv.ensembles``. Inputs for heterogeneous members are passed as a
dict of views (``views.py``): ``predict({"image": x_img, "sequence": x_seq})``.

Bad input raises an ``ml_adv.errors`` exception before anything changes, so a failed
call leaves the ensemble as it was. Anything fitted on the members (meta-learner,
temperature) is dropped when the members or weights change, since it no longer applies.

Automatic steps of ``update_model_weights(val_data)`` (learned weights), in order:
``optimize_diversity`` if ``set_diversity_optimization(True)``; the weights;
``prune_models`` if ``set_automatic_pruning(True)``; the meta-learner for stacking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ml_adv.ensembles import deep, persistence, pruning
from ml_adv.ensembles.calibration import fit_temperature
from ml_adv.ensembles.combine import resolve_rule
from ml_adv.ensembles.folds import check_folds, stratified_fold_ids
from ml_adv.ensembles.inference import (
    DEFAULT_CHUNK,
    combined_output,
    ensemble_probs,
    evaluate_ensemble,
    group_members,
)
from ml_adv.ensembles.metrics import probability_metrics, to_host
from ml_adv.ensembles.stacking import fit_stacking
from ml_adv.ensembles.views import resolve_views, split_labelled
from ml_adv.ensembles.weights import check_weight, check_weights, fit_simplex_weights
from ml_adv.errors import ConfigError, DataError, NotFittedError, check_positive
from ml_adv.estimator import Estimator
from ml_adv.rundir import Run

STACKING_FOLDS = 5


class AdvancedModelEnsemble(Estimator):
    """Combine trained models: ``"voting"``, ``"weighted"``, ``"averaging"`` or ``"stacking"``.

    Example:
        >>> from ml_adv.data import load_dataset
        >>> from ml_adv.training import TrainConfig
        >>> images, flat = (load_dataset(n).subset(range(256)) for n in ("digits", "digits_flat"))
        >>> cnn_model = AdvancedModelEnsemble.train(
        ...     "cnn", images, TrainConfig(epochs=1), members=1
        ... ).models[0]
        >>> mlp_model = AdvancedModelEnsemble.train(
        ...     "mlp", flat, TrainConfig(epochs=1), members=1
        ... ).models[0]
        >>> ensemble = AdvancedModelEnsemble(combination_method="weighted")
        >>> ensemble.add_model(cnn_model, weight=0.5) and ensemble.add_model(mlp_model, weight=0.5)
        True
        >>> ensemble.predict({"image": images.x[:4], "features": flat.x[:4]}).shape
        (4,)
    """

    def __init__(self, combination_method: Any = "weighted", *, seed: int = 0):
        self._rule = resolve_rule(combination_method)
        self.combination_method = (
            combination_method if isinstance(combination_method, str) else self._rule.name
        )
        self.seed = int(seed)
        self._members: list = []
        self._weights: list[float] = []
        self._groups = None
        self._meta = None
        self._temperature: float | None = None
        self._reports: dict[str, Any] = {}
        self._validation = (
            None  # (x, y) of the last held-out data seen, for prune/optimize without data
        )
        self.diversity_settings = {"enabled": False, "weight": 0.1, "max_members": None}
        self.pruning_settings = {"enabled": False, "threshold": 0.0}
        self.cross_validation_settings = {"enabled": False, "folds": 5}

    # ----------------------------------------------------------------- members
    @property
    def models(self) -> list:
        return list(self._members)

    @property
    def model_ids(self) -> list[str]:
        return [m.model_id for m in self._members]

    def __len__(self) -> int:
        return len(self._members)

    def _check_model(self, model, argument: str = "model") -> None:
        for attr in ("spec", "variables", "model_id", "mixed_precision"):
            if not hasattr(model, attr):
                raise ConfigError(
                    f"{argument}: expected a TrainedModel, got {type(model).__name__} (no {attr!r})"
                )
        if self._members and model.spec.num_classes != self._members[0].spec.num_classes:
            raise ConfigError(
                f"{argument}: expected a model with {self._members[0].spec.num_classes} classes "
                f"like the other members, got {model.spec.num_classes}"
            )

    def _changed(self) -> None:
        self._groups, self._meta, self._temperature = None, None, None

    def add_model(self, model, weight: float = 1.0) -> bool:
        """Add a ``TrainedModel`` with a weight >= 0; True on success."""
        self._check_model(model)
        weight = check_weight("weight", weight)
        if model.model_id in self.model_ids:
            raise ConfigError(
                f"model: a member with id {model.model_id!r} is already in the ensemble"
            )
        check_weights("weight", [*self._weights, weight], len(self._members) + 1)
        self._members.append(model)
        self._weights.append(weight)
        self._changed()
        return True

    def _index(self, model_id: str) -> int:
        if model_id not in self.model_ids:
            raise ConfigError(f"model_id: expected one of {self.model_ids}, got {model_id!r}")
        return self.model_ids.index(model_id)

    def remove_model(self, model_id: str) -> bool:
        """Remove the member with ``model_id``; True on success."""
        i = self._index(model_id)
        rest = self._weights[:i] + self._weights[i + 1 :]
        if rest:
            check_weights("weights after removal", rest, len(rest))
        del self._members[i], self._weights[i]
        self._changed()
        return True

    def update_model(self, model_id, model=None, weight: float | None = None) -> bool:
        """Replace member ``model_id`` by ``model`` (same number of classes), keeping or
        setting its weight.

        SEED.md's ``update_model(retrained_model, weight=0.5)`` names no member: the model
        then replaces the member it is a newer version of, the one with its ``model_id`` or
        else its ``lineage`` (every model one trainer trains shares it), when exactly one does.
        """
        if model is None and not isinstance(model_id, str):
            model, model_id = model_id, self._older_version_of(model_id)
        i = self._index(model_id)
        self._check_model(model)
        if model.model_id != model_id and model.model_id in self.model_ids:
            raise ConfigError(
                f"model: a member with id {model.model_id!r} is already in the ensemble"
            )
        weights = list(self._weights)
        weights[i] = self._weights[i] if weight is None else check_weight("weight", weight)
        check_weights("weight", weights, len(weights))
        self._members[i], self._weights = model, weights
        self._changed()
        return True

    def _older_version_of(self, model) -> str:
        """The id of the one member ``model`` updates (same id, else same lineage)."""
        self._check_model(model)
        if model.model_id in self.model_ids:
            return model.model_id
        lineage = model.lineage
        same = [m.model_id for m in self._members if lineage is not None and m.lineage == lineage]
        if len(same) != 1:
            found = "no member" if not same else f"{len(same)} members ({same})"
            raise ConfigError(
                "model: expected a newer version of exactly one member (same model_id or "
                f"lineage, e.g. retrained by the same trainer), got {found} with lineage "
                f"{lineage!r}; name the member: update_model(model_id, model), or add_model(model)"
            )
        return same[0]

    # -------------------------------------------------------------- prediction
    def _require_members(self, what: str) -> None:
        if not self._members:
            raise NotFittedError(
                f"{what}: the ensemble has no members; add_model() or train() first"
            )

    def effective_weights(self) -> np.ndarray:
        """Normalised weights the combination uses (uniform for averaging and stacking)."""
        w = (
            np.asarray(self._weights, np.float32)
            if self._rule.uses_weights
            else np.ones(len(self), np.float32)
        )
        return w / w.sum()

    def member_probabilities(self, x, *, batch_size: int = DEFAULT_CHUNK) -> np.ndarray:
        """``[K, N, C]`` member probabilities (one stacked forward pass per architecture group)."""
        return np.asarray(self._member_probs(x, batch_size))

    def _member_probs(self, x, batch_size: int = DEFAULT_CHUNK):
        self._require_members("predict")
        check_positive("batch_size", batch_size)
        member_views, views = resolve_views(self._members, x)
        if self._groups is None:
            self._groups = group_members(self._members)
        return ensemble_probs(self._groups, member_views, views, chunk=batch_size)

    def _output(self, probs):
        if self._rule.needs_meta_learner and self._meta is None:
            raise NotFittedError(
                "predict: stacking needs a meta-learner; call update_model_weights(val_data) first"
            )
        return combined_output(
            self._rule,
            jnp.asarray(probs),
            jnp.asarray(self.effective_weights()),
            self._meta,
            self._temperature_array(),
        )

    def _temperature_array(self):
        # 0 stands for "not calibrated" (see combined_output): one compiled program for both.
        return jnp.float32(0.0 if self._temperature is None else self._temperature)

    def predict_proba(self, x, *, batch_size: int = DEFAULT_CHUNK) -> np.ndarray:
        """Ensemble class probabilities ``[N, C]`` (voting: the weighted vote shares)."""
        return np.asarray(self._output(self._member_probs(x, batch_size))[0])

    def predict(self, x, *, batch_size: int = DEFAULT_CHUNK) -> np.ndarray:
        """Ensemble class ids ``[N]`` (voting: weighted hard votes with the tie rule of
        ``combine.py``).
        """
        return np.asarray(self._output(self._member_probs(x, batch_size))[1])

    def _labelled(self, data, argument: str):
        self._require_members(argument)
        x, y = split_labelled(data, self._members[0].spec.num_classes, argument=argument)
        probs = self._member_probs(x)
        if probs.shape[1] != y.shape[0]:
            raise DataError(
                f"{argument}: expected {probs.shape[1]} labels to match the inputs, got "
                f"{y.shape[0]}"
            )
        return x, y, probs

    def _held_out(self, data, argument: str):
        if data is None:
            if self._validation is None:
                raise NotFittedError(
                    f"{argument}: pass held-out data (no validation data seen yet)"
                )
            data = self._validation
        x, y, probs = self._labelled(data, argument)
        self._validation = (x, y)
        return y, probs

    # ----------------------------------------------------------------- weights
    def update_model_weights(self, val_data=None, *, weights=None) -> bool:
        """Set ``weights`` (one per member, or ``{model_id: weight}``), or learn them on
        ``val_data`` (default: the held-out data last given to this ensemble, as in SEED.md's
        ``update_model_weights()``).

        Learned rule: minimise the validation NLL of the weighted mixture over the simplex
        (``weights.py``), after/before the automatic steps in the module docstring. The
        weights drive "weighted" and "voting"; "averaging" and "stacking" (which fits its
        meta-learner here) do not use them.
        """
        self._require_members("update_model_weights")
        if weights is not None:
            if isinstance(weights, dict):
                unknown = sorted(set(weights) - set(self.model_ids))
                if unknown:
                    raise ConfigError(
                        f"weights: expected keys among {self.model_ids}, got unknown ids {unknown}"
                    )
                weights = [weights.get(i, w) for i, w in zip(self.model_ids, self._weights)]
            self._weights = check_weights("weights", weights, len(self)).tolist()
            self._changed()
            return True
        if val_data is None and self._validation is None:
            raise ConfigError(
                "update_model_weights: expected val_data (to learn weights) or weights, got "
                "neither, and no held-out data was given before"
            )
        if val_data is None:
            val_data = self._validation
        if self.diversity_settings["enabled"]:
            self.optimize_diversity(val_data)
        y, probs = self._held_out(val_data, "val_data")
        learned, nll = fit_simplex_weights(jnp.asarray(probs), jnp.asarray(y))
        self._weights = np.asarray(learned).tolist()
        self._changed()
        self._reports["learned_weights"] = {
            "rule": "min validation NLL of the weighted mixture over the simplex",
            "nll": float(nll),
            "weights": dict(zip(self.model_ids, self._weights)),
        }
        if self.pruning_settings["enabled"]:
            self.prune_models(self.pruning_settings["threshold"])
        if self._rule.needs_meta_learner:
            self.fit_stacking(self._validation)
        return True

    def fit_stacking(self, val_data, *, folds: int = STACKING_FOLDS) -> dict[str, Any]:
        """Fit the stacking meta-learner on member predictions for held-out ``val_data``.

        Also reports its honest score: ``folds``-fold out-of-fold stacked predictions,
        all folds fitted as one vmapped program (``stacking.py``).
        """
        folds = check_folds(folds)
        y, probs = self._held_out(val_data, "val_data")
        fold_ids = stratified_fold_ids(y, folds, self.seed)
        labels = jnp.asarray(y)
        meta, oof = fit_stacking(jnp.asarray(probs), labels, jnp.asarray(fold_ids), folds)
        report = {"folds": folds, "out_of_fold": to_host(probability_metrics(oof, labels))}
        self._meta, self._temperature = meta, None
        self._reports["stacking"] = report
        return report

    # ----------------------------------------------------- statistics, scores
    def get_ensemble_performance(self, data=None) -> dict[str, Any]:
        """Ensemble and per-member accuracy, NLL, Brier and ECE on ``data``, plus weights
        and diversity.

        Without ``data`` (SEED.md's ``get_ensemble_performance()``): on the held-out data last
        given, which is what the weights were learned on, so an optimistic figure; pass test
        data for an honest one.
        """
        if data is None and self._validation is None:
            raise NotFittedError(
                "data: pass labelled data to score the ensemble on (no held-out data seen yet)"
            )
        _, y, probs = self._labelled(self._validation if data is None else data, "data")
        if self._rule.needs_meta_learner and self._meta is None:
            self._output(probs)  # raises NotFittedError
        raw = to_host(
            evaluate_ensemble(
                self._rule,
                jnp.asarray(probs),
                jnp.asarray(self.effective_weights()),
                jnp.asarray(y),
                self._meta,
                self._temperature_array(),
            )
        )
        members = raw["members"]
        report = {
            "combination_method": self.combination_method,
            "num_examples": int(y.shape[0]),
            "ensemble": raw["ensemble"],
            "members": {
                mid: {m: members[m][i] for m in members} for i, mid in enumerate(self.model_ids)
            },
            "weights": dict(zip(self.model_ids, self.effective_weights().tolist())),
            "diversity": raw["diversity"],
            "temperature": self._temperature,
        }
        report["best_member_accuracy"] = max(v["accuracy"] for v in report["members"].values())
        self._reports["performance"] = report
        return report

    def get_ensemble_statistics(self) -> dict[str, Any]:
        """Members, weights, groups, settings and the latest reports (performance,
        calibration, CV ...).
        """
        groups = group_members(self._members) if self._members else []
        return {
            "num_models": len(self),
            "combination_method": self.combination_method,
            "model_ids": self.model_ids,
            "architectures": [m.spec.architecture for m in self._members],
            "weights": dict(zip(self.model_ids, self.effective_weights().tolist()))
            if self._members
            else {},
            "stacked_groups": [[self.model_ids[i] for i in g.indices] for g in groups],
            "member_training_metrics": {m.model_id: dict(m.metrics) for m in self._members},
            "meta_learner_fitted": self._meta is not None,
            "temperature": self._temperature,
            "diversity_optimization": dict(self.diversity_settings),
            "automatic_pruning": dict(self.pruning_settings),
            "cross_validation": dict(self.cross_validation_settings),
            **{k: v for k, v in self._reports.items()},
        }

    # ------------------------------------------------- calibration, selection
    def calibrate(self, val_data) -> dict[str, float]:
        """Temperature scaling on held-out data; returns the temperature and ECE/NLL before
        and after.
        """
        y, probs = self._held_out(val_data, "val_data")
        self._temperature = None
        before, _ = self._output(probs)
        temperature = float(fit_temperature(before, jnp.asarray(y)))
        self._temperature = temperature
        after, _ = self._output(probs)
        b, a = (
            to_host(probability_metrics(before, jnp.asarray(y))),
            to_host(probability_metrics(after, jnp.asarray(y))),
        )
        report = {
            "temperature": temperature,
            "ece_before": b["ece"],
            "ece_after": a["ece"],
            "nll_before": b["nll"],
            "nll_after": a["nll"],
        }
        self._reports["calibration"] = report
        return report

    def _keep(self, mask: np.ndarray) -> list[str]:
        removed = [mid for mid, keep in zip(self.model_ids, mask) if not keep]
        self._members = [m for m, keep in zip(self._members, mask) if keep]
        self._weights = [w for w, keep in zip(self._weights, mask) if keep]
        if removed:
            self._changed()
        return removed

    def prune_models(self, threshold: float = 0.0, data=None) -> list[str]:
        """Greedy backward elimination on held-out NLL (rule in ``pruning.py``); returns
        removed ids.
        """
        threshold = check_weight("threshold", threshold)
        y, probs = self._held_out(data, "data")
        ids = self.model_ids
        kept, trace = pruning.greedy_prune(
            jnp.asarray(probs), self.effective_weights(), jnp.asarray(y), threshold=threshold
        )
        removed = self._keep(kept)
        self._reports["pruning"] = {
            "threshold": threshold,
            "removed": removed,
            "steps": [{**t, "member": ids[t["member"]]} for t in trace],
        }
        return removed

    def optimize_diversity(self, data=None, *, max_members: int | None = None) -> dict[str, Any]:
        """Greedy forward selection trading held-out NLL for disagreement (rule in
        ``pruning.py``).
        """
        max_members = self.diversity_settings["max_members"] if max_members is None else max_members
        if max_members is not None:
            check_positive("max_members", max_members)
        y, probs = self._held_out(data, "data")
        ids = self.model_ids
        selected, trace = pruning.greedy_diverse_selection(
            jnp.asarray(probs),
            self.effective_weights(),
            jnp.asarray(y),
            diversity_weight=self.diversity_settings["weight"],
            max_members=max_members,
        )
        removed = self._keep(selected)
        report = {
            "selected": self.model_ids,
            "removed": removed,
            "diversity_weight": self.diversity_settings["weight"],
            "steps": [{**t, "member": ids[t["member"]]} for t in trace],
        }
        self._reports["diversity_optimization"] = report
        return report

    # ---------------------------------------------------------------- settings
    def set_diversity_optimization(
        self, enabled: bool = True, *, weight: float = 0.1, max_members: int | None = None
    ) -> bool:
        """Run ``optimize_diversity`` (disagreement weight ``weight``) inside
        ``update_model_weights``.
        """
        if max_members is not None:
            check_positive("max_members", max_members)
        self.diversity_settings = {
            "enabled": bool(enabled),
            "weight": check_weight("weight", weight),
            "max_members": max_members,
        }
        return True

    def set_automatic_pruning(self, enabled: bool = True, *, threshold: float = 0.0) -> bool:
        """Run ``prune_models(threshold)`` after the weights are learned in
        ``update_model_weights``.
        """
        self.pruning_settings = {
            "enabled": bool(enabled),
            "threshold": check_weight("threshold", threshold),
        }
        return True

    def set_cross_validation(self, folds: int = 5, *, enabled: bool = True) -> bool:
        """Make ``fit``/``train`` train ``folds`` fold models as one program and report the
        CV score.
        """
        self.cross_validation_settings = {"enabled": bool(enabled), "folds": check_folds(folds)}
        return True

    # ------------------------------------------------------------ deep ensembles
    def fit(
        self,
        spec,
        data,
        config=None,
        *,
        members: int | None = None,
        val=None,
        member_hparams=None,
        bootstrap: bool = False,
        key=None,
        run_dir=None,
        progress=None,
    ) -> dict[str, Any]:
        """Train members of ``spec`` on ``data`` as one stacked program and add them.

        With cross-validation on, ``members`` is the number of folds and member i trains
        without fold i; the report holds the CV score (mean +- std over folds). With
        ``run_dir``, training checkpoints every epoch and the members' ids and weights are
        recorded there: the same call after a kill resumes from the last checkpoint and adds
        the same members (ids, weights, parameters bit for bit) as an uninterrupted run.
        """
        classes = getattr(
            spec, "num_classes", getattr(data, "num_classes", None)
        )  # a name: the data's classes
        if self._members and classes != self._members[0].spec.num_classes:
            raise ConfigError(
                f"spec: expected {self._members[0].spec.num_classes} classes like the other "
                f"members, got {classes}"
            )
        cv = self.cross_validation_settings
        trained, report, fold_ids = deep.train_ensemble(
            spec,
            data,
            config,
            members=members,
            folds=cv["folds"] if cv["enabled"] else None,
            seed=self.seed,
            key=key,
            val=val,
            member_hparams=member_hparams,
            bootstrap=bootstrap,
            run=Run.at(run_dir, progress=progress),
        )
        for model, weight in zip(trained, report["weights"]):
            self.add_model(model, weight)
        if fold_ids is not None:
            probs = self.member_probabilities(data)[len(self) - len(trained) :]
            report["cross_validation"] = deep.cross_validation_scores(probs, data.y, fold_ids)
            self._reports["cross_validation"] = report["cross_validation"]
        self._reports["training"] = report
        return report

    @classmethod
    def train(
        cls,
        spec,
        data,
        config=None,
        *,
        members: int = 5,
        combination_method: Any = "averaging",
        cross_validation: int | None = None,
        seed: int = 0,
        **kwargs,
    ) -> AdvancedModelEnsemble:
        """A deep ensemble: ``members`` models of ``spec`` trained as one program (``fit``).

        ``spec`` is a ``ModelSpec`` or an architecture name; ``cross_validation=k`` trains the
        k fold models instead. Example:
            >>> from ml_adv.data import load_dataset
            >>> from ml_adv.training import TrainConfig
            >>> ensemble = AdvancedModelEnsemble.train(
            ...     "mlp", load_dataset("digits_flat").subset(range(256)),
            ...     TrainConfig(epochs=1), members=3,
            ... )
            >>> len(ensemble)
            3
        """
        ensemble = cls(combination_method, seed=seed)
        if cross_validation is not None:
            ensemble.set_cross_validation(cross_validation)
            members = cross_validation
        ensemble.fit(spec, data, config, members=members, **kwargs)
        return ensemble

    # ------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> str:
        """Write the ensemble (one orbax pytree + JSON) to a new directory; returns its path.

        The ensemble's own format (its members are one stacked pytree), in place of
        ``Estimator.save``'s: the settings it writes are ``get_params()`` and the set_* ones.
        """
        self._require_members("save")
        if not isinstance(self.combination_method, str):
            raise ConfigError(
                "save: a custom combination callable cannot be saved; use a registered name"
            )
        settings = {
            "combination_method": self.combination_method,
            "seed": self.seed,
            "diversity": self.diversity_settings,
            "pruning": self.pruning_settings,
            "cross_validation": self.cross_validation_settings,
            "reports": self._reports,
        }
        return persistence.save_ensemble(
            path,
            self._members,
            self._weights,
            meta_learner=self._meta,
            temperature=self._temperature,
            settings=settings,
        )

    @classmethod
    def load(cls, path: str | Path) -> AdvancedModelEnsemble:
        """Rebuild an ensemble written by ``save``."""
        members, weights, meta, temperature, settings = persistence.load_ensemble(path)
        ensemble = cls(settings["combination_method"], seed=settings["seed"])
        ensemble._members, ensemble._weights = members, np.asarray(weights).tolist()
        ensemble._meta, ensemble._temperature = meta, temperature
        ensemble.diversity_settings, ensemble.pruning_settings = (
            settings["diversity"],
            settings["pruning"],
        )
        ensemble.cross_validation_settings, ensemble._reports = (
            settings["cross_validation"],
            settings["reports"],
        )
        return ensemble
