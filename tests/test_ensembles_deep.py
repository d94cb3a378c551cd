"""Cross-validation through fit_stacked (ml_adv.ensembles.deep, folds, facade.fit).

The plain deep ensemble (``AdvancedModelEnsemble.train``) is exercised end to end in
test_ensembles_facade.py, whose module fixture trains it once for all facade tests.
"""

import numpy as np
import pytest

from ml_adv import AdvancedModelEnsemble, TrainConfig, load_dataset, make_spec
from ml_adv.ensembles.folds import stratified_fold_ids
from ml_adv.errors import ConfigError

CONFIG = TrainConfig(epochs=2, batch_size=32, learning_rate=1e-2)


@pytest.fixture(scope="module")
def flat():
    train = load_dataset("digits_flat", split="train").subset(np.arange(480))
    test = load_dataset("digits_flat", split="test")
    spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10, size="tiny")
    return spec, train, test


def test_cross_validation_scores_each_fold_model_on_its_held_out_fold(flat):
    spec, train, _ = flat
    ensemble = AdvancedModelEnsemble("averaging", seed=4)
    ensemble.set_cross_validation(folds=3)
    with pytest.raises(ConfigError, match="one member per fold"):
        ensemble.fit(spec, train, CONFIG, members=5)
    report = ensemble.fit(spec, train, CONFIG)["cross_validation"]
    assert report["folds"] == 3 and len(ensemble) == 3
    # Recompute member i on fold i by hand: same seeded stratified folds.
    fold_ids = stratified_fold_ids(train.y, 3, seed=4)
    probs = ensemble.member_probabilities(train)
    for i in range(3):
        held = fold_ids == i
        acc = float(np.mean(probs[i][held].argmax(-1) == train.y[held]))
        assert report["per_fold"]["accuracy"][i] == pytest.approx(acc, abs=1e-6)
    assert report["mean"]["accuracy"] == pytest.approx(np.mean(report["per_fold"]["accuracy"]))
    assert report["std"]["accuracy"] == pytest.approx(np.std(report["per_fold"]["accuracy"]))
    # The stacked core validated each member on its held-out rows too: the two agree.
    core = [m.metrics["val_accuracy"] for m in ensemble.models]
    np.testing.assert_allclose(core, report["per_fold"]["accuracy"], atol=1e-6)
    assert ensemble.get_ensemble_statistics()["cross_validation"] == report
