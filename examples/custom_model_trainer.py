"""SEED.md: Advanced Custom Model Trainer > Usage.

A Transformer trained on the digits as pixel tokens, after a Bayesian search of its
hyper-parameters on a validation split; then every query of the trainer's API (SEED.md's
API Reference: registry, history, per-model performance, metrics, integrity, report).

Run: python examples/custom_model_trainer.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import asyncio

import _common

from ml_adv import AdvancedCustomModelTrainer

# What the search tries: values that change no compiled program, so trials do not recompile
# (``ml_adv.hpo.facade.default_space`` also searches batch size and dropout).
SEARCH_SPACE = {"learning_rate": ["log", 1e-4, 1e-2], "label_smoothing": ["float", 0.0, 0.2]}


async def train():
    # Initialize custom model trainer
    trainer = AdvancedCustomModelTrainer(
        architecture_type="transformer",
        optimization_method="bayesian",
        size=_common.SIZE,
        run_root=_common.RUNS,
    )

    # Train custom model. SEED.md's dict holds only sizes and hyper-parameters; here it also
    # holds the data (digits as 65 pixel tokens: input_dim is the vocabulary size, 21).
    train = _common.digits("digits_tokens")
    training_data = {
        "data": train,
        "validation_data": _common.digits("digits_tokens", "val"),
        "test_data": _common.digits("digits_tokens", "test"),
        "input_dim": _common.input_dim(train),
        "output_dim": 10,
        "learning_rate": 1e-4,  # the search replaces it with the best one it finds
        "batch_size": 32,
        "epochs": _common.budget(1, 6),  # SEED.md: 50
        "max_trials": _common.budget(2, 3),  # the Bayesian search's budget
        "search_epochs": 1,
        "search_space": SEARCH_SPACE,
    }

    result = await trainer.train_custom_model(training_data)
    return trainer, result


def main():
    trainer, result = asyncio.run(train())
    print(f"success={result.success}, run folder {result.run_dir}")
    print(f"best configuration found: {result.metrics['hpo']['best_config']}")

    # Get training metrics
    metrics = trainer.get_training_metrics()
    _common.show("training metrics", metrics)

    # The rest of the trainer's API.
    registry = trainer.get_model_registry()
    performance = trainer.get_model_performance(result.model_id)
    history = trainer.get_training_history()
    print(f"registry: {list(registry)}; history: {len(history)} run(s)")
    _common.show(f"performance of {result.model_id}", performance)
    print(f"system integrity: {trainer.validate_system_integrity()}")
    report = trainer.generate_training_report()
    print(f"report: best model {report['best_model_id']}, {report['successful_runs']} run(s) ok")
    return metrics


if __name__ == "__main__":
    main()
