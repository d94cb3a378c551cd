"""SEED.md: Advanced Custom Model Trainer > Training Strategies > Advanced Training Strategy.

SEED.md's strategy (learning rate 1e-4, batch 32, up to 100 epochs, early stopping) is the
trainer's default configuration; training stops once validation accuracy has not improved
for ``patience`` epochs and keeps the best epoch's weights.

Run: python examples/training_strategy.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common

from ml_adv import AdvancedCustomModelTrainer, AdvancedTrainingStrategy


async def train_with_strategy():
    strategy = AdvancedTrainingStrategy(
        learning_rate=1e-4,
        batch_size=32,
        epochs=_common.budget(2, 100),  # SEED.md: 100; early stopping ends the run sooner
        early_stopping=True,
    )
    print(f"strategy: {strategy!r}, patience {strategy.patience}")

    trainer = AdvancedCustomModelTrainer(
        architecture_type="mlp", strategy=strategy, size=_common.SIZE, run_root=_common.RUNS
    )
    # The strategy's values apply unless training_data overrides them.
    training_data = {
        "data": _common.digits("digits_flat"),
        "validation_data": _common.digits("digits_flat", "val"),
        "test_data": _common.digits("digits_flat", "test"),
    }
    return await trainer.train_custom_model(training_data)


def main():
    result = asyncio.run(train_with_strategy())
    _common.show(
        "training",
        {
            k: result.metrics[k]
            for k in ("epochs_run", "stopped_early", "best_epoch", "val_accuracy", "test_accuracy")
        },
    )
    return result


if __name__ == "__main__":
    main()
