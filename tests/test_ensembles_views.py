"""Ensemble input views (ml_adv.ensembles.views): uint8 pixels read as the members read them."""

import jax
import numpy as np

from ml_adv import AdvancedModelEnsemble, ArrayDataset, TrainedModel, make_spec


def _random_model(spec, seed):
    shapes = jax.eval_shape(
        lambda: spec.build().init(jax.random.PRNGKey(0), spec.example_input(), train=False)
    )
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(
        lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), dict(shapes)
    )
    return TrainedModel(spec, variables, model_id=f"{spec.architecture}-{seed}")


def test_uint8_images_are_scaled_like_in_training():
    """MNIST keeps uint8 pixels; the members scale them by 1/255. Reading them as int32 token
    ids (the kind-less default for integers) fed 0..255 to the models: wrong probabilities."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    data = ArrayDataset(x, np.arange(20) % 3)
    cnn = make_spec("cnn", input_shape=(8, 8, 1), input_kind="image", num_classes=3, size="tiny")
    mlp = make_spec("mlp", input_shape=(8, 8, 1), input_kind="image", num_classes=3, size="tiny")
    members = [_random_model(cnn, 0), _random_model(mlp, 1)]
    ensemble = AdvancedModelEnsemble("averaging")
    for m in members:
        ensemble.add_model(m)
    expected = np.stack([m.predict_proba(x) for m in members])  # TrainedModel reads uint8 as pixels
    for given in (x, data, {"image": x}, {members[0].model_id: data, members[1].model_id: x}):
        np.testing.assert_allclose(
            ensemble.member_probabilities(given), expected, rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(ensemble.predict_proba(x), expected.mean(0), rtol=1e-5, atol=1e-6)
