"""SEED.md: Advanced Model Ensemble > Ensemble Methods (Voting Ensemble, Weighted Ensemble,
Averaging Ensemble).

``model1``-``model3`` are three MLPs trained on the digits from different initialisations
(one stacked program); each combination method is built with SEED.md's weights and scored
on the digits test split against its best member.

Run: python examples/ensemble_methods.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedModelEnsemble


def main() -> dict[str, float]:
    train, test = _common.digits("digits_flat"), _common.digits("digits_flat", "test")
    spec = _common.design("mlp", train)
    # Three members trained as one program (a deep ensemble), taken apart as TrainedModels.
    model1, model2, model3 = AdvancedModelEnsemble.train(
        spec, train, _common.TRAIN_CONFIG, members=3
    ).models

    # Voting Ensemble
    voting = AdvancedModelEnsemble(combination_method="voting")
    voting.add_model(model1, weight=1.0)
    voting.add_model(model2, weight=1.0)
    voting.add_model(model3, weight=1.0)

    # Weighted Ensemble
    weighted = AdvancedModelEnsemble(combination_method="weighted")
    weighted.add_model(model1, weight=0.5)
    weighted.add_model(model2, weight=0.3)
    weighted.add_model(model3, weight=0.2)

    # Averaging Ensemble
    averaging = AdvancedModelEnsemble(combination_method="averaging")
    averaging.add_model(model1)
    averaging.add_model(model2)
    averaging.add_model(model3)

    accuracies = {}
    for ensemble in (voting, weighted, averaging):
        performance = ensemble.get_ensemble_performance(test)
        accuracies[ensemble.combination_method] = performance["ensemble"]["accuracy"]
        print(
            f"{ensemble.combination_method}: test accuracy "
            f"{performance['ensemble']['accuracy']:.3f} (best member "
            f"{performance['best_member_accuracy']:.3f}), nll "
            f"{performance['ensemble']['nll']:.3f}, weights {ensemble.effective_weights()}"
        )
    return accuracies


if __name__ == "__main__":
    main()
