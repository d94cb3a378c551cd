"""``AdvancedActiveLearning``: the SEED.md active-learning loop as a thin stateful facade.

It holds the label store, the budget, the current model and the loop's settings, and
calls the core for everything else (``loop.train_round``, ``loop.choose``, the jitted
scores and selection). With ``run_dir`` every user input is journaled (``labels.py``)
and each round's model is an orbax checkpoint, so a process killed at any point and
started again with the same ``run_dir`` (and the same script) continues where it was.

Example:
    >>> from ml_adv.data import load_dataset
    >>> pool, val = (
    ...     load_dataset("digits_flat", split="train"),
    ...     load_dataset("digits_flat", split="test"),
    ... )
    >>> al = AdvancedActiveLearning(
    ...     sampling_strategy="uncertainty", size="tiny", validation_data=val
    ... )
    >>> al.add_labeled_data(pool.x[:20], pool.y[:20])
    >>> al.add_unlabeled_data(pool.x[20:200])
    >>> samples, indices = al.select_samples(n_samples=10)
    >>> al.update_model(pool.y[20:200][indices])      # labels for exactly those samples, in order
    True
    >>> al.get_learning_curve()[-1]["labels"]
    30
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ml_adv.active_learning.budget import Budget
from ml_adv.active_learning.labels import JOURNAL, LabelStore, check_same_shape
from ml_adv.active_learning.loop import (
    ActiveLearningConfig,
    adaptive_choice,
    choose,
    evaluate,
    load_model,
    predictor_for,
    save_model,
    train_round,
)
from ml_adv.active_learning.strategies import STRATEGIES, resolve_strategy
from ml_adv.data.dataset import ArrayDataset, validate_features, validate_labels
from ml_adv.errors import (
    BudgetError,
    CheckpointError,
    ConfigError,
    DataError,
    NotFittedError,
    check_positive,
    describe,
)
from ml_adv.estimator import Estimator
from ml_adv.training.trained_model import TrainedModel


class Selection(NamedTuple):
    """What ``select_samples`` returns: the samples to label and their pool indices (best first)."""

    samples: np.ndarray
    indices: np.ndarray


class AdvancedActiveLearning(Estimator):
    """Pool-based active learning: select, label, update, repeat.

    Args:
        sampling_strategy: a name in ``STRATEGIES`` (``uncertainty``, ``entropy``, ``margin``,
            ``least_confidence``, ``bald``, ``diversity``/``coreset``, ``hybrid``, ``random``)
            or a ``Strategy``.
        model: a ``ModelSpec`` to train, or a ``TrainedModel`` to start from (warm start).
        architecture, size, model_overrides: build the spec from the registry when ``model``
            is None (input shape from the data).
        num_classes: number of classes (default: ``max(label) + 1`` of the first labelled data).
        validation_data: ``(x, y)`` or an ``ArrayDataset``; needed for the learning curve's
            accuracy, the performance threshold and adaptive sampling.
        run_dir: a path or ``RunDirectory`` for the journal (``journal.jsonl``, ``data/``) and
            the round's model (``models/``); an existing one is restored.
        config: an ``ActiveLearningConfig`` (training per round, MC samples, chunking).
        seed: seeds selection (random picks, MC-dropout masks); training seeds are in ``config``.
    """

    def __init__(
        self,
        sampling_strategy="uncertainty",
        *,
        model=None,
        architecture: str = "mlp",
        size: str = "small",
        model_overrides: dict[str, Any] | None = None,
        num_classes: int | None = None,
        validation_data=None,
        run_dir: str | Path | None = None,
        config: ActiveLearningConfig | None = None,
        seed: int = 0,
    ):
        self.strategy = resolve_strategy(sampling_strategy)
        self.config = config if config is not None else ActiveLearningConfig()
        if not isinstance(self.config, ActiveLearningConfig):
            raise ConfigError(f"config: expected an ActiveLearningConfig, got {describe(config)}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {describe(seed)}")
        if num_classes is not None:
            check_positive("num_classes", num_classes)
        self._spec, self.model, self._module = None, None, None
        if isinstance(model, TrainedModel):
            self._spec, self.model = model.spec, model
        elif model is not None:
            from ml_adv.models.registry import ModelSpec

            if not isinstance(model, ModelSpec):
                raise ConfigError(
                    f"model: expected a ModelSpec, a TrainedModel or None, got {describe(model)}"
                )
            self._spec = model
        from ml_adv.models.registry import ARCHITECTURES

        ARCHITECTURES.get(architecture, argument="architecture")
        self._arch, self._size, self._overrides = architecture, size, dict(model_overrides or {})
        self._num_classes = (
            num_classes
            if num_classes is not None
            else (self._spec.num_classes if self._spec else None)
        )
        self.validation = (
            _as_dataset("validation_data", validation_data) if validation_data is not None else None
        )
        self.seed = seed
        self.run_dir = None
        if run_dir is not None:
            from ml_adv.rundir import Run

            rd = Run.at(run_dir).directory
            # Recorded so that `--fresh` / RunDirectory.clean removes exactly these.
            rd.path_for(JOURNAL), rd.tree_for("data"), rd.tree_for("models")
            self.run_dir = rd.path
        self.store = LabelStore(self.run_dir)
        self.budget: Budget | None = None
        self.threshold: float | None = None
        self.adaptive: dict[str, Any] | None = None
        self.switches: list[dict[str, Any]] = []
        self.timings = {"train_seconds": 0.0, "select_seconds": 0.0}
        self._restore()

    # ------------------------------------------------------------ data in
    def add_labeled_data(self, data, labels) -> None:
        """Add labelled samples (the seed set, or labels obtained outside the loop)."""
        x = validate_features("data", data)
        y = validate_labels("labels", labels, self._num_classes)
        if len(y) != len(x):
            raise DataError(f"labels: expected {len(x)} labels to match data, got {len(y)}")
        self._check_shape("data", x)
        self.store.add_labeled(x, y)

    def add_unlabeled_data(self, data) -> None:
        """Add samples to the unlabelled pool; pool indices continue from the previous calls."""
        x = validate_features("data", data)
        self._check_shape("data", x)
        if (
            self.budget is not None
            and self.budget.costs is not None
            and not self.store.next_add_is_replay
        ):
            raise ConfigError(
                "add_unlabeled_data: per-sample costs are set for the current pool; "
                "set the budget after the last add_unlabeled_data"
            )
        self.store.add_unlabeled(x)

    def set_validation_data(self, data, labels) -> None:
        """Held-out data for the learning curve, the threshold and adaptive sampling."""
        self.validation = _as_dataset("validation_data", (data, labels))

    # ------------------------------------------------------------ settings
    def set_budget_management(
        self, enabled: bool = True, budget: float | None = None, costs=None, *, trim: bool = False
    ) -> None:
        """Cap the labelling cost at ``budget``; ``costs`` per pool sample (default 1 each);
        ``trim`` an over-budget selection instead of raising.

        Without ``budget`` (SEED.md's ``set_budget_management(enabled=True)``) nothing is capped:
        the cost of every recorded label is accounted, and ``get_active_learning_statistics()``
        reports it under ``budget``.
        """
        if not enabled:
            self.store.set_setting("budget", {"enabled": False})
            self._apply_settings()
            return
        if budget is not None:
            check_positive("budget", budget, kind=float)
        checked = Budget(budget, costs, trim=bool(trim))  # validates before anything is journaled
        checked.check_pool(self.store.pool_size)
        arrays = {"costs": checked.costs} if checked.costs is not None else {}
        self.store.set_setting(
            "budget", {"enabled": True, "total": checked.total, "trim": checked.trim}, arrays
        )
        self._apply_settings()

    def set_adaptive_sampling(
        self,
        enabled: bool = True,
        *,
        fallback: str = "diversity",
        patience: int = 2,
        min_gain: float = 0.005,
    ) -> None:
        """Switch between the strategy and ``fallback`` when one stagnates
        (``loop.adaptive_choice``).
        """
        if enabled:
            STRATEGIES.get(fallback, argument="fallback")  # a name: it is journaled
            check_positive("patience", patience)
            if isinstance(min_gain, bool) or not isinstance(min_gain, (int, float)) or min_gain < 0:
                raise ConfigError(
                    f"min_gain: expected a non-negative number, got {describe(min_gain)}"
                )
        value = {
            "enabled": bool(enabled),
            "fallback": fallback,
            "patience": int(patience),
            "min_gain": float(min_gain),
        }
        self.store.set_setting("adaptive", value)
        self._apply_settings()

    def set_performance_threshold(self, threshold: float | None) -> None:
        """Stop the loop once validation accuracy reaches ``threshold`` (None disables it)."""
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 < threshold <= 1
        ):
            raise ConfigError(
                f"threshold: expected an accuracy in (0, 1] or None, got {describe(threshold)}"
            )
        self.store.set_setting("threshold", {"value": threshold})
        self._apply_settings()

    # ------------------------------------------------------------ the loop
    def select_samples(self, n_samples: int = 10) -> Selection:
        """Choose ``n_samples`` pool samples to label; returns ``(samples, indices)``.

        Returns the pending selection again if its labels have not been given yet (e.g.
        after a restart), and an empty selection once the loop has stopped (threshold
        reached, budget spent: see ``stop_reason``).
        """
        check_positive("n_samples", n_samples)
        store = self.store
        if store.pending is not None:
            if len(store.pending) != n_samples:
                raise ConfigError(
                    f"n_samples: the {len(store.pending)} samples selected in round "
                    f"{store.rounds + 1} still await labels; call update_model(labels) first, got "
                    f"n_samples={n_samples}"
                )
            return Selection(store.pool_x[store.pending], store.pending.copy())
        if self.stop_reason is not None:
            return self._empty()
        if self.validation is None and (self.threshold is not None or self.adaptive):
            raise NotFittedError(
                "select_samples: the performance threshold and adaptive sampling judge validation "
                "accuracy; pass validation_data or call set_validation_data first"
            )
        # Train whatever is owed (first round, or labels recorded before a crash) even for
        # "random", so every strategy's learning curve has a point at every label count,
        # and before the adaptive rule reads that curve.
        if store.num_labelled and not store.model_is_current:
            self._train(retrain=False)
        strategy = self._current_strategy(record=True)
        if strategy.uses_model and self.model is None:
            raise NotFittedError(
                "select_samples: the strategy needs a model; call add_labeled_data first"
            )
        model = self.model
        t0 = time.perf_counter()
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), store.rounds)
        initial = store.initial_labelled()
        picks = choose(
            strategy,
            predictor_for(self._apply_fn(), model),
            store.pool_x,
            store.available,
            n_samples,
            key,
            labelled_x=initial[0] if initial else None,
            config=self.config,
        )
        if self.budget is not None:
            picks = self.budget.fit(picks)
        self.timings["select_seconds"] += time.perf_counter() - t0
        if picks.size == 0:
            return self._empty()
        store.begin_selection(picks, strategy.name)
        return Selection(store.pool_x[picks], picks.copy())

    def update_model(self, new_labels, *, indices=None, retrain: bool = False) -> bool:
        """Record labels for the pending selection (in its order), then update the model.

        The labels are journaled (fsync) before training starts. ``new_labels`` is a
        sequence in selection order or a ``{pool_index: label}`` mapping; ``indices``, when
        given, must equal the selection. ``retrain`` trains from scratch instead of
        warm-starting. Returns False when there was nothing to update (an empty selection).
        """
        store = self.store
        if store.pending is None and np.size(new_labels) == 0 and not isinstance(new_labels, dict):
            return False
        labels = store.check_labels(new_labels, self._num_classes, indices)
        if self.budget is not None and len(self.budget.fit(store.pending)) < len(store.pending):
            raise BudgetError(
                f"new_labels: the {len(store.pending)} selected samples no longer fit the budget "
                f"left ({self.budget.left:g}); raise the budget to record them"
            )
        picked = store.record_labels(labels)
        if self.budget is not None:
            self.budget.charge(picked)
        self._train(retrain=retrain or self.config.retrain_every_round)
        return True

    # ------------------------------------------------------------ reports
    @property
    def stop_reason(self) -> str | None:
        """Why the loop has stopped, or None while it goes on."""
        curve = self.store.curve
        if (
            self.threshold is not None
            and curve
            and curve[-1].get("val_accuracy") is not None
            and curve[-1]["val_accuracy"] >= self.threshold
        ):
            return (
                f"validation accuracy {curve[-1]['val_accuracy']:.4f} reached the threshold "
                f"{self.threshold}"
            )
        if self.store.pool_size and not self.store.available.any():
            return "the unlabelled pool is exhausted"
        if self.budget is not None and self.budget.spent:
            return "the budget is spent"
        return None

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def get_learning_curve(self) -> list[dict[str, Any]]:
        """One point per trained model: round, labels used, validation accuracy, strategy."""
        return [dict(entry) for entry in self.store.curve]

    def get_active_learning_statistics(self) -> dict[str, Any]:
        """Counts, budget used/left, current strategy, stopping state and timings."""
        store = self.store
        curve = store.curve
        return {
            "strategy": self.strategy.name,
            "current_strategy": self._current_strategy().name,
            "rounds": store.rounds,
            "labelled": store.num_labelled,
            "pool_size": store.pool_size,
            "unlabelled": int(store.available.sum()) if store.pool_size else 0,
            "pending": 0 if store.pending is None else int(len(store.pending)),
            "budget": self.budget.to_dict() if self.budget is not None else {"enabled": False},
            "val_accuracy": curve[-1].get("val_accuracy") if curve else None,
            "model_is_current": store.model_is_current,
            "threshold": self.threshold,
            "adaptive": dict(self.adaptive, switches=list(self.switches))
            if self.adaptive
            else {"enabled": False},
            "stopped": self.stopped,
            "stop_reason": self.stop_reason,
            "restored": store.restored,
            **{k: round(v, 3) for k, v in self.timings.items()},
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
        }

    # ------------------------------------------------------------ internals
    def _empty(self) -> Selection:
        pool = self.store.pool_x
        return Selection(pool[:0], np.zeros((0,), np.int64))

    def _check_shape(self, name: str, x: np.ndarray) -> None:
        if self._spec is not None:
            self._spec.validate_inputs(x[:1], argument=name)
        check_same_shape(name, x, self.store.example_shape)

    def _current_strategy(self, *, record: bool = False):
        if not self.adaptive or not self.adaptive["enabled"]:
            return self.strategy
        name, why = adaptive_choice(
            self.store.curve,
            self.strategy.name,
            self.adaptive["fallback"],
            patience=self.adaptive["patience"],
            min_gain=self.adaptive["min_gain"],
        )
        if record and why and not any(s["round"] == self.store.rounds for s in self.switches):
            self.switches.append({"round": self.store.rounds, "to": name, "reason": why})
        return STRATEGIES.get(name) if name != self.strategy.name else self.strategy

    def _training_pool(self) -> tuple[ArrayDataset, np.ndarray]:
        x, y, mask = self.store.training_pool()
        if self._num_classes is None:
            self._num_classes = int(y[mask].max()) + 1
        return ArrayDataset(x, y, num_classes=self._num_classes, name="active-learning pool"), mask

    def _build_spec(self, labelled: ArrayDataset):
        if self._spec is None:
            from ml_adv.models.registry import make_spec

            self._spec = make_spec(
                self._arch,
                input_shape=labelled.example_shape,
                input_kind=labelled.input_kind,
                num_classes=self._num_classes,
                size=self._size,
                **self._overrides,
            )
        return self._spec

    def _apply_fn(self):
        # One module for the whole loop: its apply is a static jit argument, so reusing it
        # keeps prediction, embedding and evaluation compiled once per pool.
        if self._spec is None:
            return None
        if self._module is None:
            self._module = self._spec.build()
        return self._module.apply

    def _train(self, *, retrain: bool) -> None:
        pool, mask = self._training_pool()
        spec = self._build_spec(pool)
        n_labelled = int(mask.sum())
        # One batch size for the whole loop (a compiled shape): capped by the first labelled set.
        first = self.store.curve[0]["labels"] if self.store.curve else n_labelled
        batch = min(self.config.train.batch_size, first)
        t0 = time.perf_counter()
        init = (
            None if (retrain or not isinstance(self.model, TrainedModel)) else self.model.variables
        )
        self.model, facts = train_round(
            spec, pool, mask, self.config, self.store.rounds, batch_size=batch, init_variables=init
        )
        self.timings["train_seconds"] += time.perf_counter() - t0
        val_acc = (
            None
            if self.validation is None
            else evaluate(predictor_for(self._apply_fn(), self.model), self.validation)
        )
        entry = {
            "round": self.store.rounds,
            "version": self.store.version,
            "labels": n_labelled,
            "val_accuracy": val_acc,
            "strategy": self.store.last_strategy,
            **facts,
        }
        old = self.store.model_path
        if self.run_dir is not None:
            rel = f"models/round_{self.store.rounds:04d}_v{self.store.version}"
            target = self.run_dir / rel
            if target.exists():  # an unjournaled leftover of a crash: nothing refers to it
                shutil.rmtree(target)
            save_model(self.model, target)
            entry["path"] = rel
        self.store.record_model(entry)
        if self.run_dir is not None and old and old != entry["path"]:
            shutil.rmtree(self.run_dir / old, ignore_errors=True)

    # ------------------------------------------------------------- persistence
    def _state(self, folder: Path) -> dict[str, Any]:
        """Every label, the unlabelled pool, the curve, the settings and the model.

        With a ``run_dir`` the run folder's journal is the state (the constructor replays
        it), so only the settings are written. A pending selection, whose labels were not
        given yet, is not kept: its rows are back in the pool.
        """
        from ml_adv.rundir import json_safe

        if self.run_dir is not None:
            return {"journal": True}
        arrays = {}
        if self.store.num_labelled:
            arrays["labelled_x"], arrays["labelled_y"] = self.store.labelled()
        if self.store.pool_size:
            arrays["pool_x"] = self.store.pool_x[self.store.pool_labels < 0]
        np.savez(folder / "labels.npz", **arrays)
        if isinstance(self.model, TrainedModel):
            save_model(self.model, folder / "model")
        return json_safe(
            {
                "journal": False,
                "curve": self.store.curve,
                "settings": self.store.settings,
                "budget_used": None if self.budget is None else self.budget.used,
                "switches": self.switches,
                "timings": self.timings,
            }
        )

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        if state["journal"]:
            return
        with np.load(folder / "labels.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if "labelled_x" in arrays:
            self.store.add_labeled(arrays["labelled_x"], arrays["labelled_y"].astype(np.int32))
        if "pool_x" in arrays:
            self.store.add_unlabeled(arrays["pool_x"])
        self.store.curve, self.store.settings = state["curve"], state["settings"]
        self._apply_settings()
        if self.budget is not None and state["budget_used"] is not None:
            self.budget.used = float(state["budget_used"])
        self.switches, self.timings = state["switches"], state["timings"]
        if (folder / "model").is_dir():
            model = load_model(folder / "model")
            self._spec, self.model, self._num_classes = model.spec, model, model.spec.num_classes

    def _apply_settings(self) -> None:
        settings = self.store.settings
        b = settings.get("budget")
        self.budget = None
        if b and b["enabled"]:
            self.budget = Budget(b["total"], b.get("costs"), trim=b["trim"])
            self.budget.used = float(np.sum(self.budget.cost_of(self.store.label_order)))
        self.threshold = settings.get("threshold", {}).get("value")
        a = settings.get("adaptive")
        self.adaptive = a if a and a["enabled"] else None

    def _restore(self) -> None:
        self._apply_settings()
        path = self.store.model_path
        if path is None:
            return
        model = load_model(self.run_dir / path)
        if self._spec is not None and model.spec.to_dict() != self._spec.to_dict():
            raise CheckpointError(
                f"run_dir: {self.run_dir} holds a {model.spec.architecture} model that differs "
                "from the requested one; use another run_dir"
            )
        if self._spec is None and model.spec.architecture != self._arch:
            raise CheckpointError(
                f"run_dir: {self.run_dir} holds a {model.spec.architecture!r} model, "
                f"got architecture={self._arch!r}; use another run_dir"
            )
        self._spec, self.model, self._num_classes = model.spec, model, model.spec.num_classes


def _as_dataset(name: str, data) -> ArrayDataset:
    if isinstance(data, ArrayDataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"{name}: expected an ArrayDataset or an (x, y) pair, got {describe(data)}")
    try:
        return ArrayDataset(data[0], data[1], name=name)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from exc
