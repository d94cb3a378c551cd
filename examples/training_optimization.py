"""SEED.md: Performance Optimization > Model Training Optimization.

A Transformer on the digits (pixel tokens) trained with bfloat16 mixed precision (float32
master weights), gradients accumulated over 4 micro-batches per update, and data-parallel
training over every device JAX sees (one on a plain CPU: ``ml_adv.use_cpu_cores()`` makes
one device per core; all local GPUs on a GPU machine).

Run: python examples/training_optimization.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common
import jax

from ml_adv import AdvancedCustomModelTrainer


def main() -> dict:
    # Configure advanced training
    trainer = AdvancedCustomModelTrainer(
        architecture_type="transformer", size=_common.SIZE, run_root=_common.RUNS
    )
    trainer.set_mixed_precision(enabled=True)
    trainer.set_gradient_accumulation(steps=4)
    trainer.set_distributed_training(enabled=True)

    training_data = {
        "data": _common.digits("digits_tokens"),
        "validation_data": _common.digits("digits_tokens", "val"),
        "test_data": _common.digits("digits_tokens", "test"),
        "batch_size": 16,  # 4 x 16 = 64 examples per update
        "epochs": _common.budget(1, 8),
    }
    result = asyncio.run(trainer.train_custom_model(training_data))
    config = trainer.get_model_registry()[result.model_id]["train_config"]
    print(
        f"mixed_precision={config['mixed_precision']}, grad_accum_steps="
        f"{config['grad_accum_steps']}, data_parallel={config['data_parallel']} over "
        f"{jax.device_count()} {jax.default_backend()} device(s)"
    )
    _common.show(
        "result",
        {k: result.metrics[k] for k in ("test_accuracy", "steps_per_second", "wall_seconds")},
    )
    return result.metrics


if __name__ == "__main__":
    main()
