"""SEED.md: Advanced Domain Adaptation > Adaptation Methods (Fine-tuning Adaptation, Domain
Adversarial Adaptation, Transfer Learning Adaptation).

``source_model`` is a CNN trained on digits_m_source (grey digits on black); the target
domain is digits_m (the same kind of digits blended with colour photos, the MNIST-M
construction). Fine-tuning and transfer learning train on a few labelled target digits;
domain-adversarial training (DANN) uses the unlabelled target images only. Each adapted
model is scored on the target test split against the unadapted one.

Run: python examples/adaptation_methods.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedDomainAdaptation


def adapt(adaptation_method: str, source_model):
    da = AdvancedDomainAdaptation(
        adaptation_method=adaptation_method, steps=_common.budget(10, 300)
    )
    labelled, unlabelled = _common.per_class(
        _common.digits_m("target_train"), _common.budget(2, 10)
    )
    da.set_source_domain(_common.digits_m("source_train"), test=_common.digits_m("source_test"))
    da.set_target_domain(unlabelled, labeled=labelled, test=_common.digits_m("target_test"))
    adapted_model = da.adapt_model(source_model)
    return da.evaluate_adaptation(adapted_model)


def main() -> dict[str, float]:
    source_model = _common.trained_model("cnn", "source")
    accuracies = {}
    for method in ("fine_tuning", "domain_adversarial", "transfer_learning"):
        evaluation = adapt(method, source_model)
        accuracies[method] = evaluation["target_accuracy"]
        print(
            f"{method}: target accuracy {evaluation['target_accuracy']:.3f} "
            f"(unadapted {evaluation['unadapted_target_accuracy']:.3f}), source accuracy "
            f"{evaluation['source_accuracy']:.3f}"
        )
    return accuracies


if __name__ == "__main__":
    main()
