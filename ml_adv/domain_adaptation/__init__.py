"""Domain adaptation: gradient reversal, DANN, fine-tuning with gradual unfreezing,
transfer from a pretrained encoder, domain similarity; ``AdvancedDomainAdaptation``
(the SEED.md import path ``ml_adv.domain_adaptation``)."""

from ml_adv.domain_adaptation.facade import AdvancedDomainAdaptation
from ml_adv.domain_adaptation.grl import gradient_reversal, grl_schedule
from ml_adv.domain_adaptation.methods import ADAPTATION_METHODS

__all__ = ["ADAPTATION_METHODS", "AdvancedDomainAdaptation", "gradient_reversal", "grl_schedule"]
