"""Objectives: what a trial computes for one configuration.

``TrainingObjective`` trains a candidate with ``ml_adv.fit`` on a training part and
scores it on a validation split carved from the *training* data (never the test
split), so the selected configuration's test score stays an honest estimate.
``FunctionObjective`` wraps any ``config -> score`` callable.

``run_trial`` is the unit of work: a picklable top-level function (so trials run on a
process pool or a dask cluster) that never raises: an exception or a non-finite loss is
returned as a failed trial with its error, and the study goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ml_adv.errors import ConfigError, DataError, describe
from ml_adv.hpo.space import Categorical, SearchSpace

MODEL_KEYS = ("architecture", "size")


@functools.cache
def train_fields() -> frozenset[str]:
    """``TrainConfig`` field names (imported on first use, so ``run_trial`` of a function
    objective never imports the training core in a worker process)."""
    from ml_adv.training.config import TrainConfig

    return frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _default_config():
    from ml_adv.training.config import TrainConfig

    return TrainConfig()


@dataclasses.dataclass
class TrainingObjective:
    """Train a configuration with ``fit`` and return its validation score (higher is better).

    Attributes:
        views: architecture -> ``(train, val)``; the key ``"*"`` serves any architecture.
        base_config: the ``TrainConfig`` that trial configs override.
        architecture, size: used when the space does not choose them.
        model_overrides: fixed model-config overrides (a trial's model fields win).
        metric: a validation metric recorded by ``fit`` (``val_accuracy``, maximised).
        data_name: a description of the data, recorded in the journal header.
    """

    views: dict[str, tuple[Any, Any]]  # ArrayDataset pairs
    base_config: Any = dataclasses.field(default_factory=_default_config)  # a TrainConfig
    architecture: str = "cnn"
    size: str = "tiny"
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    metric: str = "val_accuracy"
    data_name: str = "data"

    @classmethod
    def from_data(
        cls,
        data,
        *,
        architectures: tuple[str, ...] = ("cnn",),
        validation_split: float = 0.2,
        split_seed: int = 0,
        download: bool = True,
        **kwargs: Any,
    ) -> TrainingObjective:
        """Carve ``(train, val)`` from the training split of ``data`` (a dataset name or a dataset).

        A name with views (``digits``, ``mnist``, ``fashion_mnist``) gives each architecture
        its view (images, rows, patches, tokens), all split with the same seed, so every
        architecture sees the same examples. ``download``: fetch a missing named dataset.
        """
        from ml_adv.data import ArrayDataset, load_dataset
        from ml_adv.data.catalog import view_for

        if (
            isinstance(validation_split, bool)
            or not isinstance(validation_split, (int, float))
            or not 0 < validation_split < 1
        ):
            raise ConfigError(
                f"validation_split: expected a number in (0, 1), got {describe(validation_split)}"
            )
        fractions = (1 - validation_split, validation_split)
        if isinstance(data, str):
            names = {a: view_for(data, a) for a in architectures}
            views = {
                a: load_dataset(n, split="train", download=download).split(
                    fractions, seed=split_seed
                )
                for a, n in names.items()
            }
        elif isinstance(data, ArrayDataset):
            views = {"*": data.split(fractions, seed=split_seed)}
        else:
            raise DataError(
                f"data: expected a dataset name or an ArrayDataset, got {describe(data)}"
            )
        kwargs.setdefault("architecture", architectures[0])
        return cls(views=views, data_name=data if isinstance(data, str) else data.name, **kwargs)

    # -------------------------------------------------------------- validation
    def data_for(self, architecture: str):
        if architecture in self.views:
            return self.views[architecture]
        if "*" in self.views:
            return self.views["*"]
        raise ConfigError(
            f"architecture: no data view for {architecture!r}; have {sorted(self.views)}"
        )

    def check_space(self, space: SearchSpace) -> None:
        """Reject a space this objective cannot train, before anything trains."""
        from ml_adv.models import ARCHITECTURES

        archs = _choices(space, "architecture", self.architecture)
        sizes = _choices(space, "size", self.size)
        model_fields: set[str] | None = None
        for arch in archs:
            entry = ARCHITECTURES.get(arch, argument="architecture")
            train, _ = self.data_for(arch)
            if train.input_kind not in entry.input_kinds:
                raise ConfigError(
                    f"architecture: {arch!r} accepts {list(entry.input_kinds)} inputs, "
                    f"the data is {train.input_kind!r}"
                )
            for size in sizes:
                if size not in entry.sizes:
                    raise ConfigError(
                        f"size: expected one of {sorted(entry.sizes)} for {arch!r}, got {size!r}"
                    )
            fields = {f.name for f in dataclasses.fields(entry.config_cls)} - {"num_classes"}
            model_fields = fields if model_fields is None else model_fields & fields
        for name in space.names:
            if (
                name not in MODEL_KEYS
                and name not in train_fields()
                and name not in (model_fields or set())
            ):
                raise ConfigError(
                    f"space: parameter {name!r} is neither a TrainConfig field nor a model option "
                    f"of every architecture in {archs}; expected one of "
                    f"{sorted(train_fields() | (model_fields or set()))}"
                )
        if "batch_size" in space:
            largest = max(
                space["batch_size"].grid(2)
                if not isinstance(space["batch_size"], Categorical)
                else space["batch_size"].choices
            )
            smallest = min(len(self.data_for(a)[0]) for a in archs)
            if largest > smallest:
                raise ConfigError(
                    f"space['batch_size']: expected at most the training part's size ({smallest}), "
                    f"got up to {largest}"
                )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "training",
            "data": self.data_name,
            "architecture": self.architecture,
            "size": self.size,
            "metric": self.metric,
            "base_config": self.base_config.to_dict(),
            "model_overrides": dict(self.model_overrides),
            "train_examples": {a: len(t) for a, (t, _) in sorted(self.views.items())},
        }

    # --------------------------------------------------------------- training
    def build(self, config: Mapping[str, Any]):
        """``(spec, train_config, train, val)`` for one trial configuration."""
        from ml_adv.models.registry import make_spec

        arch = config.get("architecture", self.architecture)
        train, val = self.data_for(arch)
        model_fields = {
            **self.model_overrides,
            **{k: v for k, v in config.items() if k not in train_fields() and k not in MODEL_KEYS},
        }
        spec = make_spec(
            arch,
            input_shape=train.example_shape,
            input_kind=train.input_kind,
            num_classes=max(train.num_classes, val.num_classes),
            size=config.get("size", self.size),
            **model_fields,
        )
        train_config = self.base_config.replace(
            **{k: v for k, v in config.items() if k in train_fields()}
        )
        return spec, train_config, train, val

    def __call__(
        self, config: Mapping[str, Any], epoch_callback: Callable | None = None
    ) -> dict[str, Any]:
        from ml_adv.rundir import Run
        from ml_adv.training.loop import EpochCallback, fit

        spec, train_config, train, val = self.build(config)
        hooks = [EpochCallback(epoch_callback)] if epoch_callback is not None else []
        result = fit(spec, train, train_config, val=val, run=Run(progress=False), hooks=hooks)
        if not result.history:
            raise ConfigError("trial: training ran no epoch")
        restored = train_config.early_stopping and train_config.restore_best and result.best_epoch
        final = result.history[(result.best_epoch - 1) if restored else -1]
        metrics = {
            k: final[k]
            for k in ("train_loss", "val_loss", "val_accuracy", self.metric)
            if k in final
        }
        metrics.update(epochs_run=len(result.history), best_epoch=result.best_epoch)
        return {"score": float(final[self.metric]), "metrics": metrics}


@dataclasses.dataclass
class FunctionObjective:
    """Any ``fn(config) -> score`` (higher is better; ``mode="min"`` for a loss)."""

    fn: Callable[[dict[str, Any]], float]
    mode: str = "max"

    def __post_init__(self):
        if not callable(self.fn):
            raise ConfigError(
                f"objective: expected a callable config -> score, got {describe(self.fn)}"
            )
        if self.mode not in ("max", "min"):
            raise ConfigError(f"mode: expected 'max' or 'min', got {self.mode!r}")

    def check_space(self, space: SearchSpace) -> None:
        """Any space is acceptable to a user function."""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "function",
            "fn": getattr(self.fn, "__qualname__", type(self.fn).__name__),
            "mode": self.mode,
        }

    def __call__(
        self, config: Mapping[str, Any], epoch_callback: Callable | None = None
    ) -> dict[str, Any]:
        value = float(self.fn(dict(config)))
        return {"score": value if self.mode == "max" else -value, "metrics": {"value": value}}


def run_trial(objective, config: dict[str, Any], pruner=None, reference=()) -> dict[str, Any]:
    """Evaluate ``config``; returns ``{status, score, metrics, intermediate, error, seconds}``.

    ``status`` is ``"ok"``, ``"pruned"`` (stopped by ``pruner`` on its intermediate
    scores) or ``"failed"`` (an exception, or a non-finite score or loss).
    """
    started = time.perf_counter()
    intermediate: list[float] = []
    pruned: list[bool] = []
    metric = getattr(objective, "metric", None)

    def on_epoch(record: dict[str, Any]) -> bool:
        value = record.get(metric)
        intermediate.append(float(value) if value is not None else float("nan"))
        stop = pruner is not None and pruner.should_prune(
            len(intermediate), intermediate[-1], reference
        )
        pruned.append(stop)
        return stop

    out: dict[str, Any] = {"status": "ok", "score": None, "metrics": {}, "error": None}
    try:
        result = objective(config, epoch_callback=on_epoch if metric else None)
        out.update(score=result["score"], metrics=result["metrics"])
        values = [result["score"], *(v for v in result["metrics"].values() if isinstance(v, float))]
        if not all(math.isfinite(v) for v in values):
            out.update(status="failed", error=f"non-finite score or loss: {result['metrics']}")
        elif any(pruned):
            out.update(status="pruned", score=intermediate[-1])
    except Exception as exc:  # noqa: BLE001 - a failing trial is recorded, the study goes on
        out.update(
            status="failed",
            score=None,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=3),
        )
    out["intermediate"] = intermediate
    out["seconds"] = round(time.perf_counter() - started, 4)
    return out


def _choices(space: SearchSpace, name: str, default: str) -> tuple:
    if name not in space:
        return (default,)
    param = space[name]
    if not isinstance(param, Categorical):
        raise ConfigError(
            f"space[{name!r}]: expected a Categorical parameter, got {type(param).__name__}"
        )
    return param.choices
