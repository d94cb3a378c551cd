"""Domain adaptation: gradient reversal, DANN, fine-tuning with gradual unfreezing,
transfer from a pretrained encoder, domain similarity; ``AdvancedDomainAdaptation``
(the SEED.md import path ``ml_adv.domain_adaptation``).

Names resolve lazily (PEP 562, as in ``ml_adv.hpo``): importing the package, or one light
module of it such as ``grl``, does not import the training stack until a name that needs it
is used. ``workflow`` is what ``ml-adv adapt`` runs, callable from Python.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "AdvancedDomainAdaptation": "ml_adv.domain_adaptation.facade",
    "ADAPTATION_METHODS": "ml_adv.domain_adaptation.methods",
    "gradient_reversal": "ml_adv.domain_adaptation.grl",
    "grl_schedule": "ml_adv.domain_adaptation.grl",
    "DANNModel": "ml_adv.domain_adaptation.dann",
    "fit_dann": "ml_adv.domain_adaptation.dann",
}
__all__ = [
    "ADAPTATION_METHODS",
    "AdvancedDomainAdaptation",
    "DANNModel",
    "fit_dann",
    "gradient_reversal",
    "grl_schedule",
]


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ml_adv.domain_adaptation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from ml_adv.domain_adaptation.dann import DANNModel, fit_dann
    from ml_adv.domain_adaptation.facade import AdvancedDomainAdaptation
    from ml_adv.domain_adaptation.grl import gradient_reversal, grl_schedule
    from ml_adv.domain_adaptation.methods import ADAPTATION_METHODS
