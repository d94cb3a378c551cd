"""``TrainedModel``: a trained network you can predict with, save and load.

It pairs a ``ModelSpec`` (how to rebuild the module from the registry) with
its variables. ``save`` writes an orbax checkpoint of the variables plus the
spec as JSON; ``load`` rebuilds the module from the registry and restores the
variables into it, so no code is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ml_adv.checkpointing import load_meta, load_pytree, save_pytree
from ml_adv.data.dataset import ArrayDataset, check_labels_below, validate_features
from ml_adv.errors import CheckpointError, DataError
from ml_adv.training.steps import (
    classification_metrics,
    predict_logits_host,
    softmax_probabilities,
)

FORMAT = "ml_adv.TrainedModel/1"


@functools.lru_cache(maxsize=64)
def _module_for(spec):
    return spec.build()


@dataclasses.dataclass
class TrainedModel:
    """A model description plus trained variables.

    Attributes:
        spec: the ``ModelSpec``.
        variables: ``{'params': ..., **model_state}`` as used by ``module.apply``.
        model_id: a unique id (used by the trainer's registry and by ensembles).
        metrics: evaluation metrics recorded at training time.
        mixed_precision: evaluate in bfloat16, as trained.
        lineage: what this model is a version of: every model one
            ``AdvancedCustomModelTrainer`` trains shares its id, so an ensemble can swap an
            older version for a retrained one (``AdvancedModelEnsemble.update_model(model)``).
    """

    spec: Any
    variables: dict[str, Any]
    model_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    mixed_precision: bool = False
    lineage: str | None = None

    @property
    def module(self):
        # One module object per spec: its bound ``apply`` is then the same static argument of
        # the jitted prediction on every call (a fresh module recompiled it each time).
        try:
            return _module_for(self.spec)
        except TypeError:  # an unhashable spec: build afresh
            return self.spec.build()

    @property
    def apply_fn(self):
        return self.module.apply

    @property
    def params(self):
        return self.variables["params"]

    @property
    def architecture(self) -> str:
        return self.spec.architecture

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def _inputs(self, x) -> np.ndarray:
        if isinstance(x, ArrayDataset):
            x = x.x
        arr = validate_features("x", x, self.spec.input_kind)  # integer images/features -> float32
        self.spec.validate_inputs(arr)
        return arr

    def logits(self, x, *, batch_size: int = 256) -> np.ndarray:
        """Float32 logits ``[N, num_classes]`` for inputs ``x`` (array or ArrayDataset)."""
        arr = self._inputs(x)
        return predict_logits_host(
            self.apply_fn,
            self.variables,
            arr,
            chunk=batch_size,
            mixed_precision=self.mixed_precision,
        )

    def predict_proba(self, x, *, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``[N, num_classes]``."""
        return softmax_probabilities(self.logits(x, batch_size=batch_size))

    def predict(self, x, *, batch_size: int = 256) -> np.ndarray:
        """Predicted class ids ``[N]``."""
        return np.argmax(self.logits(x, batch_size=batch_size), axis=-1).astype(np.int32)

    def evaluate(self, dataset: ArrayDataset) -> dict[str, float]:
        """Accuracy and mean NLL on a labelled dataset."""
        if not isinstance(dataset, ArrayDataset):
            raise DataError(f"dataset: expected an ArrayDataset, got {type(dataset).__name__}")
        check_labels_below("dataset.y", dataset.y, self.num_classes)  # else a silent NaN loss
        return classification_metrics(self.logits(dataset), dataset.y)

    def save(self, path: str | Path, *, overwrite: bool = False) -> str:
        """Write the model to directory ``path`` (new or empty); returns the absolute path.

        ``overwrite=True`` first removes a model saved there before (and only that: a
        folder holding anything else raises ``CheckpointError``), so a script can rerun.
        """
        from ml_adv.errors import check_bool
        from ml_adv.rundir import json_safe

        target = Path(path)
        if check_bool("overwrite", overwrite) and target.is_dir() and any(target.iterdir()):
            try:
                previous = load_meta(target).get("format")
            except Exception:  # noqa: BLE001 - whatever is there, it is not our model
                previous = None
            if previous != FORMAT:
                raise CheckpointError(
                    f"path: overwrite=True replaces only a model saved by TrainedModel.save, "
                    f"got {target}, which holds something else"
                )
            shutil.rmtree(target)
        meta = {
            "format": FORMAT,
            "spec": self.spec.to_dict(),
            "model_id": self.model_id,
            "metrics": json_safe(self.metrics),  # strict JSON: a missing figure is null, not NaN
            "mixed_precision": self.mixed_precision,
            "lineage": self.lineage,
        }
        save_pytree(path, self.variables, meta)
        return str(Path(path).absolute())

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        """Rebuild a model saved with ``save`` (architecture from the registry, weights from
        orbax)."""
        from ml_adv.models.registry import ModelSpec

        meta = load_meta(path)
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"path: expected a model saved by TrainedModel.save ({FORMAT}), "
                f"got {meta.get('format')!r}"
            )
        spec = ModelSpec.from_dict(meta["spec"])
        module = spec.build()
        abstract = jax.eval_shape(
            lambda: module.init(jax.random.PRNGKey(0), spec.example_input(), train=False)
        )
        variables = load_pytree(path, dict(abstract))
        return cls(
            spec,
            dict(variables),
            meta["model_id"],
            dict(meta.get("metrics", {})),
            bool(meta["mixed_precision"]),
            meta.get("lineage"),  # absent from models saved before it existed
        )
