"""Stacked (vmapped) ensemble inference (ml_adv.ensembles.inference) against per-member passes."""

import jax
import numpy as np

from ml_adv import TrainedModel, make_spec
from ml_adv.ensembles.inference import ensemble_probs, group_members, stacked_logits
from ml_adv.training.steps import predict_logits


def _random_model(spec, seed):
    """Random variables of ``spec``'s shapes, drawn with numpy: no init program to compile."""
    shapes = jax.eval_shape(
        lambda: spec.build().init(jax.random.PRNGKey(0), spec.example_input(), train=False)
    )
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(
        lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), dict(shapes)
    )
    return TrainedModel(spec, variables, model_id=f"{spec.architecture}-{seed}")


def test_stacked_pass_equals_separate_passes():
    spec = make_spec("cnn", input_shape=(8, 8, 1), input_kind="image", num_classes=10, size="tiny")
    members = [_random_model(spec, s) for s in range(3)]
    x = np.random.default_rng(0).normal(size=(37, 8, 8, 1)).astype(np.float32)
    (group,) = group_members(members)
    assert group.indices == (0, 1, 2)
    # 37 examples in chunks of 16: the padded last chunk must not leak into the result.
    stacked = np.asarray(stacked_logits(group.module, group.variables, x, chunk=16))
    assert stacked.shape == (3, 37, 10)
    # Members one after another (the CPU default) and in vmapped pairs give the same logits.
    for member_batch in (1, 2):
        looped = stacked_logits(
            group.module, group.variables, x, chunk=16, member_batch=member_batch
        )
        np.testing.assert_allclose(looped, stacked, rtol=1e-5, atol=1e-5)
    apply_fn = spec.build().apply  # one bound method: the reference compiles once for all members
    for i, m in enumerate(members):
        np.testing.assert_allclose(
            stacked[i], predict_logits(apply_fn, m.variables, x), rtol=1e-5, atol=1e-5
        )


def test_groups_keep_member_order_and_views():
    cnn = make_spec("cnn", input_shape=(8, 8, 1), input_kind="image", num_classes=10, size="tiny")
    mlp = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10, size="tiny")
    members = [
        _random_model(mlp, 0),
        _random_model(cnn, 1),
        _random_model(mlp, 2),
        _random_model(cnn, 3),
    ]
    groups = group_members(members)
    assert [g.indices for g in groups] == [(0, 2), (1, 3)]
    rng = np.random.default_rng(1)
    images = rng.normal(size=(9, 8, 8, 1)).astype(np.float32)
    flat = rng.normal(size=(9, 64)).astype(np.float32)
    # Members 0 and 2 share a spec but take different views: the group splits into two passes.
    views = {"img": images, "flat": flat, "flat2": flat[::-1].copy()}
    probs = np.asarray(ensemble_probs(groups, ["flat", "img", "flat2", "img"], views))
    mlp_fn, cnn_fn = mlp.build().apply, cnn.build().apply
    expected = [
        predict_logits(mlp_fn, members[0].variables, flat),
        predict_logits(cnn_fn, members[1].variables, images),
        predict_logits(mlp_fn, members[2].variables, flat[::-1]),
        predict_logits(cnn_fn, members[3].variables, images),
    ]
    expected = [jax.nn.softmax(e, axis=-1) for e in expected]
    np.testing.assert_allclose(probs, np.stack(expected), rtol=1e-5, atol=1e-6)
