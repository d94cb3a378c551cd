"""Integer tabular features train an MLP as numbers, through every entry point: the trainer
facade, ``fit`` and the command line's own-data path (.npz / .csv). Negative values are the
case that once failed ("expected token ids >= 0")."""

import json

import numpy as np
import pytest

from ml_adv.data.dataset import ArrayDataset
from ml_adv.rundir import Run


def _integer_table(negative: bool, n: int = 96):
    rng = np.random.default_rng(0)
    x = rng.integers(-12 if negative else 0, 12, (n, 6)).astype(np.int64)
    y = (x[:, 0] + x[:, 1] > (0 if negative else 11)).astype(np.int64)
    return x, y


@pytest.mark.parametrize("negative", [True, False])
def test_facade_reads_integer_features_as_numbers(negative, tmp_path):
    from ml_adv import AdvancedCustomModelTrainer

    x, y = _integer_table(negative)
    for extra in ({}, {"input_kind": "features"}):
        trainer = AdvancedCustomModelTrainer(
            architecture_type="mlp", size="tiny", run_root=tmp_path
        )
        result = trainer.train({"data": (x, y), "epochs": 1, "batch_size": 16, **extra})
        assert result.success, result.error
        assert result.model.spec.input_kind == "features" and result.model.spec.input_shape == (6,)
        # predictions on the raw integers match predictions on the same values as floats
        np.testing.assert_allclose(
            result.model.predict_proba(x[:8]), result.model.predict_proba(x[:8] * 1.0), rtol=1e-6
        )


@pytest.mark.parametrize("negative", [True, False])
def test_fit_conforms_integer_data_to_the_model(negative):
    from ml_adv import make_spec
    from ml_adv.training import TrainConfig, fit

    x, y = _integer_table(negative)
    data = ArrayDataset(x, y)
    # Negative integers can never be token ids; non-negative ones are guessed as tokens ...
    assert data.input_kind == ("features" if negative else "tokens")
    spec = make_spec("mlp", input_shape=(6,), input_kind="features", num_classes=2, size="tiny")
    # ... and fit reads them as the MLP's features either way.
    result = fit(spec, data, TrainConfig(epochs=1, batch_size=16), run=Run(progress=False))
    assert np.isfinite(result.history[-1]["train_loss"])


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_command_line_trains_on_an_integer_file(suffix, tmp_path, capsys):
    from ml_adv.cli import main

    x, y = _integer_table(True)
    path = tmp_path / f"table{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x[:72], y=y[:72], x_test=x[72:], y_test=y[72:])
    else:
        header = ",".join([f"f{i}" for i in range(6)] + ["label"])
        np.savetxt(
            path, np.column_stack([x, y]), fmt="%d", delimiter=",", header=header, comments=""
        )
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            "--arch",
            "mlp",
            "--size",
            "tiny",
            "--data",
            str(path),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--run-dir",
            str(run_dir),
        ]
    )
    assert code == 0, capsys.readouterr().err
    from ml_adv.training.trained_model import TrainedModel

    model = TrainedModel.load(run_dir / "model")
    assert model.spec.input_kind == "features" and model.spec.input_shape == (6,)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    if suffix == ".npz":  # the file's own test split is evaluated
        accuracy = model.evaluate(ArrayDataset(x[72:], y[72:], input_kind="features"))["accuracy"]
        assert printed["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    else:
        assert printed["test_accuracy"] is None


def test_command_line_file_errors_are_one_line(tmp_path, capsys):
    from ml_adv.cli import main

    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((4, 2)))
    assert (
        main(["train", "--arch", "mlp", "--data", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    )
    assert "expected arrays 'x' and 'y'" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--arch",
                "mlp",
                "--data",
                str(tmp_path / "missing.csv"),
                "--run-dir",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
