"""Domain adaptation: gradient reversal, DANN, fine-tuning with gradual unfreezing,
transfer from a pretrained encoder, domain similarity; ``AdvancedDomainAdaptation``."""

from ml_adv.domain_adaptation.grl import gradient_reversal, grl_schedule

__all__ = ["gradient_reversal", "grl_schedule"]
