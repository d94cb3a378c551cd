"""SEED.md: Advanced Custom Model Trainer > Hyperparameter Optimization (Bayesian Optimization,
Grid Search Optimization, Genetic Algorithm Optimization).

Each method searches the learning rate and label smoothing of an MLP on the digits; trials
are scored on a validation part of the training data, never on the test split. SEED.md's
trial budgets (50, 100, 200) are cut to a few trials each here.

Run: python examples/hyperparameter_optimization.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedHyperparameterOptimizer, TrainConfig

SEED_MAX_TRIALS = {"bayesian": 50, "grid_search": 100, "genetic": 200}
# Values that change no compiled program, so trials do not recompile (the default space,
# ``ml_adv.hpo.facade.default_space``, also searches batch size and dropout: slower on a CPU).
SEARCH_SPACE = {"learning_rate": ["log", 1e-4, 3e-2], "label_smoothing": ["float", 0.0, 0.2]}


def main() -> dict[str, float]:
    data = _common.digits("digits_flat")
    best = {}
    for method, seed_trials in SEED_MAX_TRIALS.items():
        optimizer = AdvancedHyperparameterOptimizer(
            optimization_method=method,
            max_trials=_common.budget(2, 8),  # SEED.md: seed_trials
            search_space=SEARCH_SPACE,
            progress=False,
        )
        optimizer.optimize(
            data,
            architectures=("mlp",),
            size=_common.SIZE,
            base_config=TrainConfig(epochs=_common.budget(1, 3)),
        )
        history = optimizer.get_optimization_history()
        best[method] = optimizer.get_best_score()
        print(
            f"{method} (SEED.md: max_trials={seed_trials}): {len(history)} trials, best "
            f"validation accuracy {best[method]:.3f} with {optimizer.get_best_config()}"
        )
        _common.show("  report", optimizer.generate_optimization_report())
    return best


if __name__ == "__main__":
    main()
