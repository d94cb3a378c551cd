"""Ensembles: combination rules, diversity, calibration, learned weights, pruning,
stacking, stacked (vmapped) inference and the ``AdvancedModelEnsemble`` facade.

Submodules are imported where used (``from ml_adv.ensembles.combine import ...``); the
facade is importable from here, from ``ml_adv.model_ensemble`` and from ``ml_adv``.
"""

from ml_adv.ensembles.facade import AdvancedModelEnsemble

__all__ = ["AdvancedModelEnsemble"]
