"""SEED.md: Integration Guide > Basic Integration.

The four components set up as SEED.md's pipeline does: a Transformer trained on the digits
(pixel tokens) joins a weighted ensemble, the active learner receives an unlabelled pool,
and domain adaptation receives its source (grey digits, digits_m_source) and target (digits
on photos, digits_m), both as pixel tokens. Then each component does one thing with what it
was given.

Run: python examples/basic_integration.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common

from ml_adv import (
    AdvancedActiveLearning,
    AdvancedCustomModelTrainer,
    AdvancedDomainAdaptation,
    AdvancedModelEnsemble,
)


def main() -> dict:
    training_data = {
        "data": _common.digits("digits_tokens"),
        "validation_data": _common.digits("digits_tokens", "val"),
        "test_data": _common.digits("digits_tokens", "test"),
        "epochs": _common.budget(1, 6),
    }
    unlabeled_data = _common.digits_m_tokens("target_train").x
    source_data = _common.digits_m_tokens("source_train")
    target_data = _common.digits_m_tokens("target_train")

    # Initialize ML components
    trainer = AdvancedCustomModelTrainer(
        architecture_type="transformer", size=_common.SIZE, run_root=_common.RUNS
    )
    ensemble = AdvancedModelEnsemble(combination_method="weighted")
    active_learning = AdvancedActiveLearning(sampling_strategy="uncertainty")
    domain_adaptation = AdvancedDomainAdaptation(adaptation_method="fine_tuning")

    # Start ML pipeline
    async def start_ml_pipeline():
        # Train custom model
        training_result = await trainer.train_custom_model(training_data)

        # Create ensemble
        ensemble.add_model(training_result.model, weight=0.5)

        # Setup active learning
        active_learning.add_unlabeled_data(unlabeled_data)

        # Setup domain adaptation
        domain_adaptation.set_source_domain(source_data)
        domain_adaptation.set_target_domain(target_data)

        return {
            "trainer": trainer,
            "ensemble": ensemble,
            "active_learning": active_learning,
            "domain_adaptation": domain_adaptation,
        }

    components = asyncio.run(start_ml_pipeline())

    # What each component can now do with what it was given.
    test = _common.digits("digits_tokens", "test")
    model = components["ensemble"].models[0]
    accuracy = float((components["ensemble"].predict(test.x) == test.y).mean())
    print(f"trainer: {components['trainer'].get_training_metrics()['runs']} run(s)")
    print(f"ensemble of {len(components['ensemble'])}: test accuracy {accuracy:.3f}")
    stats = components["active_learning"].get_active_learning_statistics()
    print(f"active learning: {stats['unlabelled']} unlabelled samples in the pool")
    similarity = components["domain_adaptation"].get_domain_similarity(model)
    print(f"domain adaptation: source/target similarity in the model's features {similarity:.3f}")
    return components


if __name__ == "__main__":
    main()
