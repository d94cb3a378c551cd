"""ml_adv: training, ensembles, active learning and domain adaptation on JAX/Flax.

Public names are imported lazily (PEP 562 ``__getattr__``) so that
``import ml_adv`` stays fast and does not pull in TFDS, nevergrad or matplotlib
until they are used.

Example:
    >>> from ml_adv import AdvancedCustomModelTrainer
    >>> trainer = AdvancedCustomModelTrainer(architecture_type="cnn")
    >>> trainer.architecture_type
    'cnn'
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    # product API (SEED.md)
    "AdvancedCustomModelTrainer": "ml_adv.trainer.facade",
    "AdvancedTrainingStrategy": "ml_adv.trainer.facade",
    "TrainingResult": "ml_adv.trainer.facade",
    "AdvancedModelArchitecture": "ml_adv.models.architecture",
    "AdvancedActiveLearning": "ml_adv.active_learning.facade",
    "AdvancedModelEnsemble": "ml_adv.ensembles.facade",
    "AdvancedHyperparameterOptimizer": "ml_adv.hpo.facade",
    "AdvancedDomainAdaptation": "ml_adv.domain_adaptation.facade",
    "SearchSpace": "ml_adv.hpo.space",
    "Study": "ml_adv.hpo.study",
    # functional core
    "ArrayDataset": "ml_adv.data.dataset",
    "load_dataset": "ml_adv.data.catalog",
    "load_digits": "ml_adv.data.builtin",
    "load_digits_m": "ml_adv.data.builtin",
    "load_tfds": "ml_adv.data.tfds_loader",
    "ModelSpec": "ml_adv.models.registry",
    "make_spec": "ml_adv.models.registry",
    "TrainConfig": "ml_adv.training.config",
    "TrainState": "ml_adv.training.state",
    "TrainedModel": "ml_adv.training.trained_model",
    "fit": "ml_adv.training.loop",
    "fit_stacked": "ml_adv.training.stacked",
    "StackedFitResult": "ml_adv.training.stacked",
    "Run": "ml_adv.rundir",
    "Estimator": "ml_adv.estimator",
    "FitResult": "ml_adv.training.loop",
    "RunCheckpointer": "ml_adv.checkpointing",
    "RunDirectory": "ml_adv.rundir",
    "errors": "ml_adv.errors",
    "use_cpu_cores": "ml_adv.devices",
}

__all__ = sorted(_EXPORTS)

if os.environ.get("ML_ADV_CPU_DEVICES"):
    # One JAX device per core, set before JAX's backend starts (see ``use_cpu_cores``).
    importlib.import_module("ml_adv.devices").use_cpu_cores(os.environ["ML_ADV_CPU_DEVICES"])


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ml_adv' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if name == "errors" else getattr(module, name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ml_adv.active_learning.facade import AdvancedActiveLearning
    from ml_adv.checkpointing import RunCheckpointer
    from ml_adv.data.builtin import load_digits, load_digits_m
    from ml_adv.data.catalog import load_dataset
    from ml_adv.data.dataset import ArrayDataset
    from ml_adv.data.tfds_loader import load_tfds
    from ml_adv.devices import use_cpu_cores
    from ml_adv.domain_adaptation.facade import AdvancedDomainAdaptation
    from ml_adv.ensembles.facade import AdvancedModelEnsemble
    from ml_adv.estimator import Estimator
    from ml_adv.hpo.facade import AdvancedHyperparameterOptimizer
    from ml_adv.hpo.space import SearchSpace
    from ml_adv.hpo.study import Study
    from ml_adv.models.architecture import AdvancedModelArchitecture
    from ml_adv.models.registry import ModelSpec, make_spec
    from ml_adv.rundir import Run, RunDirectory
    from ml_adv.trainer.facade import (
        AdvancedCustomModelTrainer,
        AdvancedTrainingStrategy,
        TrainingResult,
    )
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import FitResult, fit
    from ml_adv.training.stacked import StackedFitResult, fit_stacked
    from ml_adv.training.state import TrainState
    from ml_adv.training.trained_model import TrainedModel
