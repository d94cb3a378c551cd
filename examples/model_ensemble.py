"""SEED.md: Advanced Model Ensemble > Usage.

A weighted ensemble of three architectures trained on the digits: a Transformer (pixel
tokens), an LSTM (rows as time steps) and a CNN (images). Each member reads its own view of
the same examples, so the input is a dict of views. Then the rest of the ensemble's API
(SEED.md's API Reference): weights learned on validation data, performance, removal.

Run: python examples/model_ensemble.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedModelEnsemble

VIEWS = {"tokens": "digits_tokens", "sequence": "digits_sequence", "image": "digits"}


def views(part: str) -> dict:
    """The same digits in each member's view: ``{input_kind: ArrayDataset}``."""
    return {kind: _common.digits(view, part) for kind, view in VIEWS.items()}


def main() -> dict:
    transformer_model = _common.trained_model("transformer")
    lstm_model = _common.trained_model("lstm")
    cnn_model = _common.trained_model("cnn")

    # Initialize ensemble
    ensemble = AdvancedModelEnsemble(combination_method="weighted")

    # Add models with weights
    ensemble.add_model(transformer_model, weight=0.5)
    ensemble.add_model(lstm_model, weight=0.3)
    ensemble.add_model(cnn_model, weight=0.2)

    # Make ensemble prediction
    test = views("test")
    input_data = {kind: data.x for kind, data in test.items()}
    prediction = ensemble.predict(input_data)
    accuracy = float((prediction == test["image"].y).mean())
    print(f"SEED.md's weights: test accuracy {accuracy:.3f}")

    # Get ensemble statistics
    stats = ensemble.get_ensemble_statistics()
    print(f"statistics: {stats['num_models']} models {stats['architectures']}")

    # Learn the weights on held-out validation data (minimum NLL), then score every member.
    ensemble.update_model_weights(views("val"))
    performance = ensemble.get_ensemble_performance(test)
    weights = [round(float(w), 3) for w in ensemble.effective_weights()]
    print(
        f"learned weights {weights}: test accuracy "
        f"{performance['ensemble']['accuracy']:.3f}, best member "
        f"{performance['best_member_accuracy']:.3f}"
    )
    # Remove the member with the lowest learned weight.
    weakest = min(performance["weights"], key=performance["weights"].get)
    ensemble.remove_model(weakest)
    architectures = ensemble.get_ensemble_statistics()["architectures"]
    print(f"without {weakest}: {len(ensemble)} members {architectures}")
    return performance


if __name__ == "__main__":
    main()
