"""SEED.md: Advanced Domain Adaptation > Usage.

Fine-tuning a CNN trained on digits_m_source (grey digits on black) to digits_m (digits
blended with colour photos): ten labelled target digits per class train it, the target
test split scores it. Then the domain similarity (SEED.md's API Reference) before and after.

Run: python examples/domain_adaptation.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedDomainAdaptation


def main() -> dict:
    source_model = _common.trained_model("cnn", "source")
    source_domain_data = _common.digits_m("source_train")
    labelled_target, target_domain_data = _common.per_class(
        _common.digits_m("target_train"), _common.budget(2, 10)
    )

    # Initialize domain adaptation
    da = AdvancedDomainAdaptation(adaptation_method="fine_tuning", steps=_common.budget(10, 300))

    # Set source and target domains
    da.set_source_domain(source_domain_data, test=_common.digits_m("source_test"))
    da.set_target_domain(
        target_domain_data, labeled=labelled_target, test=_common.digits_m("target_test")
    )

    # Adapt model
    adapted_model = da.adapt_model(source_model)

    # Evaluate adaptation
    evaluation = da.evaluate_adaptation(adapted_model)
    _common.show("evaluation", evaluation)

    # Get domain adaptation metrics
    metrics = da.get_domain_adaptation_metrics()
    print(
        f"{len(metrics['runs'])} run(s); MMD similarity of the domains in the unadapted "
        f"model's features {metrics['similarity_unadapted']['mmd_similarity']:.3f}, "
        f"in the adapted model's {da.get_domain_similarity():.3f}"
    )
    return metrics


if __name__ == "__main__":
    main()
