"""SEED.md: Advanced Active Learning > Usage.

Uncertainty sampling on the digits: 20 labelled examples to start, the rest of the
training split as the unlabelled pool, and a simulated annotator that reveals the true
labels of the samples selected. Each round selects 10 samples and updates the model
(warm-started); the statistics and the learning curve (SEED.md's API Reference) follow.

Run: python examples/active_learning.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common

from ml_adv import AdvancedActiveLearning


async def run():
    labeled, unlabeled = _common.per_class(_common.digits("digits_flat"), 2)
    labeled_samples, labels = labeled.x, labeled.y
    unlabeled_samples = unlabeled.x
    human_labeling = _common.SimulatedAnnotator(unlabeled.y)

    # Initialize active learning
    al = AdvancedActiveLearning(
        sampling_strategy="uncertainty",
        architecture="mlp",
        size=_common.SIZE,
        validation_data=_common.digits("digits_flat", "val"),  # for the learning curve
        config=_common.active_learning_config(),
    )

    # Add labeled data
    al.add_labeled_data(labeled_samples, labels)

    # Add unlabeled data
    al.add_unlabeled_data(unlabeled_samples)

    for _ in range(_common.budget(1, 5)):
        # Select samples for labeling
        selected_samples = al.select_samples(n_samples=10)

        # Update model with new labels
        new_labels = await human_labeling(selected_samples)
        al.update_model(new_labels)

    # Get active learning statistics
    stats = al.get_active_learning_statistics()
    return stats, al.get_learning_curve()


def main():
    stats, curve = asyncio.run(run())
    _common.show("statistics", stats)
    for point in curve:
        print(
            f"  round {point['round']}: {point['labels']} labels, val {point['val_accuracy']:.3f}"
        )
    return stats


if __name__ == "__main__":
    main()
