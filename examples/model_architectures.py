"""SEED.md: Advanced Custom Model Trainer > Model Architectures (Transformer Architecture, LSTM
Architecture, CNN Architecture, BERT Architecture).

Each of SEED.md's four designs is made as written (its ``input_dim``/``output_dim``; the
parameters are counted without allocating them), then the same family is designed for the
digits view it reads, trained briefly and scored on the digits test split.

Run: python examples/model_architectures.py   (ML_ADV_EXAMPLES_QUICK=1: a smoke test)
"""

from __future__ import annotations

import _common

from ml_adv import AdvancedModelArchitecture, TrainedModel, fit
from ml_adv.models.architecture import count_params
from ml_adv.rundir import QUIET

# (architecture_type, SEED.md's input_dim and output_dim, the digits view the family reads,
# epochs and learning rate on it: the examples' tiny BERT needs more of both)
EPOCHS, RATE = _common.TRAIN_CONFIG.epochs, _common.TRAIN_CONFIG.learning_rate
DESIGNS = [
    ("transformer", 768, 10, "digits_tokens", EPOCHS, RATE),
    ("lstm", 256, 5, "digits_sequence", EPOCHS, RATE),
    ("cnn", 224, 1000, "digits", EPOCHS, RATE),
    ("bert", 768, 10, "digits_tokens", _common.budget(1, 20), 5e-3),
]


def main() -> dict[str, float]:
    accuracies = {}
    for architecture_type, input_dim, output_dim, view, epochs, learning_rate in DESIGNS:
        # SEED.md's design, exactly as written.
        architecture = AdvancedModelArchitecture(architecture_type=architecture_type)
        model = architecture.design_architecture(input_dim=input_dim, output_dim=output_dim)
        print(
            f"{architecture_type}: SEED.md's design reads {model.input_kind} of shape "
            f"{model.input_shape}, {output_dim} classes, {count_params(model):,} parameters"
        )

        # The same family on real data: input_dim is what it means for this digits view.
        train, test = _common.digits(view), _common.digits(view, "test")
        architecture = AdvancedModelArchitecture(
            architecture_type, size=_common.size_for(architecture_type)
        )
        model = architecture.design_architecture(
            input_dim=_common.input_dim(train),
            output_dim=train.num_classes,
            input_shape=train.example_shape,
            input_kind=train.input_kind,
        )
        config = _common.TRAIN_CONFIG.replace(epochs=epochs, learning_rate=learning_rate)
        result = fit(model, train, config, run=QUIET)
        accuracies[architecture_type] = TrainedModel(model, result.state.variables()).evaluate(
            test
        )["accuracy"]
        print(
            f"{architecture_type} on {view} (input_dim={_common.input_dim(train)}): "
            f"{count_params(model):,} parameters, test accuracy "
            f"{accuracies[architecture_type]:.3f} after {epochs} epochs"
        )
    return accuracies


if __name__ == "__main__":
    main()
