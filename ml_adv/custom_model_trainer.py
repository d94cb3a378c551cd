"""SEED import path ``ml_adv.custom_model_trainer``: re-exports only."""

from ml_adv.hpo.facade import AdvancedHyperparameterOptimizer
from ml_adv.models.architecture import AdvancedModelArchitecture
from ml_adv.trainer.facade import (
    AdvancedCustomModelTrainer,
    AdvancedTrainingStrategy,
    TrainingResult,
)
from ml_adv.training.trained_model import TrainedModel

__all__ = [
    "AdvancedCustomModelTrainer",
    "AdvancedHyperparameterOptimizer",
    "AdvancedModelArchitecture",
    "AdvancedTrainingStrategy",
    "TrainedModel",
    "TrainingResult",
]
