"""SEED.md: Advanced Active Learning > Sampling Strategies (Uncertainty Sampling, Diversity
Sampling, Random Sampling).

Each strategy starts from the same 20 labelled digits (two per class) and a pool of
unlabelled ones; it selects 10 samples per round, a simulated annotator reveals their
labels, and the model is updated. Validation accuracy after each round shows what the
selection bought.

Run: python examples/sampling_strategies.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common
import numpy as np

from ml_adv import AdvancedActiveLearning


async def run(sampling_strategy: str, rounds: int) -> list[dict]:
    labelled, pool = _common.per_class(_common.digits("digits_flat"), 2)
    human_labeling = _common.SimulatedAnnotator(pool.y)  # the pool's labels stay hidden
    al = AdvancedActiveLearning(
        sampling_strategy=sampling_strategy,
        architecture="mlp",
        size=_common.SIZE,
        validation_data=_common.digits("digits_flat", "val"),
        config=_common.active_learning_config(),
    )
    al.add_labeled_data(labelled.x, labelled.y)
    al.add_unlabeled_data(pool.x)
    for _ in range(rounds):
        selected_samples = al.select_samples(n_samples=10)
        labels = await human_labeling(selected_samples)
        print(f"  {sampling_strategy} picked classes {np.bincount(labels, minlength=10)}")
        al.update_model(labels)
    return al.get_learning_curve()


def main() -> dict[str, float]:
    final = {}
    for strategy in ("uncertainty", "diversity", "random"):
        curve = asyncio.run(run(strategy, rounds=_common.budget(1, 3)))
        final[strategy] = curve[-1]["val_accuracy"]
        points = ", ".join(f"{p['labels']} labels: {p['val_accuracy']:.3f}" for p in curve)
        print(f"{strategy}: {points}")
    return final


if __name__ == "__main__":
    main()
