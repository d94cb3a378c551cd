"""``AdvancedDomainAdaptation``: the SEED.md product API over the domain-adaptation core.

A thin stateful facade: it holds the domains, the settings and the history of runs, and
calls ``methods.ADAPTATION_METHODS`` (DANN, fine-tuning, transfer) and
``similarity``; no numerics live here.

    da = AdvancedDomainAdaptation("domain_adversarial", TrainConfig(batch_size=64), steps=1000)
    da.set_source_domain(source_train, test=source_test)
    da.set_target_domain(target_unlabelled, test=target_test)   # labeled=... for fine-tuning
    adapted = da.adapt_model(source_model)                       # a TrainedModel
    da.evaluate_adaptation(adapted)       # source/target accuracy, transfer ratio, gain, gap closed
    da.get_domain_similarity()            # 1 - MMD^2/2 on the model's features, in [0, 1]

After adapting, both models are scored on the labelled target examples given; when the
adapted one scores lower, ``adapt_model`` warns (``AdaptationWarning``) and the run's
record and ``evaluate_adaptation`` carry ``worse_than_unadapted``.

Early stopping and learning-rate schedules act on target validation: the labelled target
examples (``labeled=``) when DANN trains, a stratified fifth of them when fine-tuning or
transferring (the rest train), so the target test set is never looked at while training.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ml_adv.data.dataset import ArrayDataset
from ml_adv.domain_adaptation.methods import ADAPTATION_METHODS, NEEDS_TARGET_LABELS, AdaptRequest
from ml_adv.errors import (
    AdaptationWarning,
    ConfigError,
    DataError,
    NotFittedError,
    check_bool,
    check_fraction,
    check_non_negative,
    check_positive,
    describe,
)
from ml_adv.estimator import Estimator
from ml_adv.rundir import Run

VALIDATION_FRACTION = 0.2
DEFAULT_STEPS = 600


class AdvancedDomainAdaptation(Estimator):
    """Adapt a source-trained model to a target domain.

    Args:
        adaptation_method: ``"domain_adversarial"`` (DANN), ``"fine_tuning"`` or
            ``"transfer_learning"`` (``ADAPTATION_METHODS``).
        config: the adaptation run's ``TrainConfig`` (batch size, learning rate, optimizer,
            seed ...; default ``TrainConfig()``). Its ``epochs`` count only with ``steps=None``.
        steps: how long the run trains, in optimizer steps over all its stages (default
            600). Sized in steps, not epochs, because the labelled target set of fine-tuning
            and transfer is often a few dozen examples: ten epochs of one step each do not
            fit a head. ``None``: ``config.epochs`` epochs instead.
        domain_weight: DANN's domain-loss weight.
        discriminator_hidden: DANN's discriminator widths.
        head_fraction: transfer learning trains a new head on the frozen encoder for this
            share of the steps, then fine-tunes every layer for the rest (linear probing
            then fine-tuning, Kumar et al. 2022). 1.0 keeps the encoder frozen throughout;
            on digits -> digits_m a frozen source encoder under a new head only tied the
            unadapted model (0.451 target accuracy both), the default reached 0.630.
        progress: show progress bars.

    Example:
        >>> from ml_adv.training.config import TrainConfig
        >>> da = AdvancedDomainAdaptation("fine_tuning", TrainConfig(batch_size=16), steps=300)
    """

    def __init__(
        self,
        adaptation_method: str = "domain_adversarial",
        config=None,
        *,
        steps: int | None = DEFAULT_STEPS,
        domain_weight: float = 1.0,
        discriminator_hidden: tuple[int, ...] = (64,),
        head_fraction: float = 0.5,
        progress: bool = False,
    ):
        from ml_adv.training.config import TrainConfig

        ADAPTATION_METHODS.get(adaptation_method, argument="adaptation_method")
        self.adaptation_method = adaptation_method
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config: expected a TrainConfig, got {describe(config)}")
        self.config = config
        self.steps = None if steps is None else check_positive("steps", steps)
        self.domain_weight = check_non_negative("domain_weight", domain_weight)
        self.discriminator_hidden = tuple(
            check_positive("discriminator_hidden", h) for h in discriminator_hidden
        )
        self.head_fraction = check_fraction(
            "head_fraction", head_fraction, low_open=True, high_open=False
        )
        self.progress = check_bool("progress", progress)
        self.gradual = {"enabled": True, "stages": 3, "epochs_per_stage": None, "lr_decay": 1.0}
        self.sources: list[ArrayDataset] | None = None
        self.source_test: ArrayDataset | None = None
        self.target: ArrayDataset | None = None
        self.target_labeled: ArrayDataset | None = None
        self.target_test: ArrayDataset | None = None
        self.target_bound: float | None = None
        self.source_model = None
        self.adapted_model = None
        self.runs: list[dict[str, Any]] = []
        self.last_evaluation: dict[str, Any] | None = None

    # ------------------------------------------------------------------ domains
    def set_source_domain(self, data, *, test: ArrayDataset | None = None) -> None:
        """Labelled source data: one ``ArrayDataset`` or a list of them (multi-source)."""
        sources = list(data) if isinstance(data, (list, tuple)) else [data]
        if not sources:
            raise DataError(
                "data: expected an ArrayDataset or a non-empty list of them, got an empty list"
            )
        for i, d in enumerate(sources):
            if not isinstance(d, ArrayDataset):
                raise DataError(
                    f"data[{i}]: expected an ArrayDataset of labelled source examples, got "
                    f"{describe(d)}"
                )
            if d.example_shape != sources[0].example_shape:
                raise DataError(
                    f"data[{i}]: expected example shape {sources[0].example_shape} like the first "
                    f"source, got {d.example_shape}"
                )
        self._check_optional("test", test, sources[0].example_shape)
        self.sources, self.source_test = sources, test

    def set_target_domain(
        self,
        data: ArrayDataset,
        *,
        labeled: ArrayDataset | None = None,
        test: ArrayDataset | None = None,
        target_trained_accuracy: float | None = None,
    ) -> None:
        """Target examples (labels unused), optional labelled ones, a labelled test set, and
        the bound.

        ``target_trained_accuracy``: a model trained on the target's test accuracy (the upper
        bound), for the share of the gap closed in ``evaluate_adaptation``.
        """
        if not isinstance(data, ArrayDataset):
            raise DataError(
                f"data: expected an ArrayDataset of target examples, got {describe(data)}"
            )
        if self.sources is not None and data.example_shape != self.sources[0].example_shape:
            raise DataError(
                f"data: expected target example shape {self.sources[0].example_shape} like the "
                f"source, got {data.example_shape}"
            )
        self._check_optional("labeled", labeled, data.example_shape)
        self._check_optional("test", test, data.example_shape)
        bound = (
            None
            if target_trained_accuracy is None
            else check_fraction("target_trained_accuracy", target_trained_accuracy, high_open=False)
        )
        self.target, self.target_labeled, self.target_test, self.target_bound = (
            data,
            labeled,
            test,
            bound,
        )

    @staticmethod
    def _check_optional(name: str, data, shape) -> None:
        if data is None:
            return
        if not isinstance(data, ArrayDataset):
            raise DataError(
                f"{name}: expected a labelled ArrayDataset or None, got {describe(data)}"
            )
        if data.example_shape != shape:
            raise DataError(f"{name}: expected example shape {shape}, got {data.example_shape}")

    # ------------------------------------------------------------------ settings
    def set_gradual_unfreezing(
        self,
        enabled: bool = True,
        *,
        stages: int = 3,
        epochs_per_stage: int | None = None,
        lr_decay: float = 1.0,
    ) -> None:
        """Fine-tuning thaws layer groups top-down over ``stages`` (``lr_decay``: per-group
        rate factor).
        """
        self.gradual = {
            "enabled": check_bool("enabled", enabled),
            "stages": check_positive("stages", stages),
            "epochs_per_stage": None
            if epochs_per_stage is None
            else check_positive("epochs_per_stage", epochs_per_stage),
            "lr_decay": check_fraction("lr_decay", lr_decay, low_open=True, high_open=False),
        }

    def set_learning_rate_scheduling(
        self, schedule: str = "cosine", *, enabled: bool = True, warmup_fraction: float = 0.0
    ) -> None:
        """Decay the learning rate over the run: a schedule name from ``SCHEDULES``
        (``cosine``, the default, ``warmup_cosine``, ``one_cycle`` ...); ``enabled=False``
        keeps it constant (SEED.md: ``set_learning_rate_scheduling(enabled=True)``)."""
        schedule = schedule if check_bool("enabled", enabled) else "constant"
        self.config = self.config.replace(schedule=schedule, warmup_fraction=warmup_fraction)

    def set_early_stopping(self, patience: int = 5, *, enabled: bool = True) -> None:
        """Stop on target validation accuracy (needs labelled target examples when adapting)."""
        self.config = self.config.replace(
            early_stopping=check_bool("enabled", enabled),
            patience=check_positive("patience", patience),
        )

    # ------------------------------------------------------------------ adapt
    def _config(self, train_size: int):
        """The run's config: batch capped by the data, epochs from the step budget (``steps``)."""
        batch = min(self.config.batch_size, train_size)
        if self.steps is None:
            return self.config.replace(batch_size=batch)
        return self.config.replace(
            batch_size=batch, epochs=max(1, math.ceil(self.steps / (train_size // batch)))
        )

    def _request(self, model, run_dir) -> AdaptRequest:
        method = self.adaptation_method
        labeled, val = self.target_labeled, None
        if method in NEEDS_TARGET_LABELS and labeled is None:
            raise DataError(
                f"target labels: {method!r} trains on labelled target examples; pass "
                "set_target_domain(data, labeled=<a few labelled target examples>), got none"
            )
        if method in NEEDS_TARGET_LABELS and self.config.early_stopping:
            labeled, val = labeled.split(
                (1 - VALIDATION_FRACTION, VALIDATION_FRACTION), seed=self.config.seed
            )
        elif method == "domain_adversarial":
            val = labeled
        if self.config.early_stopping and val is None:
            raise DataError(
                "set_early_stopping: early stopping watches target validation accuracy; pass "
                "set_target_domain(data, labeled=...), got no labelled target examples"
            )
        if method == "domain_adversarial" and any(
            model.num_classes < s.num_classes for s in self.sources
        ):
            raise DataError(f"model: {model.num_classes} outputs, but the source labels need more")
        # The first stream sets a DANN epoch's length; the labelled set a fine-tuning one's.
        train_size = len(self.sources[0]) if method == "domain_adversarial" else len(labeled)
        config = self._config(train_size)
        head_epochs = max(1, round(config.epochs * self.head_fraction))
        return AdaptRequest(
            spec=model.spec,
            params=model.params,
            sources=self.sources,
            target=self.target,
            labeled=labeled,
            val=val,
            config=config,
            domain_weight=self.domain_weight,
            discriminator_hidden=self.discriminator_hidden,
            gradual=self.gradual["enabled"],
            stages=self.gradual["stages"],
            epochs_per_stage=self.gradual["epochs_per_stage"],
            lr_decay=self.gradual["lr_decay"],
            head_epochs=head_epochs,
            finetune_epochs=max(0, config.epochs - head_epochs) if self.head_fraction < 1 else 0,
            run=Run.at(run_dir, progress=self.progress),
        )

    def adapt_model(self, model, *, run_dir=None):
        """Adapt ``model`` (a source-trained ``TrainedModel``); returns the adapted
        ``TrainedModel``.

        With ``run_dir`` the run checkpoints there (staged methods: ``stage_<i>/``), and the
        same call again resumes from the last checkpoint instead of starting over.
        """
        from ml_adv.training.trained_model import TrainedModel

        if self.sources is None or self.target is None:
            raise NotFittedError(
                "adapt_model: set the domains first with set_source_domain(...) and "
                f"set_target_domain(...); got source {'set' if self.sources else 'unset'}, "
                f"target {'set' if self.target is not None else 'unset'}"
            )
        if not isinstance(model, TrainedModel):
            raise ConfigError(
                "model: expected a TrainedModel (e.g. "
                f"AdvancedCustomModelTrainer(...).train(...).model), got {describe(model)}"
            )
        model.spec.validate_inputs(self.target.x[:1], argument="target.x")
        request = self._request(model, run_dir)
        outcome = ADAPTATION_METHODS.get(self.adaptation_method)(request)
        adapted = TrainedModel(
            model.spec,
            outcome.variables,
            mixed_precision=model.mixed_precision,
            metrics={"adaptation_method": self.adaptation_method},
        )
        self.source_model, self.adapted_model = model, adapted
        check = self._labelled_check(model, adapted)
        adapted.metrics.update(check)
        self.runs.append(
            {
                "method": self.adaptation_method,
                "config": request.config.to_dict(),
                "source_model_id": model.model_id,
                "adapted_model_id": adapted.model_id,
                "history": outcome.history,
                **check,
            }
        )
        return adapted

    def _labelled_check(self, unadapted, adapted, caller: str = "adapt_model") -> dict[str, Any]:
        """Both models' accuracy on the labelled target examples given; warns when adapting lost.

        Every method runs the guard: fine-tuning and transfer train on these labels, DANN
        validates on them. Without labelled target examples the figures are None.
        """
        if self.target_labeled is None:
            return {"labelled_target_accuracy": None, "worse_than_unadapted": None}
        before = unadapted.evaluate(self.target_labeled)["accuracy"]
        after = adapted.evaluate(self.target_labeled)["accuracy"]
        worse = after < before
        if worse:
            warnings.warn(
                f"{caller}: the {self.adaptation_method} model scores {after:.3f} on the "
                f"{len(self.target_labeled)} labelled target examples, below the unadapted model's "
                f"{before:.3f}; keep the unadapted model, or train longer (steps=) or with another "
                "learning rate",
                AdaptationWarning,
                stacklevel=2,
            )
        return {
            "labelled_target_accuracy": {"adapted": after, "unadapted": before},
            "worse_than_unadapted": worse,
        }

    # ------------------------------------------------------------------ evaluate
    def evaluate_adaptation(self, model=None) -> dict[str, Any]:
        """Source and target accuracy, transfer ratio, gain over the unadapted model, gap closed.

        Target figures need ``set_target_domain(..., test=...)``; the gap closed also needs
        ``target_trained_accuracy``. Missing figures are ``None``.
        """
        model = model if model is not None else self.adapted_model
        if model is None or self.sources is None:
            raise NotFittedError(
                "evaluate_adaptation: adapt a model first (adapt_model) or pass one, "
                "with the domains set"
            )
        source_eval = self.source_test if self.source_test is not None else self.sources[0]
        source_acc = model.evaluate(source_eval)["accuracy"]
        target_acc = (
            model.evaluate(self.target_test)["accuracy"] if self.target_test is not None else None
        )
        unadapted = (
            self.source_model.evaluate(self.target_test)["accuracy"]
            if self.target_test is not None and self.source_model is not None
            else None
        )
        out = {
            "method": self.adaptation_method,
            "source_accuracy": source_acc,
            "target_accuracy": target_acc,
            "transfer_ratio": None
            if target_acc is None or source_acc == 0
            else target_acc / source_acc,
            "unadapted_target_accuracy": unadapted,
            "gain_over_unadapted": None
            if unadapted is None or target_acc is None
            else target_acc - unadapted,
            "target_trained_accuracy": self.target_bound,
            "gap_closed": None,
        }
        if self.source_model is not None:
            out.update(self._labelled_check(self.source_model, model, "evaluate_adaptation"))
        else:
            out.update(labelled_target_accuracy=None, worse_than_unadapted=None)
        if (
            out["gain_over_unadapted"] is not None
            and self.target_bound is not None
            and self.target_bound > unadapted
        ):
            out["gap_closed"] = out["gain_over_unadapted"] / (self.target_bound - unadapted)
        self.last_evaluation = out
        return out

    def get_domain_similarity(self, model=None, *, max_examples: int = 1000) -> float:
        """``1 - MMD^2 / 2`` in [0, 1] between source and target features of ``model``
        (default: the adapted model, else the source model); 1 means indistinguishable."""
        return self.similarity_report(model, max_examples=max_examples)["mmd_similarity"]

    def similarity_report(self, model=None, *, max_examples: int = 1000) -> dict[str, float]:
        """Every similarity measure (``similarity.domain_similarity_report``) on ``model``'s
        features.
        """
        from ml_adv.domain_adaptation.similarity import domain_similarity_report

        model = model or self.adapted_model or self.source_model
        if model is None or self.sources is None or self.target is None:
            raise NotFittedError(
                "get_domain_similarity: set both domains and pass a model (or adapt one first)"
            )
        return domain_similarity_report(
            model, self.sources[0], self.target, max_examples=max_examples, seed=self.config.seed
        )

    def get_domain_adaptation_metrics(self) -> dict[str, Any]:
        """The method, every run's config and per-epoch history, the last evaluation and
        similarities.
        """
        out: dict[str, Any] = {
            "adaptation_method": self.adaptation_method,
            "runs": list(self.runs),
            "evaluation": self.last_evaluation,
        }
        if self.adapted_model is not None:
            out["similarity_adapted"] = self.similarity_report(self.adapted_model, max_examples=500)
            out["similarity_unadapted"] = self.similarity_report(
                self.source_model, max_examples=500
            )
        return out

    # ------------------------------------------------------------- persistence
    def _state(self, folder) -> dict[str, Any]:
        """Runs, the last evaluation, set_* settings and the two models; the domains are
        data, set again.
        """
        from ml_adv.rundir import json_safe

        for name in ("source_model", "adapted_model"):
            if getattr(self, name) is not None:
                getattr(self, name).save(folder / name)
        return json_safe(
            {
                "runs": self.runs,
                "last_evaluation": self.last_evaluation,
                "gradual": self.gradual,
                "target_bound": self.target_bound,
            }
        )

    def _restore_state(self, state: dict[str, Any], folder) -> None:
        from ml_adv.training.trained_model import TrainedModel

        self.runs, self.last_evaluation = state["runs"], state["last_evaluation"]
        self.gradual, self.target_bound = state["gradual"], state["target_bound"]
        for name in ("source_model", "adapted_model"):
            if (folder / name).is_dir():
                setattr(self, name, TrainedModel.load(folder / name))


__all__ = ["AdvancedDomainAdaptation"]
