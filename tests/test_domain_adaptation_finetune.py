import jax
import numpy as np
import pytest

from ml_adv import make_spec
from ml_adv.domain_adaptation.finetune import (
    finetune_gradual,
    new_head_params,
    stage_plan,
    thaw_order,
    transfer,
    unfreeze_scales,
)
from ml_adv.errors import ConfigError
from ml_adv.training.config import TrainConfig


def _abstract_params(arch, shape, kind):
    spec = make_spec(arch, input_shape=shape, input_kind=kind, num_classes=10, size="tiny")
    return jax.eval_shape(
        lambda: spec.build().init(jax.random.PRNGKey(0), spec.example_input(), train=False)
    )["params"]


def test_thaw_order_goes_from_the_head_down():
    assert thaw_order(_abstract_params("cnn", (8, 8, 1), "image")) == [
        "head",
        "encoder/dense_0",
        "encoder/conv_1",
        "encoder/conv_0",
    ]
    assert thaw_order(_abstract_params("transformer", (8, 8), "sequence")) == [
        "head",
        "encoder/ln_final",
        "encoder/block_0",
        "encoder/pos_embed",
        "encoder/input_proj",
    ]
    bert = thaw_order(_abstract_params("bert", (65,), "tokens"))
    assert bert[:3] == ["head", "encoder/pooler", "encoder/layers_0"] and bert[-1].endswith(
        "embeddings"
    )
    with pytest.raises(ConfigError, match="encoder"):
        thaw_order({"Dense_0": {}})


def test_unfreeze_masks_and_discriminative_scales():
    params = _abstract_params("cnn", (8, 8, 1), "image")
    groups = thaw_order(params)
    scales = unfreeze_scales(params, groups, 2, lr_decay=0.5)
    assert (
        float(scales["head"]["kernel"]) == 1.0
        and float(scales["encoder"]["dense_0"]["bias"]) == 0.5
    )
    assert (
        float(scales["encoder"]["conv_1"]["kernel"]) == 0.0
        and float(scales["encoder"]["conv_0"]["bias"]) == 0.0
    )
    everything = unfreeze_scales(params, groups, len(groups))
    assert all(float(s) == 1.0 for s in jax.tree.leaves(everything))
    assert (
        stage_plan(4, 3) == [2, 3, 4]
        and stage_plan(4, 4) == [1, 2, 3, 4]
        and stage_plan(3, 1) == [3]
    )


@pytest.fixture(scope="module")
def source_model(small_digits):
    # Any parameters of the right tree do; a fresh init keeps the test cheap.
    spec = make_spec(
        "cnn",
        input_shape=small_digits.example_shape,
        input_kind="image",
        num_classes=10,
        size="tiny",
    )
    return spec, jax.jit(lambda k: spec.build().init(k, spec.example_input(), train=False))(
        jax.random.PRNGKey(3)
    )["params"]


def _changed(a, b):
    return {k: not np.allclose(a[k]["kernel"], b[k]["kernel"]) for k in a if "kernel" in a[k]}


def test_gradual_unfreezing_thaws_stage_by_stage_with_one_compiled_epoch(
    source_model, small_digits
):
    spec, params = source_model
    train = small_digits.subset(np.arange(128))
    result = finetune_gradual(
        spec,
        params,
        train,
        TrainConfig(epochs=1, batch_size=32),
        stages=2,
        epochs_per_stage=1,
        val=train,
    )
    assert result.thawed == [
        ["head", "encoder/dense_0"],
        ["head", "encoder/dense_0", "encoder/conv_1", "encoder/conv_0"],
    ]
    assert result.compiled_epochs <= 1  # the second stage reuses the first stage's program
    assert len(result.histories) == 2 and all("val_accuracy" in h[-1] for h in result.histories)
    final = result.state.params
    assert not np.allclose(
        final["encoder"]["conv_0"]["kernel"], params["encoder"]["conv_0"]["kernel"]
    )


def test_transfer_freezes_the_encoder_and_trains_a_new_head(source_model, small_digits):
    spec, params = source_model
    train = small_digits.subset(np.arange(128))
    fresh = new_head_params(spec, params, seed=5)
    assert not np.allclose(fresh["head"]["kernel"], params["head"]["kernel"])
    result = transfer(
        spec, params, train, TrainConfig(epochs=1, batch_size=32, seed=5), head_epochs=1
    )
    out = result.state.params
    jax.tree.map(np.testing.assert_array_equal, out["encoder"], params["encoder"])  # frozen
    assert not np.allclose(out["head"]["kernel"], fresh["head"]["kernel"])  # trained
    both = transfer(
        spec,
        params,
        train,
        TrainConfig(epochs=1, batch_size=32, seed=5),
        head_epochs=1,
        finetune_epochs=1,
    )
    assert both.thawed[-1][-1] == "encoder/conv_0"
    assert not np.allclose(
        both.state.params["encoder"]["conv_0"]["kernel"], params["encoder"]["conv_0"]["kernel"]
    )
