"""SEED.md: Performance Optimization > Domain Adaptation Optimization.

Fine-tuning a CNN trained on digits_m_source to digits_m with gradual unfreezing (layer
groups thawed from the head down), a cosine learning-rate schedule, and early stopping on
target validation accuracy (a fifth of the labelled target digits, held out).

Run: python examples/domain_adaptation_optimization.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedDomainAdaptation


def main() -> dict:
    source_model = _common.trained_model("cnn", "source")
    labelled, unlabelled = _common.per_class(
        _common.digits_m("target_train"), _common.budget(3, 10)
    )

    # Optimize domain adaptation
    da = AdvancedDomainAdaptation(adaptation_method="fine_tuning", steps=_common.budget(10, 400))
    da.set_gradual_unfreezing(enabled=True)
    da.set_learning_rate_scheduling(enabled=True)  # cosine decay (or a schedule name)
    da.set_early_stopping(patience=10)

    da.set_source_domain(_common.digits_m("source_train"), test=_common.digits_m("source_test"))
    da.set_target_domain(unlabelled, labeled=labelled, test=_common.digits_m("target_test"))
    adapted_model = da.adapt_model(source_model)
    evaluation = da.evaluate_adaptation(adapted_model)
    run = da.get_domain_adaptation_metrics()["runs"][-1]
    print(
        f"schedule {run['config']['schedule']}, early stopping {run['config']['early_stopping']} "
        f"(patience {run['config']['patience']}), gradual unfreezing {da.gradual}"
    )
    print(
        f"target accuracy {evaluation['target_accuracy']:.3f} (unadapted "
        f"{evaluation['unadapted_target_accuracy']:.3f})"
    )
    return evaluation


if __name__ == "__main__":
    main()
