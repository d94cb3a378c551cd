"""SEED.md: Error Handling > Error Recovery.

SEED.md's recovery logic as a function, run on three real cases:
- a sound configuration: the trained model is returned;
- a learning rate far too high: the loss turns NaN, the trainer reports ``success=False``
  (keeping the last good checkpoint), and the fallback retrains with a safe learning rate;
- features with missing values: the trainer rejects the data before compiling anything
  (``DataError``), and the degraded path fills the gaps with zeros and trains a tiny model.

Run: python examples/error_recovery.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio
import logging

import _common
import numpy as np

from ml_adv import AdvancedCustomModelTrainer
from ml_adv.models.architecture import count_params

logger = logging.getLogger("examples.error_recovery")


def new_trainer(size: str = _common.SIZE) -> AdvancedCustomModelTrainer:
    return AdvancedCustomModelTrainer(architecture_type="mlp", size=size, run_root=_common.RUNS)


async def fallback_training(training_data: dict):
    """Retrain with the default, safe learning rate."""
    safe = dict(training_data, learning_rate=1e-3)
    result = await new_trainer().train_custom_model(safe)
    return result.model


async def degraded_training(training_data: dict):
    """Fill missing or infinite features with 0 and train the smallest model."""
    x, y = training_data["data"]
    cleaned = dict(training_data, data=(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), y))
    result = await new_trainer(size="tiny").train_custom_model(cleaned)
    return result.model


async def train_with_recovery(trainer, training_data: dict):
    try:
        result = await trainer.train_custom_model(training_data)
        if result.success:
            return result.model
        else:
            # Implement fallback strategy
            print(f"  training failed ({result.error[:60]}...): fallback")
            return await fallback_training(training_data)
    except Exception as e:
        logger.error(f"Model training failed: {e}")
        # Implement graceful degradation
        return await degraded_training(training_data)


def main() -> dict[str, float]:
    train, test = _common.digits("digits_flat"), _common.digits("digits_flat", "test")
    holes = train.x.copy()
    holes[::7, ::5] = np.nan  # some readings missing
    base = {
        "validation_data": _common.digits("digits_flat", "val"),
        "test_data": test,
        "epochs": _common.budget(1, 15),
    }
    cases = {
        "sound": dict(base, data=(train.x, train.y)),
        "diverging": dict(base, data=(train.x, train.y), learning_rate=1e30),
        "missing values": dict(base, data=(holes, train.y)),
    }
    accuracies = {}
    for name, training_data in cases.items():
        model = asyncio.run(train_with_recovery(new_trainer(), training_data))
        accuracies[name] = model.evaluate(test)["accuracy"]
        print(
            f"{name}: {model.architecture} with {count_params(model.spec):,} parameters, "
            f"test accuracy {accuracies[name]:.3f}"
        )
    return accuracies


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
