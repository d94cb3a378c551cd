"""SEED.md: Error Handling > Common Errors (Model Training Failure, Ensemble Performance
Degradation, Active Learning Stagnation).

Each of SEED.md's three remedies applied where its problem shows:
1. little training data: train on 5 digits per class with augmentation (random shifts)
   and resource monitoring (wall time, peak memory) on;
2. an ensemble of members trained alike (same model, same data): diversity optimisation and
   pruning on held-out data remove the members that add nothing;
3. a stagnating active learner: adaptive sampling switches strategy when validation
   accuracy stops improving, and budget management caps the labels bought.

Run: python examples/error_handling.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common

from ml_adv import AdvancedActiveLearning, AdvancedCustomModelTrainer, AdvancedModelEnsemble


def model_training_failure() -> dict:
    trainer = AdvancedCustomModelTrainer(
        architecture_type="cnn", size=_common.SIZE, run_root=_common.RUNS
    )
    # Solution: Implement data augmentation and resource monitoring
    trainer.set_data_augmentation(enabled=True)
    trainer.set_resource_monitoring(enabled=True)
    scarce, _ = _common.per_class(_common.digits("digits"), 5)
    training_data = {
        "data": scarce,
        "validation_data": _common.digits("digits", "val"),
        "test_data": _common.digits("digits", "test"),
        "batch_size": 16,
        "epochs": _common.budget(1, 40),
    }
    result = asyncio.run(trainer.train_custom_model(training_data))
    print(
        f"1. {len(scarce)} training images, augmented: test accuracy "
        f"{result.metrics['test_accuracy']:.3f}; resources {result.metrics['resources']}"
    )
    return result.metrics


def ensemble_performance_degradation() -> dict:
    train, val = _common.digits("digits_flat"), _common.digits("digits_flat", "val")
    ensemble = AdvancedModelEnsemble.train(
        _common.design("mlp", train),
        train,
        _common.TRAIN_CONFIG,
        members=3,
        combination_method="weighted",
    )
    before = ensemble.get_ensemble_performance(val)
    # Learned weights on held-out data: the data the two calls below work on when given none.
    ensemble.update_model_weights(val)
    # Solution: Implement diversity optimization
    diversity = ensemble.optimize_diversity()
    removed = ensemble.prune_models(threshold=0.8)
    after = ensemble.get_ensemble_performance(val)
    print(
        f"2. 3 members -> diversity kept {len(diversity['selected'])}, pruning "
        f"(threshold 0.8 nats of validation NLL) removed {len(removed)}: {len(ensemble)} left; "
        f"validation accuracy {before['ensemble']['accuracy']:.3f} -> "
        f"{after['ensemble']['accuracy']:.3f}"
    )
    return after


async def active_learning_stagnation() -> dict:
    labelled, pool = _common.per_class(_common.digits("digits_flat"), 2)
    human_labeling = _common.SimulatedAnnotator(pool.y)
    al = AdvancedActiveLearning(
        sampling_strategy="uncertainty",
        size=_common.SIZE,
        validation_data=_common.digits("digits_flat", "val"),
        config=_common.active_learning_config(),
    )
    al.add_labeled_data(labelled.x, labelled.y)
    al.add_unlabeled_data(pool.x)
    # Solution: Implement adaptive sampling strategies
    al.set_adaptive_sampling(enabled=True, patience=1)
    # SEED.md's set_budget_management(enabled=True) alone accounts the labels' cost; a budget
    # also caps it, which ends this loop.
    al.set_budget_management(enabled=True, budget=_common.budget(20, 60))
    while not al.stopped:
        selected_samples = al.select_samples(n_samples=10)
        al.update_model(await human_labeling(selected_samples))
    stats = al.get_active_learning_statistics()
    print(
        f"3. stopped: {stats['stop_reason']}; {stats['labelled']} labels, budget "
        f"{stats['budget']}, strategy switches {stats['adaptive']['switches']}"
    )
    return stats


def main() -> dict:
    return {
        "model_training_failure": model_training_failure(),
        "ensemble_performance_degradation": ensemble_performance_degradation(),
        "active_learning_stagnation": asyncio.run(active_learning_stagnation()),
    }


if __name__ == "__main__":
    main()
