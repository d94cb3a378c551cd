"""The SEED product API for training: ``AdvancedTrainingStrategy`` and
``AdvancedCustomModelTrainer``.

Thin stateful facades for scripts and notebooks. They hold data, history and
the registry of trained models and call the functional core (``fit``); no
numerics live here.

``training_data`` (the argument of ``train_custom_model``) is a dict of real
data plus hyper-parameters; ``ml_adv.trainer.training_data`` documents and
validates it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ml_adv.errors import (
    CheckpointError,
    ConfigError,
    MlAdvError,
    TrainingDivergedError,
    check_bool,
    check_positive,
    describe,
    unknown_name,
)
from ml_adv.estimator import Estimator
from ml_adv.hpo.methods import OPTIMIZATION_METHODS  # "none" plus ml_adv.hpo's search methods
from ml_adv.rundir import Run, RunDirectory, dumps
from ml_adv.trainer.training_data import (
    TRAIN_FIELDS,
    normalize_train_fields,
    resolve_training_data,
)
from ml_adv.training.config import TrainConfig
from ml_adv.training.loop import fit
from ml_adv.training.trained_model import TrainedModel


class AdvancedTrainingStrategy(Estimator):
    """Training hyper-parameters (SEED API), validated at construction.

    Args:
        learning_rate, batch_size, epochs, early_stopping: as in SEED.
        **options: any other ``TrainConfig`` field (optimizer, schedule, loss, patience ...).

    Example:
        >>> strategy = AdvancedTrainingStrategy(
        ...     learning_rate=1e-4, batch_size=32, epochs=100, early_stopping=True
        ... )
        >>> strategy.config.patience
        5
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        epochs: int = 10,
        early_stopping: bool = False,
        **options: Any,
    ):
        unknown = set(options) - set(TRAIN_FIELDS)
        if unknown:
            raise ConfigError(
                f"options: unknown training option(s) {sorted(unknown)}; expected some of "
                f"{list(TRAIN_FIELDS)}"
            )
        fields = normalize_train_fields(
            {
                "learning_rate": learning_rate,
                "batch_size": batch_size,
                "epochs": epochs,
                "early_stopping": early_stopping,
                **options,
            }
        )
        self.config = TrainConfig(**fields)

    def __getattr__(self, name: str) -> Any:
        if name != "config" and name in TRAIN_FIELDS:
            return getattr(self.config, name)
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()


@dataclasses.dataclass
class TrainingResult:
    """Outcome of ``train_custom_model``.

    ``success`` is False when training diverged (NaN loss); ``model`` then holds the
    last good checkpoint's weights if one was written, and ``error`` says what happened.
    """

    success: bool
    model: TrainedModel | None
    model_id: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: str | None
    error: str | None = None


class AdvancedCustomModelTrainer(Estimator):
    """Trains models of one architecture family and keeps a registry of them (SEED API).

    Args:
        architecture_type: "mlp", "cnn", "lstm", "transformer", "bert" (see ``ARCHITECTURES``).
        optimization_method: "none", or a search method of ``ml_adv.hpo`` ("bayesian", "genetic",
            "grid_search", "random", "population" ...): the search runs first on the validation
            split of the training data, then the best configuration is trained
            (``ml_adv.trainer.search``; the study is in ``metrics["hpo"]``).
        strategy: default ``AdvancedTrainingStrategy`` (overridden by keys of ``training_data``).
        size: model size variant ("tiny", "small", "base", ...).
        run_root: runs are written to ``run_root/<run_name>/``.

    Example:
        >>> from ml_adv.data import load_dataset
        >>> trainer = AdvancedCustomModelTrainer(architecture_type="cnn", size="tiny")
        >>> result = asyncio.run(trainer.train_custom_model({"data": "digits", "epochs": 2}))
        >>> test_images = load_dataset("digits", split="test")
        >>> result.model.predict(test_images).shape
        (359,)
    """

    def __init__(
        self,
        architecture_type: str = "cnn",
        optimization_method: str = "none",
        *,
        strategy: AdvancedTrainingStrategy | None = None,
        size: str = "small",
        run_root: str | Path = "runs",
    ):
        from ml_adv.models import ARCHITECTURES

        if not isinstance(architecture_type, str) or architecture_type not in ARCHITECTURES:
            raise unknown_name("architecture_type", architecture_type, ARCHITECTURES.names())
        if (
            not isinstance(optimization_method, str)
            or optimization_method not in OPTIMIZATION_METHODS
        ):
            raise unknown_name("optimization_method", optimization_method, OPTIMIZATION_METHODS)
        if strategy is not None and not isinstance(strategy, AdvancedTrainingStrategy):
            raise ConfigError(
                f"strategy: expected an AdvancedTrainingStrategy, got {describe(strategy)}"
            )
        self.architecture_type = architecture_type
        self.optimization_method = optimization_method
        self.strategy = strategy or AdvancedTrainingStrategy()
        if not isinstance(size, str) or size not in ARCHITECTURES.get(architecture_type).sizes:
            raise unknown_name("size", size, list(ARCHITECTURES.get(architecture_type).sizes))
        if isinstance(run_root, bool) or not isinstance(run_root, (str, Path)) or not str(run_root):
            raise ConfigError(f"run_root: expected a folder path, got {describe(run_root)}")
        self.size = size
        self.run_root = Path(run_root)
        self._overrides: dict[str, Any] = {}
        self._augment_fn = None
        self._resource_monitoring = False
        self._registry: dict[str, dict[str, Any]] = {}
        self.lineage = uuid.uuid4().hex[:12]  # shared by every model this trainer trains
        self._models: dict[str, TrainedModel] = {}
        self._history: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- settings
    def set_mixed_precision(self, enabled: bool = True) -> None:
        """bfloat16 compute with float32 master weights."""
        self._overrides["mixed_precision"] = check_bool("enabled", enabled)

    def set_gradient_accumulation(self, steps: int) -> None:
        """Accumulate gradients over ``steps`` micro-batches per optimizer update."""
        self._overrides["grad_accum_steps"] = check_positive("steps", steps)

    def set_distributed_training(self, enabled: bool = True) -> None:
        """Data-parallel training over all ``jax.devices()`` (batch sharded, params replicated)."""
        self._overrides["data_parallel"] = check_bool("enabled", enabled)

    def set_data_augmentation(self, enabled: bool = True, fn=None) -> None:
        """Augment training batches: ``fn(batch, key) -> batch``, or a default per input kind."""
        if fn is not None and not callable(fn):
            raise ConfigError(f"fn: expected a callable (batch, key) -> batch, got {describe(fn)}")
        self._augment_fn = (fn or "default") if check_bool("enabled", enabled) else None

    def set_resource_monitoring(self, enabled: bool = True) -> None:
        """Record wall time, peak host memory and device memory for each run."""
        self._resource_monitoring = check_bool("enabled", enabled)

    # ------------------------------------------------------------------ training
    async def train_custom_model(
        self, training_data: dict[str, Any], *, run_dir=None
    ) -> TrainingResult:
        """Train a model off the event loop (in a worker thread) and return a ``TrainingResult``."""
        return await asyncio.to_thread(self.train, training_data, run_dir=run_dir)

    def train(self, training_data: dict[str, Any], *, run_dir=None) -> TrainingResult:
        """Synchronous ``train_custom_model``. Bad input raises ``ml_adv.errors`` before compiling.

        ``run_dir``: the run's folder (a path, or a ``RunDirectory`` the caller opened, as the
        command line does); default ``run_root/<run_name>``.
        """
        hpo = None
        if (
            self.optimization_method != "none"
        ):  # search first (validation split of the training data)
            from ml_adv.trainer.search import search_before_training

            training_data, hpo = search_before_training(self, training_data)
        plan = resolve_training_data(
            training_data,
            architecture=self.architecture_type,
            base_config=self.strategy.config,
            settings=self._overrides,
            augment=self._augment_fn,
            default_size=self.size,
        )
        spec = self._spec(plan)
        rd = _open_run_directory(
            run_dir
            if run_dir is not None
            else self.run_root
            / (plan.run_name or _readable_run_name(self.architecture_type, plan.train.name))
        )
        started = time.perf_counter()
        fit_result, error = self._fit(spec, plan, rd, _replayed(hpo, plan.config.epochs))
        record, model, history = self._record(
            spec, plan, rd, fit_result, error, hpo, time.perf_counter() - started
        )
        if fit_result is not None:
            _write_run_outputs(rd, record, history)
        return TrainingResult(
            error is None,
            model,
            record["model_id"],
            record["metrics"],
            history,
            str(rd.path),
            error,
        )

    def check(self, training_data: dict[str, Any]) -> None:
        """Check ``training_data`` against this trainer's model (data, shapes, settings) without
        training or writing anything: what ``train`` would reject, raised now."""
        self._spec(
            resolve_training_data(
                training_data,
                architecture=self.architecture_type,
                base_config=self.strategy.config,
                settings=self._overrides,
                augment=self._augment_fn,
                default_size=self.size,
            )
        )

    def _spec(self, plan):
        """The model of ``plan``'s data, checked against its validation and test splits."""
        from ml_adv.models import AdvancedModelArchitecture

        train = plan.train
        spec = AdvancedModelArchitecture(
            self.architecture_type, size=plan.size, **plan.model_overrides
        ).design_architecture(
            plan.input_dim,
            plan.output_dim,
            input_shape=train.example_shape,
            input_kind=train.input_kind,
        )
        _check_against_model(spec, plan.val, plan.test)
        train.check_batch_size(plan.config.batch_size)  # before a run directory is made
        return spec

    def _fit(self, spec, plan, rd, schedule):
        """``(FitResult or None, error)``: a diverged run is reported, not raised."""
        train, val, test = plan.train, plan.val, plan.test
        meta = {"data": {"train": train.name, "val": val.name, "test": test.name if test else None}}
        try:
            return fit(
                spec, train, plan.config, val=val, run=Run(rd, meta=meta), hparam_schedule=schedule
            ), None
        except TrainingDivergedError as exc:
            return None, str(exc)
        except MlAdvError:
            _discard_if_unused(rd)  # bad input found by fit: leave no empty run behind
            raise

    def _record(self, spec, plan, rd, fit_result, error, hpo, wall: float):
        """The run's record (also kept in the registry and history), its model and its history."""
        config, model_id = plan.config, uuid.uuid4().hex[:12]
        if fit_result is not None:
            model = TrainedModel(
                spec, fit_result.state.variables(), model_id, mixed_precision=config.mixed_precision
            )
            metrics, history = (
                self._metrics(fit_result, model, plan.val, plan.test, wall),
                fit_result.history,
            )
        else:
            model = self._last_good_model(spec, config, rd.path, model_id)
            metrics, history = {"wall_seconds": wall}, rd.read_jsonl("metrics.jsonl")
        if hpo is not None:
            metrics["hpo"] = hpo
        if self._resource_monitoring:
            metrics["resources"] = _resources()
        if model is not None:
            model.metrics, model.lineage = metrics, self.lineage
        record = {
            "model_id": model_id,
            "lineage": self.lineage,
            "architecture": self.architecture_type,
            "spec": spec.to_dict(),
            "train_config": config.to_dict(),
            "run_dir": str(rd.path),
            "success": error is None,
            "metrics": metrics,
            "error": error,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        with self._lock:
            self._registry[model_id] = record
            if model is not None:
                self._models[model_id] = model
            self._history.append(record)
        return record, model, history

    # ------------------------------------------------------------- persistence
    def _state(self, folder: Path) -> dict[str, Any]:
        """The registry, the history, the set_* settings and every trained model
        (``models/<id>``).
        """
        from ml_adv.rundir import json_safe

        with self._lock:
            for model_id, model in self._models.items():
                model.save(folder / "models" / model_id)
            return json_safe(
                {
                    "registry": self._registry,
                    "history": self._history,
                    "overrides": self._overrides,
                    "resource_monitoring": self._resource_monitoring,
                    "augment_fn": None if self._augment_fn is None else describe(self._augment_fn),
                }
            )

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        self._registry, self._history = state["registry"], state["history"]
        self._overrides, self._resource_monitoring = (
            state["overrides"],
            state["resource_monitoring"],
        )
        for model_id in self._registry:
            if (folder / "models" / model_id).is_dir():
                self._models[model_id] = TrainedModel.load(folder / "models" / model_id)

    # ------------------------------------------------------------------ queries
    def get_model_registry(self) -> dict[str, Any]:
        """model_id -> record (architecture, spec, config, metrics, run_dir) of every
        trained model.
        """
        with self._lock:
            return {k: dict(v) for k, v in self._registry.items()}

    def get_model(self, model_id: str) -> TrainedModel | None:
        return self._models.get(model_id)

    def get_training_history(self) -> list[dict[str, Any]]:
        """One record per training run, oldest first."""
        with self._lock:
            return [dict(r) for r in self._history]

    def get_model_performance(self, model_id: str) -> dict[str, Any] | None:
        """Metrics of ``model_id``, or None if unknown."""
        record = self._registry.get(model_id)
        return None if record is None else dict(record["metrics"])

    def get_training_metrics(self) -> dict[str, Any]:
        """Metrics of the latest run plus aggregate counts."""
        with self._lock:
            runs = list(self._history)
        if not runs:
            return {"runs": 0}
        latest = runs[-1]
        return {
            "runs": len(runs),
            "successful_runs": sum(r["success"] for r in runs),
            "latest_model_id": latest["model_id"],
            **latest["metrics"],
        }

    def validate_system_integrity(self) -> bool:
        """Check the backend computes, every architecture builds, and every trained model's
        weights are finite.
        """
        from ml_adv.models import ARCHITECTURES, make_spec

        problems = []
        try:
            if float(jax.numpy.ones(4).sum()) != 4.0:
                problems.append("backend arithmetic is wrong")
        except Exception as exc:  # noqa: BLE001 - report, don't raise
            problems.append(f"backend unavailable: {exc}")
        for name in ARCHITECTURES.names():
            entry = ARCHITECTURES.get(name)
            try:
                kind = entry.input_kinds[0]
                shape = {
                    "features": (8,),
                    "image": (8, 8, 1),
                    "sequence": (None, 4),
                    "tokens": (None,),
                }[kind]
                spec = make_spec(
                    name, input_shape=shape, input_kind=kind, num_classes=3, size="tiny"
                )
                jax.eval_shape(
                    lambda s=spec: s.build().init(
                        jax.random.PRNGKey(0), s.example_input(2), train=False
                    )
                )
            except Exception as exc:  # noqa: BLE001
                problems.append(f"architecture {name!r} does not build: {exc}")
        for model_id, model in self._models.items():
            if not all(
                bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(model.variables)
            ):
                problems.append(f"model {model_id} has non-finite weights")
        self.integrity_problems = problems
        return not problems

    def generate_training_report(self) -> dict[str, Any]:
        """Summary of every run (best accuracy, timings); also written to
        ``run_root/training_report.json``.
        """
        runs = self.get_training_history()
        ok = [r for r in runs if r["success"]]
        best = max(
            ok,
            key=lambda r: r["metrics"].get("test_accuracy", r["metrics"].get("val_accuracy", 0)),
            default=None,
        )
        report = {
            "architecture_type": self.architecture_type,
            "optimization_method": self.optimization_method,
            "runs": len(runs),
            "successful_runs": len(ok),
            "failed_runs": len(runs) - len(ok),
            "best_model_id": best["model_id"] if best else None,
            "best_metrics": best["metrics"] if best else None,
            "hpo_studies": [r["metrics"]["hpo"] for r in runs if "hpo" in r["metrics"]],
            "system_integrity": self.validate_system_integrity(),
            "models": [
                {
                    "model_id": r["model_id"],
                    "success": r["success"],
                    "run_dir": r["run_dir"],
                    **{
                        k: r["metrics"].get(k)
                        for k in ("val_accuracy", "test_accuracy", "epochs_run", "wall_seconds")
                    },
                }
                for r in runs
            ],
        }
        self.run_root.mkdir(parents=True, exist_ok=True)
        (self.run_root / "training_report.json").write_text(dumps(report, indent=2))
        return report

    # ------------------------------------------------------------------ helpers
    def _last_good_model(self, spec, config, run_dir: Path, model_id: str) -> TrainedModel | None:
        """The weights of the last checkpoint written before training diverged (None if
        there is none).
        """
        from ml_adv.checkpointing import RunCheckpointer
        from ml_adv.training.setup import init_run

        ckpt = RunCheckpointer(run_dir / "checkpoints")
        try:
            # The run's own set-up, traced only for its shapes: the target always matches what
            # fit saved.
            target = jax.eval_shape(
                lambda: init_run(
                    spec, config, example_x=spec.example_input(), steps_per_epoch=1
                ).state.checkpoint_items()
            )
            # Newest intact checkpoint first: a damaged latest one falls back to best.
            for which in ("latest", "best"):
                if ckpt.latest_step(which) is None:
                    continue
                try:
                    items, _ = ckpt.restore(target, which=which)
                except CheckpointError as exc:
                    warnings.warn(
                        f"run_dir: the {which!r} checkpoint in {run_dir} is damaged, "
                        f"trying the next one ({str(exc)[:200]})",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    continue
                return TrainedModel(
                    spec,
                    {"params": items["params"], **items["model_state"]},
                    model_id,
                    mixed_precision=config.mixed_precision,
                )
            return None
        finally:
            ckpt.close()

    def _metrics(self, fit_result, model: TrainedModel, val, test, wall: float) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "epochs_run": len(fit_result.history),
            "best_epoch": fit_result.best_epoch,
            "stopped_early": fit_result.stopped_early,
            "compile_seconds": round(fit_result.compile_seconds, 3),
            "steps_per_second": round(fit_result.steps_per_second, 2),
            "wall_seconds": round(wall, 3),
            "nonfinite_steps": fit_result.nonfinite_steps,
            "resumed_from": fit_result.resumed_from,
        }
        if fit_result.history:
            metrics["train_loss"] = fit_result.history[-1]["train_loss"]
        for prefix, ds in (("val", val), ("test", test)):
            if ds is not None:
                metrics.update({f"{prefix}_{k}": v for k, v in model.evaluate(ds).items()})
        return metrics


def _resources() -> dict[str, Any]:
    out = {"peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    device = jax.local_devices()[0]  # another process's devices have no stats to read here
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats:
        out["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
    out["devices"] = [str(d) for d in jax.devices()]
    return out


def _discard_if_unused(rd: RunDirectory) -> None:
    """Clean a run directory in which none of the recorded artifacts was written yet."""
    recorded = rd.recorded()
    if not any((rd.path / rel).exists() for rel in (*recorded["files"], *recorded["trees"])):
        RunDirectory.clean(rd.path)  # removes the marker, and the folder if it created it


def _check_against_model(spec, val, test) -> None:
    """Validation and test data must fit the model too, checked before anything trains."""
    from ml_adv.data.dataset import check_labels_below

    for argument, ds in (("validation_data", val), ("test_data", test)):
        if ds is not None:
            spec.validate_inputs(ds.x, argument=f"{argument}.x")
            check_labels_below(f"{argument}.y", ds.y, spec.num_classes)


def _readable_run_name(architecture: str, data_name: str) -> str:
    """``<arch>-<data>-<YYYYmmdd-HHMMSS>-<4 hex>``: sortable, says what ran, unique per call."""
    base = data_name.split(":")[0].split("[")[0]  # "digits:train[0]" -> "digits"
    data = "".join(c if c.isalnum() or c in "-_" else "-" for c in base).strip("-") or "data"
    return f"{architecture}-{data}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _replayed(hpo: dict[str, Any] | None, epochs: int) -> list | None:
    """PBT's answer is a schedule of hyper-parameters: the segments the final model replays."""
    if hpo is None:
        return None
    from ml_adv.trainer.search import replay_schedule

    schedule = replay_schedule(hpo, epochs)
    if schedule is not None:
        hpo["replayed_schedule"] = [
            {"first_epoch": first, "values": values} for first, values in schedule
        ]
    return schedule


def _open_run_directory(run_dir) -> RunDirectory:
    """The run's ``RunDirectory`` (the caller's, or opened here), with the files ``fit`` writes
    recorded up front, so ``--fresh`` is complete whatever happens while they are written."""
    rd = RunDirectory.of(run_dir)
    for name in ("config.json", "metrics.jsonl"):
        rd.path_for(name)
    _ = rd.checkpoint_dir
    return rd


def _write_run_outputs(
    rd: RunDirectory, record: dict[str, Any], history: list[dict[str, Any]]
) -> None:
    """report.json (strict JSON) and plots/learning_curve.png in the run directory."""
    from ml_adv.plots import plot_learning_curves

    rd.write_report(record)
    if history:
        plot_learning_curves(history, rd.plot_path("learning_curve"), title=record["architecture"])
