"""SEED.md: Performance Optimization > Active Learning Optimization.

Uncertainty sampling on the digits with a labelling budget, adaptive switching to diversity
sampling when validation accuracy stagnates, and a performance threshold: the loop stops at
95% validation accuracy or when the budget is spent, whichever comes first.

Run: python examples/active_learning_optimization.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common

from ml_adv import AdvancedActiveLearning


async def run() -> dict:
    labelled, pool = _common.per_class(_common.digits("digits_flat"), 2)
    human_labeling = _common.SimulatedAnnotator(pool.y)

    # Optimize active learning
    al = AdvancedActiveLearning(
        sampling_strategy="uncertainty",
        size=_common.SIZE,
        validation_data=_common.digits("digits_flat", "val"),
        config=_common.active_learning_config(),
    )
    al.add_labeled_data(labelled.x, labelled.y)
    al.add_unlabeled_data(pool.x)
    # SEED.md's set_budget_management(enabled=True) alone accounts the labels' cost; a budget
    # also caps it, which ends this loop.
    al.set_budget_management(enabled=True, budget=_common.budget(20, 200))
    al.set_adaptive_sampling(enabled=True)
    al.set_performance_threshold(0.95)

    while not al.stopped:
        selected_samples = al.select_samples(n_samples=_common.budget(10, 20))
        al.update_model(await human_labeling(selected_samples))
    return al.get_active_learning_statistics()


def main() -> dict:
    stats = asyncio.run(run())
    print(
        f"stopped: {stats['stop_reason']}; {stats['labelled']} labels, validation accuracy "
        f"{stats['val_accuracy']:.3f}, strategy switches {stats['adaptive']['switches']}"
    )
    return stats


if __name__ == "__main__":
    main()
