"""SEED.md: Performance Optimization > Ensemble Optimization.

With cross-validation on, training an ensemble trains one model per fold (5 MLPs on the
digits as one stacked program; member i never sees fold i) and reports the cross-validated
score. Learning the weights on validation data then first selects a diverse subset of the
members, learns the weights and prunes members the ensemble is no worse without.

Run: python examples/ensemble_optimization.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedModelEnsemble


def main() -> dict:
    train = _common.digits("digits_flat")
    val, test = _common.digits("digits_flat", "val"), _common.digits("digits_flat", "test")

    # Optimize ensemble performance
    ensemble = AdvancedModelEnsemble(combination_method="weighted")
    ensemble.set_diversity_optimization(enabled=True)
    ensemble.set_automatic_pruning(enabled=True)
    ensemble.set_cross_validation(folds=5)

    report = ensemble.fit(_common.design("mlp", train), train, _common.TRAIN_CONFIG)
    cv = report["cross_validation"]
    print(f"{len(ensemble)} fold models; cross-validation: {cv}")

    ensemble.update_model_weights(val)  # diversity selection, weights, pruning
    stats = ensemble.get_ensemble_statistics()
    print(
        f"after diversity selection and pruning: {stats['num_models']} members, weights "
        f"{[round(w, 3) for w in stats['weights'].values()]}"
    )
    performance = ensemble.get_ensemble_performance(test)
    print(
        f"test accuracy {performance['ensemble']['accuracy']:.3f} (best member "
        f"{performance['best_member_accuracy']:.3f})"
    )
    return performance


if __name__ == "__main__":
    main()
