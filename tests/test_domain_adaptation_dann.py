import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_counter import CompileCounter

from ml_adv import make_spec
from ml_adv.data.catalog import load_dataset
from ml_adv.domain_adaptation import dann as dann_mod
from ml_adv.domain_adaptation.dann import (
    PROGRESS,
    DANNModel,
    base_variables,
    dann_objective,
    domain_accuracy,
    domain_loss,
    fit_dann,
)
from ml_adv.errors import ConfigError, DataError
from ml_adv.rundir import Run
from ml_adv.training.config import TrainConfig
from ml_adv.training.loop import EpochCallback


@pytest.fixture(scope="module")
def domains():
    source = load_dataset("digits_m_source", split="train")
    target = load_dataset("digits_m", split="train")
    return source.subset(np.arange(192)), target.subset(np.arange(192, 320))


def test_domain_loss_matches_numpy():
    logits = np.asarray([[0.3], [-1.2], [2.0], [0.0]], np.float32)
    ids = np.asarray([0, 1, 1, 0])
    p = 1 / (1 + np.exp(-logits[:, 0]))
    want = -np.mean(ids * np.log(p) + (1 - ids) * np.log(1 - p))
    np.testing.assert_allclose(domain_loss(jnp.asarray(logits), jnp.asarray(ids)), want, rtol=1e-5)
    assert (
        float(domain_accuracy(jnp.asarray(logits), jnp.asarray(ids))) == 0.5
    )  # 0.3 -> 1 and -1.2 -> 0 are wrong
    multi = np.asarray([[1.0, 0.0, -1.0], [0.2, 0.1, 3.0]], np.float32)
    ids3 = np.asarray([0, 2])
    logp = multi - np.log(np.exp(multi).sum(-1, keepdims=True))
    np.testing.assert_allclose(
        domain_loss(jnp.asarray(multi), jnp.asarray(ids3)), -np.mean(logp[[0, 1], ids3]), rtol=1e-5
    )


def _init(module, x):
    return module.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x, train=False
    )


def test_discriminator_gradient_reaches_the_features_reversed():
    spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10, size="tiny")
    module = DANNModel(spec.build())
    x = jax.random.normal(jax.random.PRNGKey(2), (6, 64))
    variables = _init(module, x)
    assert set(variables["params"]) == {"base", "discriminator"} and set(
        variables["params"]["base"]
    ) == {"encoder", "head"}
    feats = module.apply(variables, x, method=DANNModel.features)
    plain = jax.grad(
        lambda f: jnp.sum(module.apply(variables, f, method=lambda m, f: m.discriminator(f)))
    )(feats)
    rev = jax.grad(
        lambda f: jnp.sum(
            module.apply(variables, f, jnp.float32(0.4), method=DANNModel.discriminate)
        )
    )(feats)
    np.testing.assert_allclose(rev, -0.4 * plain, rtol=1e-5, atol=1e-7)
    # __call__ is the base classifier, unchanged.
    np.testing.assert_allclose(
        module.apply(variables, x),
        spec.build().apply({"params": variables["params"]["base"]}, x),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "arch,shape,kind",
    [
        ("cnn", (8, 8, 1), "image"),
        ("lstm", (8, 8), "sequence"),
        ("transformer", (8, 8), "sequence"),
        ("bert", (65,), "tokens"),
    ],
)
def test_every_builtin_architecture_traces_a_dann_step(arch, shape, kind):
    spec = make_spec(arch, input_shape=shape, input_kind=kind, num_classes=10, size="tiny")
    module = DANNModel(spec.build(), num_domains=3)
    x = spec.example_input()
    x = jnp.concatenate([x] * 4)
    variables = dict(jax.eval_shape(lambda: _init(module, x)))
    params = variables.pop("params")
    objective = dann_objective(module, streams=("a", "b", "t"), total_steps=10)
    batch = {n: {"x": x, "y": jnp.zeros((4,), jnp.int32)} for n in ("a", "b", "t")}
    out = jax.eval_shape(
        jax.value_and_grad(objective, has_aux=True),
        params,
        variables,
        batch,
        jax.random.PRNGKey(0),
        {},
    )
    (loss, aux), grads = out
    assert loss.shape == () and aux["model_state"][PROGRESS]["step"].shape == ()
    # Three domains: a 3-way discriminator.
    assert grads["discriminator"]["Dense_1"]["kernel"].shape[-1] == 3


class _Interrupted(Exception):
    pass


def _interrupt_after(epochs):
    def callback(record):
        if record["epoch"] == epochs:
            raise _Interrupted  # like a kill between epochs: the run's checkpoints stay behind

    return callback


def test_fit_dann_one_compiled_epoch_lambda_ramps_counter_counts_and_resumes_bitwise(
    domains, monkeypatch, tmp_path
):
    source, target = domains
    traces = []
    real = dann_mod.grl_schedule
    monkeypatch.setattr(
        dann_mod, "grl_schedule", lambda *a, **k: (traces.append(1), real(*a, **k))[1]
    )
    spec = make_spec(
        "mlp", input_shape=source.example_shape, input_kind="image", num_classes=10, size="tiny"
    )
    config = TrainConfig(epochs=3, batch_size=32, seed=3)
    result = fit_dann(spec, source, target, config, val=target)
    history = result.fit.history
    lambdas = [h["train_grl_lambda"] for h in history]
    assert lambdas[0] < lambdas[1] < lambdas[2] < 1.0
    assert len(traces) == 1  # one trace of the step for the whole run: lambda is data
    assert int(result.fit.state.model_state[PROGRESS]["step"]) == int(result.fit.state.step) == 18
    assert all(np.isfinite(h["train_domain_loss"]) and "val_accuracy" in h for h in history)
    assert set(result.variables) == {"params"} and set(result.variables["params"]) == {
        "encoder",
        "head",
    }
    # The extracted variables are the base classifier's: same logits as the wrapper.
    logits = spec.build().apply(result.variables, jnp.asarray(target.x[:5]))
    wrapped = result.module.apply(
        {"params": result.fit.state.params, **result.fit.state.model_state},
        jnp.asarray(target.x[:5]),
    )
    np.testing.assert_allclose(logits, wrapped, rtol=1e-6)
    # The same run interrupted after epoch 1 and resumed from its run directory matches the
    # uninterrupted one bit for bit (parameters, discriminator, optimizer step, lambda counter);
    # both reuse the compiled epoch: checkpointing and restoring compile nothing either.
    with CompileCounter() as compiles:
        with pytest.raises(_Interrupted):
            fit_dann(
                spec,
                source,
                target,
                config,
                run=Run.at(tmp_path / "dann"),
                hooks=[EpochCallback(_interrupt_after(1))],
            )
        resumed = fit_dann(spec, source, target, config, run=tmp_path / "dann")
    assert compiles.count == 0
    assert resumed.fit.resumed_from == 1 and [h["epoch"] for h in resumed.fit.history] == [1, 2, 3]
    for a, b in zip(
        jax.tree.leaves((resumed.fit.state.params, resumed.fit.state.model_state)),
        jax.tree.leaves((result.fit.state.params, result.fit.state.model_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert int(resumed.fit.state.step) == 18
    assert len(traces) == 1


def test_init_params_start_from_the_source_model(domains):
    source, target = domains
    spec = make_spec(
        "mlp", input_shape=source.example_shape, input_kind="image", num_classes=10, size="tiny"
    )
    base_params = spec.build().init(jax.random.PRNGKey(7), jnp.asarray(source.x[:1]), train=False)[
        "params"
    ]
    # The run structure of the test above (its compiled epoch is reused; the rate is traced).
    config = TrainConfig(epochs=3, batch_size=32, learning_rate=1e-9)
    result = fit_dann(spec, source, target, config, init_params=base_params)
    # A vanishing learning rate: the base model is the one passed in.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
        result.variables["params"],
        base_params,
    )


def test_bad_input_fails_before_compiling(domains):
    source, target = domains
    spec = make_spec(
        "mlp", input_shape=source.example_shape, input_kind="image", num_classes=10, size="tiny"
    )
    config = TrainConfig(epochs=1, batch_size=32)
    flat = load_dataset("digits_flat", split="train").subset(np.arange(64))
    with pytest.raises(DataError, match="target: expected example shape"):
        fit_dann(spec, source, flat, config)
    with pytest.raises(DataError, match="sources"):
        fit_dann(spec, [], target, config)

    class NoFeatures(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(10)(x.reshape(x.shape[0], -1))

    with pytest.raises(ConfigError, match="features"):
        fit_dann(NoFeatures(), source, target, config)


def test_base_variables_pick_the_base_collections():
    params = {"base": {"w": 1}, "discriminator": {"w": 2}}
    state = {PROGRESS: {"step": 3}, "batch_stats": {"base": {"m": 4}}}
    assert base_variables(params, state) == {"params": {"w": 1}, "batch_stats": {"m": 4}}
