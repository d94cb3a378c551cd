"""End to end on real data: every architecture trains on scikit-learn's digits to a stated accuracy.

Thresholds were measured with `python experiments/digits_architectures.py` (seeds 0-2, same
settings; recorded in docs/digits_notes.md) and set a few points under the worst seed; the test
itself runs seed 0 only, to keep the suite short. The suite trains the CNN, MLP and LSTM (10-20 s
each); the Transformer and BERT rows (2 and 9 minutes on a 2-core CPU) are reproduced by that
script, and their training is covered in the suite by tests/test_models.py and
tests/test_pretraining.py on tiny sizes:

| arch        | view     | epochs | measured test accuracy (seeds 0/1/2) | threshold |
|-------------|----------|--------|--------------------------------------|-----------|
| cnn         | image    | 15     | 0.986 / 0.992 / 0.994                | 0.97 (issue requirement) |
| mlp         | flat     | 20     | 0.978 / 0.978 / 0.978                | 0.95      |
| lstm        | sequence | 20     | 0.983 / 0.978 / 0.978                | 0.95      |
| transformer | tokens   | 15     | 0.972 / 0.930 / 0.961                | 0.92      |
| bert        | tokens   | 25     | 0.964 / 0.950 / 0.922 (erf GELU)     | 0.88      |
"""  # noqa: E501 - the cnn row of the table above

import pytest
from default_xla import rerun_under_default_xla

from ml_adv.rundir import Run

CASES = {
    "cnn": (15, 2e-3, 0.97),
    "mlp": (20, 2e-3, 0.95),
    "lstm": (20, 3e-3, 0.95),
    "transformer": (15, 1e-3, 0.92),
    "bert": (25, 1e-3, 0.88),
}


IN_SUITE = ("cnn", "mlp", "lstm")


@pytest.mark.slow
@pytest.mark.parametrize("arch", IN_SUITE)
def test_architecture_reaches_stated_accuracy_on_digits(arch, tmp_path):
    from ml_adv import AdvancedCustomModelTrainer

    epochs, lr, threshold = CASES[arch]
    trainer = AdvancedCustomModelTrainer(arch, run_root=tmp_path)
    result = trainer.train(
        {
            "data": "digits",
            "epochs": epochs,
            "learning_rate": lr,
            "batch_size": 32,
            "schedule": "warmup_cosine",
            "warmup_fraction": 0.05,
            "seed": 0,
        }
    )
    assert result.success
    accuracy = result.metrics["test_accuracy"]
    print(f"{arch}: test accuracy {accuracy:.4f} (threshold {threshold})")
    assert accuracy >= threshold


@pytest.mark.slow
def test_digits_m_shift_is_learnable_and_real(tmp_path, request):
    """Train-on-target CNN accuracy on digits_m stays >= 90%; source-only is far lower (a real
    domain gap)."""
    # It computes far more than it compiles: 39 CPU s under XLA's defaults, 85 under the
    # suite's cheap settings (2-core EPYC), so it runs in a subprocess with the defaults.
    if rerun_under_default_xla(request):
        return
    from ml_adv.data.catalog import load_dataset
    from ml_adv.models import AdvancedModelArchitecture
    from ml_adv.training import TrainConfig, fit
    from ml_adv.training.trained_model import TrainedModel

    target_train, target_test = (
        load_dataset("digits_m", split="train"),
        load_dataset("digits_m", split="test"),
    )
    source_train = load_dataset("digits_m_source", split="train")
    # The small CNN at a higher rate reaches the same target accuracy as the default size in
    # 25 epochs (0.950 vs 0.947, source-only 0.42 vs 0.42) in a third of the time; 5 epochs
    # give 0.942 and 0.432 (8 gave 0.953 and 0.443) in two thirds of the training time.
    spec = AdvancedModelArchitecture("cnn", size="small").design_architecture(
        16, 10, input_shape=target_train.example_shape
    )
    cfg = TrainConfig(epochs=5, batch_size=64, learning_rate=3e-3, seed=0)
    on_target = fit(spec, target_train, cfg, run=Run(progress=False))
    on_source = fit(spec, source_train, cfg, run=Run(progress=False))
    target_acc = TrainedModel(spec, on_target.state.variables()).evaluate(target_test)["accuracy"]
    transfer_acc = TrainedModel(spec, on_source.state.variables()).evaluate(target_test)["accuracy"]
    print(f"digits_m: train-on-target {target_acc:.4f}, source-only {transfer_acc:.4f}")
    assert target_acc >= 0.90
    assert transfer_acc < target_acc - 0.2
