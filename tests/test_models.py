"""Tests for ml_adv.models: the five families at size "tiny", ModelSpec round-trips and the facade.

Each family is compiled once: one jitted function returns the eval, train and bf16 logits and
the features, so the whole module stays well under a minute on 2 CPU cores. Big models (the
SEED examples, e.g. a 224x224 CNN) are only ever traced with ``jax.eval_shape``.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

from ml_adv.errors import ConfigError, ShapeError  # noqa: E402
from ml_adv.models import (  # noqa: E402
    ARCHITECTURES,
    BERT,
    AdvancedModelArchitecture,
    ModelSpec,
    abstract_variables,
    count_params,
    make_spec,
)

NUM_CLASSES = 3
BATCH = 4
LENGTH = 6
VOCAB = 20

CASES = {
    "mlp": dict(input_shape=(8, 8, 1), input_kind="image"),
    "cnn": dict(input_shape=(8, 8, 1), input_kind="image"),
    "lstm": dict(input_shape=(None, 5), input_kind="sequence"),
    "transformer": dict(input_shape=(None, 5), input_kind="sequence"),
    "transformer_tokens": dict(input_shape=(LENGTH,), input_kind="tokens", vocab_size=VOCAB),
    "bert": dict(input_shape=(LENGTH,), input_kind="tokens", vocab_size=VOCAB),
}


def _spec(case: str) -> ModelSpec:
    kw = dict(CASES[case])
    return make_spec(case.split("_")[0], num_classes=NUM_CLASSES, size="tiny", **kw)


def _inputs(spec: ModelSpec, length: int = LENGTH) -> jax.Array:
    key = jax.random.key(1)
    shape = (BATCH, *(length if d is None else d for d in spec.input_shape))
    if spec.input_kind == "tokens":
        return jax.random.randint(key, shape, 1, VOCAB, dtype=jnp.int32)
    return jax.random.normal(key, shape, jnp.float32)


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: (tuple(a.shape), str(a.dtype)), tree)


def _to_bf16(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), tree)


def _key(seed: int) -> jax.Array:
    # rbg keys compile far faster than threefry on CPU; dropout/init use them the same way.
    return jax.random.key(seed, impl="unsafe_rbg")


def _random_like(shapes, seed: int = 0):
    """Concrete variables for an abstract tree: skips compiling ``init`` (seconds per model)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape).astype(s.dtype)), shapes
    )


@functools.cache
def _run(case: str):
    """Init and one compiled call producing every output the per-family tests check."""
    spec = _spec(case)
    module = spec.build()
    x = _inputs(spec)
    # init is traced (eval_shape) but not compiled; test_init_runs runs one real init.
    variables = _random_like(jax.eval_shape(module.init, _key(0), x))

    @jax.jit
    def outputs(variables, x, key):
        bf_vars = _to_bf16(variables)
        bf_x = x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(jnp.bfloat16)
        return {
            "eval": module.apply(variables, x, train=False),
            "train": module.apply(variables, x, train=True, rngs={"dropout": key}),
            "bf16": module.apply(bf_vars, bf_x, train=True, rngs={"dropout": key}),
            "features": module.apply(variables, x, method=type(module).features),
        }

    return spec, module, x, variables, outputs(variables, x, _key(2))


def test_init_runs_and_is_deterministic():
    spec = _spec("mlp")
    module = spec.build()
    x = _inputs(spec)
    init = jax.jit(module.init)
    a, b = init(jax.random.key(0), x), init(jax.random.key(0), x)
    assert _shapes(a) == _shapes(jax.eval_shape(module.init, jax.random.key(0), x))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


# --------------------------------------------------------------------------- per family
@pytest.mark.parametrize("case", list(CASES))
def test_forward_shapes_dropout_and_bf16(case):
    spec, _, x, variables, out = _run(case)
    assert out["eval"].shape == (BATCH, NUM_CLASSES)
    assert out["eval"].dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out["eval"])))
    assert not np.allclose(out["eval"], out["train"])  # dropout active only when train=True
    # mixed precision: bf16 params and inputs compute in bf16 and stay finite
    assert out["bf16"].dtype == jnp.bfloat16
    assert out["bf16"].shape == (BATCH, NUM_CLASSES)
    assert bool(jnp.all(jnp.isfinite(out["bf16"].astype(jnp.float32))))
    if spec.input_kind == "tokens":
        assert x.dtype == jnp.int32


@pytest.mark.parametrize("case", list(CASES))
def test_features_are_penultimate(case):
    _, module, _, variables, out = _run(case)
    feats = out["features"]
    assert feats.ndim == 2 and feats.shape[0] == BATCH
    head = variables["params"]["head"]
    assert head["kernel"].shape == (feats.shape[1], NUM_CLASSES)


@pytest.mark.parametrize("case", list(CASES))
def test_spec_round_trip_rebuilds_identical_module(case):
    spec, module, x, variables, _ = _run(case)
    restored = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    rebuilt = restored.build()
    assert rebuilt.config == module.config
    shapes = jax.eval_shape(rebuilt.init, jax.random.key(0), x)
    assert _shapes(shapes) == _shapes(variables)


@pytest.mark.parametrize("case", ["transformer_tokens", "bert"])
def test_padding_tokens_are_ignored(case):
    """Appending pad tokens (id 0) leaves eval logits unchanged: attention and pooling mask them."""
    spec, module, x, variables, out = _run(case)
    padded = jnp.concatenate([x, jnp.zeros((BATCH, 3), jnp.int32)], axis=1)
    logits = jax.jit(functools.partial(module.apply, train=False))(variables, padded)
    np.testing.assert_allclose(logits, out["eval"], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- BERT heads
def test_bert_heads_segments_and_encode():
    spec, module, x, variables, out = _run("bert")
    params = variables["params"]
    # init through __call__ creates both heads, the MLM head tied to the word embeddings
    assert {"encoder", "head", "mlm"} == set(params) and "pooler" in params["encoder"]
    assert params["mlm"]["bias"].shape == (VOCAB,)
    assert "kernel" not in params["encoder"]["word_embeddings"]

    @jax.jit
    def run(variables, x):
        segments = jnp.ones_like(x)
        return (
            module.apply(variables, x, method=BERT.masked_lm),
            module.apply(variables, x, train=False, segment_ids=segments),
            module.apply(variables, x, method=BERT.encode),
        )

    mlm, seg_logits, hidden = run(variables, x)
    assert mlm.shape == (BATCH, LENGTH, VOCAB)
    assert hidden.shape == (BATCH, LENGTH, module.config.hidden_size)
    assert not np.allclose(seg_logits, out["eval"])
    # init through masked_lm creates the same tree (pretrained weights fine-tune as they are)
    mlm_vars = jax.eval_shape(
        functools.partial(module.init, method=BERT.masked_lm), jax.random.key(0), x
    )
    assert _shapes(mlm_vars) == _shapes(variables)


# --------------------------------------------------------------------------- variants / configs
def test_registry_and_sizes():
    assert set(ARCHITECTURES.names()) >= {"mlp", "cnn", "lstm", "transformer", "bert"}
    for name in ["mlp", "cnn", "lstm", "transformer", "bert"]:
        assert {"tiny", "small", "base"} <= set(ARCHITECTURES.get(name).sizes)


def test_cnn_small_on_digits_and_base_reference_shapes():
    small = make_spec("cnn", input_shape=(8, 8, 1), input_kind="image", num_classes=10)
    params = abstract_variables(small)["params"]["encoder"]
    assert params["conv_0"]["kernel"].shape == (3, 3, 1, 32)
    assert params["conv_1"]["kernel"].shape == (3, 3, 32, 64)
    assert params["dense_0"]["kernel"].shape == (2 * 2 * 64, 128)  # 8 -> 4 -> 2
    base = make_spec(
        "cnn", input_shape=(28, 28, 1), input_kind="image", num_classes=10, size="base"
    )
    assert abstract_variables(base)["params"]["encoder"]["dense_0"]["kernel"].shape == (
        7 * 7 * 64,
        128,
    )
    with pytest.raises(ConfigError, match="conv_features"):
        make_spec("cnn", input_shape=(3, 3, 1), input_kind="image", num_classes=10)


@pytest.mark.parametrize(
    "overrides, feature_dim",
    [({"bidirectional": True}, 16), ({"pooling": "mean", "num_layers": 2}, 8)],
)
def test_lstm_variants(overrides, feature_dim):
    spec = make_spec(
        "lstm",
        input_shape=(None, 5),
        input_kind="sequence",
        num_classes=3,
        size="tiny",
        **overrides,
    )
    module = spec.build()
    x = spec.example_input(2, 7)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    feats = jax.eval_shape(
        functools.partial(module.apply, method=type(module).features), variables, x
    )
    assert feats.shape == (2, feature_dim)


def test_transformer_cls_pooling_and_max_length():
    spec = make_spec(
        "transformer",
        input_shape=(None, 5),
        input_kind="sequence",
        num_classes=3,
        size="tiny",
        pooling="cls",
    )
    variables = abstract_variables(spec)["params"]["encoder"]
    assert variables["cls"].shape == (1, 1, 16)
    assert variables["pos_embed"]["embedding"].shape == (33, 16)  # max_length 32 + the CLS slot
    # max_length grows to the data's length unless overridden
    long = make_spec(
        "transformer", input_shape=(100,), input_kind="tokens", num_classes=3, size="tiny"
    )
    assert long.config.max_length == 100
    with pytest.raises(ConfigError, match="max_length"):
        make_spec(
            "transformer",
            input_shape=(100,),
            input_kind="tokens",
            num_classes=3,
            size="tiny",
            max_length=50,
        )


@pytest.mark.parametrize(
    "arch, overrides, match",
    [
        ("mlp", {"hidden": (3,)}, "unknown option"),
        ("mlp", {"dropout": 1.5}, "dropout"),
        ("mlp", {"activation": "swishy"}, "activation"),
        ("mlp", {"hidden_sizes": ()}, "hidden_sizes"),
        ("cnn", {"kernel_size": 0}, "kernel_size"),
        ("lstm", {"pooling": "max"}, "pooling"),
        ("transformer", {"d_model": 30, "num_heads": 4}, "d_model"),
        ("transformer", {"vocab_size": 10}, "vocab_size"),  # float sequences have no vocabulary
        ("bert", {"num_layers": True}, "num_layers"),
    ],
)
def test_make_config_rejects_bad_overrides(arch, overrides, match):
    kw = {
        "mlp": dict(input_shape=(4,), input_kind="features"),
        "cnn": dict(input_shape=(8, 8, 1), input_kind="image"),
        "lstm": dict(input_shape=(None, 4), input_kind="sequence"),
        "transformer": dict(input_shape=(None, 4), input_kind="sequence"),
        "bert": dict(input_shape=(None,), input_kind="tokens"),
    }[arch]
    with pytest.raises(ConfigError, match=match):
        make_spec(arch, num_classes=3, **kw, **overrides)


def test_make_spec_rejects_bad_shapes():
    with pytest.raises(ShapeError):
        make_spec(
            "mlp", input_shape=(None, 4), input_kind="sequence", num_classes=3
        )  # can't flatten
    with pytest.raises(ShapeError):
        make_spec("cnn", input_shape=(8, 8), input_kind="image", num_classes=3)
    with pytest.raises(ShapeError):
        make_spec("bert", input_shape=(None, 4), input_kind="sequence", num_classes=3)


# --------------------------------------------------------------------------- facade
@pytest.mark.parametrize(
    "arch, input_dim, output_dim, input_shape",
    [
        ("transformer", 768, 10, (None, 768)),
        ("lstm", 256, 5, (None, 256)),
        ("cnn", 224, 1000, (224, 224, 1)),
        ("bert", 768, 10, (None,)),
    ],
)
def test_seed_examples(arch, input_dim, output_dim, input_shape):
    architecture = AdvancedModelArchitecture(architecture_type=arch)
    spec = architecture.design_architecture(input_dim=input_dim, output_dim=output_dim)
    assert spec.architecture == arch and spec.input_shape == input_shape
    assert spec.num_classes == output_dim
    module = spec.build()
    x = spec.example_input(2)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    logits = jax.eval_shape(functools.partial(module.apply, train=False), variables, x)
    assert logits.shape == (2, output_dim)
    assert count_params(spec) > 0
    if arch == "bert":
        assert spec.config.vocab_size == input_dim
        assert variables["params"]["encoder"]["word_embeddings"]["embedding"].shape[0] == input_dim
    if arch == "cnn":
        assert variables["params"]["encoder"]["conv_0"]["kernel"].shape == (3, 3, 1, 32)


def test_facade_token_transformer_and_real_shapes():
    spec = AdvancedModelArchitecture("transformer", size="tiny").design_architecture(
        50, 4, input_kind="tokens"
    )
    assert spec.input_kind == "tokens" and spec.config.vocab_size == 50
    digits = AdvancedModelArchitecture("cnn").design_architecture(8, 10, input_shape=(8, 8, 1))
    assert digits.input_shape == (8, 8, 1)
    flat = AdvancedModelArchitecture("mlp").design_architecture(64, 10, input_shape=(8, 8, 1))
    assert flat.input_kind == "image"
    overridden = AdvancedModelArchitecture("lstm", size="base", bidirectional=True)
    assert overridden.design_architecture(128, 2).config.bidirectional


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(architecture_type="resnet"), "architecture_type"),
        (dict(architecture_type="cnn", size="huge"), "size"),
        (dict(architecture_type="cnn", layers=3), "unknown option"),
    ],
)
def test_facade_rejects_bad_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        AdvancedModelArchitecture(**kwargs)
    if match == "architecture_type":
        assert "transformer" in str(err.value)  # lists the valid names


@pytest.mark.parametrize(
    "arch, args, kwargs, error",
    [
        ("mlp", (0, 10), {}, ConfigError),
        ("mlp", (10, 1), {}, ConfigError),
        ("mlp", (-3, 10), {}, ConfigError),
        ("mlp", (10.0, 10), {}, ConfigError),
        ("mlp", (10, 3), {"input_shape": (8, 8, 1)}, ShapeError),
        ("cnn", (28, 3), {"input_shape": (8, 8, 1)}, ShapeError),
        ("lstm", (256, 3), {"input_shape": (20, 128)}, ShapeError),
        ("transformer", (768, 3), {"input_shape": (None, 512)}, ShapeError),
        ("bert", (100, 3), {"input_shape": (None, 4)}, ShapeError),
    ],
)
def test_facade_rejects_bad_dims(arch, args, kwargs, error):
    with pytest.raises(error) as err:
        AdvancedModelArchitecture(arch).design_architecture(*args, **kwargs)
    if error is ShapeError and arch != "bert":
        assert "input_dim" in str(err.value) and "input_shape" in str(err.value)


def test_facade_vocab_override_must_match_input_dim():
    with pytest.raises(ConfigError, match="vocab_size"):
        AdvancedModelArchitecture("bert", vocab_size=100).design_architecture(200, 2)


def test_gelu_is_the_exact_gelu_with_its_gradient():
    import flax.linen as nn

    from ml_adv.models.layers import ACTIVATIONS, gelu

    assert ACTIVATIONS.get("gelu") is gelu
    x = jnp.linspace(-10.0, 10.0, 2001)
    want, want_grad = jax.vmap(jax.value_and_grad(lambda v: nn.gelu(v, approximate=False)))(x)
    got, got_grad = jax.vmap(jax.value_and_grad(gelu))(x)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-6)
    np.testing.assert_allclose(got_grad, want_grad, atol=2e-6, rtol=1e-5)
    # and not the tanh approximation, which differs by ~5e-4 around |x| ~ 2
    assert float(jnp.abs(got - nn.gelu(x, approximate=True)).max()) > 1e-4
