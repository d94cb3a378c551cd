"""SEED.md: Integration Guide > Advanced Integration.

All four components on one domain shift: BERT reads digits as pixel tokens; it is trained
on the source domain (digits_m_source: grey digits on black), adapted by DANN to the target
domain (digits_m: digits on colour photos, unlabelled), and both models form a weighted
ensemble. Active learning then labels target digits (a simulated annotator reveals their
true labels); each iteration updates the active learner's model, retrains BERT on the source
plus the target labels gathered so far, and puts it in the ensemble. Accuracies are on the
target test split.

Run: python examples/advanced_integration.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common
import numpy as np

from ml_adv import (
    AdvancedActiveLearning,
    AdvancedCustomModelTrainer,
    AdvancedDomainAdaptation,
    AdvancedModelEnsemble,
    ArrayDataset,
)

TARGET_TEST = "target_test"


def target_accuracy(model_or_ensemble) -> float:
    test = _common.digits_m_tokens(TARGET_TEST)
    return float((model_or_ensemble.predict(test.x) == test.y).mean())


async def advanced_ml_workflow(iterations: int, n_samples: int):
    source = _common.digits_m_tokens("source_train")
    initial, pool = _common.per_class(_common.digits_m_tokens("target_train"), 2)
    test = _common.digits_m_tokens(TARGET_TEST)
    domain_specific_data = {
        "data": source,
        "validation_data": _common.digits_m_tokens("source_val"),
        "test_data": test,
        "learning_rate": 5e-3,
        "epochs": _common.budget(1, 10),
    }
    initial_labeled_data, initial_labels = initial.x, initial.y
    large_unlabeled_dataset = pool.x
    human_labeling = _common.SimulatedAnnotator(pool.y)

    # Phase 1: Custom Model Training
    trainer = AdvancedCustomModelTrainer(
        architecture_type="bert", size=_common.size_for("bert"), run_root=_common.RUNS
    )
    training_result = await trainer.train_custom_model(domain_specific_data)

    # Phase 2: Domain Adaptation (SEED.md's block leaves out setting the domains). Quick mode:
    # one DANN epoch (8 steps of 32 over its 256 source examples): with two (10 steps), the
    # BERT's DANN epoch program was compiled twice.
    da = AdvancedDomainAdaptation(
        adaptation_method="domain_adversarial", steps=_common.budget(8, 150)
    )
    da.set_source_domain(source)
    da.set_target_domain(pool, test=test)  # the target's labels are not used
    adapted_model = da.adapt_model(training_result.model)

    # Phase 3: Ensemble Creation
    ensemble = AdvancedModelEnsemble(combination_method="weighted")
    ensemble.add_model(training_result.model, weight=0.4)
    ensemble.add_model(adapted_model, weight=0.6)
    source_accuracy = training_result.model.evaluate(_common.digits_m_tokens("source_test"))
    print(
        f"source test accuracy {source_accuracy['accuracy']:.3f}; target accuracy: source "
        f"model {target_accuracy(training_result.model):.3f}, "
        f"adapted {target_accuracy(adapted_model):.3f}, ensemble {target_accuracy(ensemble):.3f}"
    )

    # Phase 4: Active Learning Setup (starting from the adapted model: a BERT, as the data
    # are tokens)
    al = AdvancedActiveLearning(
        sampling_strategy="uncertainty",
        model=adapted_model,
        config=_common.active_learning_config(),
    )
    al.add_labeled_data(initial_labeled_data, initial_labels)
    al.add_unlabeled_data(large_unlabeled_dataset)
    labelled_x, labelled_y = [initial_labeled_data], [initial_labels]

    # Continuous improvement loop
    for iteration in range(iterations):
        selected_samples = al.select_samples(n_samples=n_samples)
        new_labels = await human_labeling(selected_samples)
        al.update_model(new_labels)

        # Retrain and update ensemble: the source data plus every target label so far.
        labelled_x.append(selected_samples.samples)
        labelled_y.append(new_labels)
        updated_data = dict(
            domain_specific_data,
            data=ArrayDataset(
                np.concatenate([source.x, *labelled_x]),
                np.concatenate([source.y, *labelled_y]),
                num_classes=10,
                input_kind="tokens",
                info=source.info,
            ),
        )
        updated_model = await trainer.train_custom_model(updated_data)
        # Replaces the member it is a newer version of: the first model, from the same trainer.
        ensemble.update_model(updated_model.model, weight=0.5)
        print(
            f"iteration {iteration + 1}: {human_labeling.labels_given} target labels; target "
            f"accuracy: active learner {target_accuracy(al.model):.3f}, retrained "
            f"{target_accuracy(updated_model.model):.3f}, ensemble {target_accuracy(ensemble):.3f}"
        )

    return {
        "final_ensemble": ensemble,
        "active_learning": al,
        "domain_adaptation": da,
        "training_history": trainer.get_training_history(),
    }


def main() -> dict:
    result = asyncio.run(
        advanced_ml_workflow(
            iterations=_common.budget(1, 2),  # SEED.md: 10
            n_samples=_common.budget(10, 50),  # SEED.md: 100
        )
    )
    history = result["training_history"]
    print(f"training history: {[round(r['metrics']['test_accuracy'], 3) for r in history]}")
    return result


if __name__ == "__main__":
    main()
