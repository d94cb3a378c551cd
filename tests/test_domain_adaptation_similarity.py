import numpy as np
import pytest

from ml_adv.domain_adaptation.similarity import (
    coral_distance,
    domain_similarity_report,
    mmd2,
    mmd_similarity,
    proxy_a_distance,
)
from ml_adv.errors import DataError
from ml_adv.rundir import Run


def _numpy_mmd2(s, t):
    x = np.concatenate([s, t]).astype(np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    h = np.median(d[~np.eye(len(x), dtype=bool)])
    k = np.exp(-d / h)
    n = len(s)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def test_mmd_matches_numpy_and_orders_shifts():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(40, 5))
    near, far = rng.normal(size=(30, 5)) + 0.2, rng.normal(size=(30, 5)) + 2.0
    np.testing.assert_allclose(mmd2(s, near), _numpy_mmd2(s, near), rtol=1e-4)
    np.testing.assert_allclose(mmd2(s, far), _numpy_mmd2(s, far), rtol=1e-4)
    assert mmd2(s, s) == pytest.approx(0.0, abs=1e-6) and mmd_similarity(s, s) == pytest.approx(1.0)
    assert 0.0 <= mmd_similarity(s, far) < mmd_similarity(s, near) <= 1.0


def test_coral_matches_numpy():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) * np.asarray([1.0, 2.0, 0.5, 1.0])
    want = ((np.cov(s, rowvar=False) - np.cov(t, rowvar=False)) ** 2).sum() / (4 * 16)
    np.testing.assert_allclose(coral_distance(s, t), want, rtol=1e-4)
    assert coral_distance(s, s) == pytest.approx(0.0, abs=1e-7)


def test_proxy_a_distance_matches_sklearn_and_its_range():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(100, 3)), rng.normal(size=(100, 3)) + np.asarray([0.7, 0.0, 0.0])
    x, d = np.concatenate([s, t]).astype(np.float32), np.repeat([0, 1], 100)
    a, b, da, db = train_test_split(x, d, test_size=0.5, random_state=0, stratify=d)
    err = np.mean(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(a, da).predict(b)
        != db
    )
    assert proxy_a_distance(s, t) == pytest.approx(2 * (1 - 2 * err))
    assert proxy_a_distance(s, t + 10.0) == pytest.approx(2.0)  # separable
    same = proxy_a_distance(s, rng.normal(size=(100, 3)))
    assert 0.0 <= same < 0.6


def test_bad_shapes_raise():
    with pytest.raises(DataError, match="target: expected 3 features"):
        mmd2(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(DataError, match="source"):
        coral_distance(np.zeros(4), np.zeros((4, 2)))


def test_report_on_a_model_features(small_digits):
    from ml_adv import make_spec
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    spec = make_spec(
        "mlp",
        input_shape=small_digits.example_shape,
        input_kind="image",
        num_classes=10,
        size="tiny",
    )
    result = fit(spec, small_digits, TrainConfig(epochs=1, batch_size=32), run=Run(progress=False))
    model = TrainedModel(spec, result.state.variables())
    a, b = small_digits.subset(np.arange(100)), small_digits.subset(np.arange(100, 200))
    report = domain_similarity_report(model, a, b)
    assert set(report) == {"mmd2", "mmd_similarity", "coral_distance", "proxy_a_distance"}
    assert 0.0 <= report["mmd_similarity"] <= 1.0 and report["mmd_similarity"] > 0.9  # same domain
