"""DANN as Ganin et al. (2016) train it, checked piece by piece on their MNIST network (CNN "dann").

The gradient reversal wiring, where the domain classifier sits, the per-step lambda ramp (also
under gradient accumulation), the half-source/half-target batch and the balance of the domain loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ml_adv import make_spec
from ml_adv.data.dataset import ArrayDataset
from ml_adv.domain_adaptation.dann import PROGRESS, DANNModel, dann_objective, fit_dann
from ml_adv.training.config import TrainConfig

B = 8


@pytest.fixture(scope="module")
def setup():
    spec = make_spec(
        "cnn", input_shape=(28, 28, 3), input_kind="image", num_classes=10, size="dann"
    )
    module = DANNModel(spec.build(), discriminator_hidden=(100,))
    rng = np.random.default_rng(0)
    batch = {
        name: {
            "x": jnp.asarray(rng.integers(0, 256, (B, 28, 28, 3), dtype=np.uint8)),
            "y": jnp.asarray(rng.integers(0, 10, B).astype(np.int32)),
        }
        for name in ("source", "target")
    }
    # Jitted, here and below: run eagerly, each Flax operation of the CNN compiles as a
    # program of its own (~400 compilations for this file, most of its time).
    variables = jax.jit(lambda keys, x: module.init(keys, x, train=False))(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
        batch["source"]["x"][:1],
    )
    return spec, module, batch, variables["params"]


def _state(step):
    return {PROGRESS: {"step": jnp.int32(step)}}


def test_domain_classifier_reads_the_conv_features(setup):
    """The paper's split: conv-pool-conv-pool (768 features) | label MLP 100-100-10 | domain
    100-1."""
    _, module, batch, params = setup
    features = jax.jit(
        lambda p, x: module.apply({"params": p, **_state(0)}, x, method=DANNModel.features)
    )(params, batch["source"]["x"])
    assert features.shape == (B, 4 * 4 * 48)
    assert params["discriminator"]["Dense_0"]["kernel"].shape == (768, 100)
    assert params["discriminator"]["Dense_1"]["kernel"].shape == (100, 1)
    head = params["base"]["head"]
    assert [head[k]["kernel"].shape for k in ("hidden_0", "hidden_1", "out")] == [
        (768, 100),
        (100, 100),
        (100, 10),
    ]
    assert set(params["base"]["encoder"]) == {"conv_0", "conv_1"}


def test_gradient_reversal_wiring(setup):
    """The domain term's gradient: -lambda x the plain one on the extractor, plain on the
    classifier, none on the label predictor."""
    _, module, batch, params = setup
    step, total = 30, 100
    lam = 2 / (1 + np.exp(-10 * step / total)) - 1
    key = jax.random.PRNGKey(2)

    def grads(weight):
        objective = dann_objective(
            module, streams=("source", "target"), total_steps=total, domain_weight=weight
        )
        return jax.jit(jax.grad(lambda p: objective(p, _state(step), batch, key, {})[0]))(params)

    domain_term = jax.tree.map(lambda a, b: a - b, grads(1.0), grads(0.0))
    x = jnp.concatenate([batch["source"]["x"], batch["target"]["x"]])
    ids = jnp.repeat(jnp.arange(2, dtype=jnp.float32), B)

    def plain(p):  # the same domain loss without the reversal layer
        v = {"params": p, **_state(step)}
        logits = module.apply(
            v, module.apply(v, x, method=DANNModel.features), method=lambda m, f: m.discriminator(f)
        )
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits[:, 0], ids))

    reference = jax.jit(jax.grad(plain))(params)
    for layer in ("conv_0", "conv_1"):
        np.testing.assert_allclose(
            domain_term["base"]["encoder"][layer]["kernel"],
            -lam * reference["base"]["encoder"][layer]["kernel"],
            rtol=2e-3,
            atol=1e-7,
        )
    for a, b in zip(
        jax.tree.leaves(domain_term["discriminator"]), jax.tree.leaves(reference["discriminator"])
    ):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-7)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(domain_term["base"]["head"]))


def test_half_source_half_target_balanced_domain_loss(setup):
    """Label loss on the source half only; domain loss the mean over B source (id 0) + B target
    (id 1)."""
    _, module, batch, params = setup
    objective = dann_objective(module, streams=("source", "target"), total_steps=10)
    key = jax.random.PRNGKey(3)
    run = jax.jit(lambda p, b: objective(p, _state(5), b, key, {}))
    loss, aux = run(params, batch)
    relabelled = {**batch, "target": {**batch["target"], "y": (batch["target"]["y"] + 1) % 10}}
    assert float(run(params, relabelled)[0]) == float(loss)  # target labels unused
    v = {"params": params, **_state(5)}
    x = jnp.concatenate([batch["source"]["x"], batch["target"]["x"]])

    @jax.jit
    def reference_logits(v, x, source_x):
        features = module.apply(v, x, method=DANNModel.features)
        domain = module.apply(v, features, method=lambda m, f: m.discriminator(f))
        return domain, module.apply(v, source_x)

    logits, class_logits = reference_logits(v, x, batch["source"]["x"])
    bce = optax.sigmoid_binary_cross_entropy(
        logits[:, 0], jnp.repeat(jnp.arange(2, dtype=jnp.float32), B)
    )
    np.testing.assert_allclose(
        aux["metrics"]["domain_loss"], 0.5 * bce[:B].mean() + 0.5 * bce[B:].mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        aux["metrics"]["label_loss"],
        optax.softmax_cross_entropy_with_integer_labels(class_logits, batch["source"]["y"]).mean(),
        rtol=1e-5,
    )


@pytest.mark.parametrize("accum", [1, 2])
def test_lambda_follows_the_ramp_step_by_step(accum):
    """Each epoch's mean lambda is the mean of 2/(1+exp(-10 p))-1 over its steps, p = step / all
    steps, counted in micro-steps (one objective call each) when gradients accumulate."""
    rng = np.random.default_rng(1)
    data = [
        ArrayDataset(
            rng.normal(size=(64, 6)).astype(np.float32),
            rng.integers(0, 3, 64).astype(np.int32),
            num_classes=3,
            input_kind="features",
        )
        for _ in range(2)
    ]
    spec = make_spec("mlp", input_shape=(6,), input_kind="features", num_classes=3, size="tiny")
    config = TrainConfig(
        batch_size=8,
        epochs=3,
        optimizer="momentum",
        learning_rate=0.01,
        schedule="dann",
        grad_accum_steps=accum,
    )
    result = fit_dann(spec, data[0], data[1], config)
    total = 3 * 8
    ramp = 2 / (1 + np.exp(-10 * np.arange(total) / total)) - 1
    for epoch, record in enumerate(result.fit.history):
        np.testing.assert_allclose(
            record["train_grl_lambda"], ramp[epoch * 8 : (epoch + 1) * 8].mean(), rtol=1e-5
        )
    assert int(result.fit.state.model_state[PROGRESS]["step"]) == total
