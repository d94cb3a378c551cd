"""Seed import path (``from ml_adv.model_ensemble import AdvancedModelEnsemble``): re-exports
only."""

from ml_adv.ensembles.combine import COMBINATION_RULES
from ml_adv.ensembles.facade import AdvancedModelEnsemble

__all__ = ["AdvancedModelEnsemble", "COMBINATION_RULES"]
