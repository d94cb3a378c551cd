"""The library's own numerics under ``jax_numpy_dtype_promotion="strict"``.

Strict promotion cannot be on for the whole suite: optax's Adam raises a float decay to an
int32 step count (``bias_correction``), and Flax's LayerNorm and LSTM cell mix bfloat16 with
float32 under mixed precision. So these tests trace (lower, without compiling) what ml_adv
itself writes, each model's forward pass, loss and gradient, and prediction, with strict
promotion on: an implicit int/float or bfloat16/float32 mix in our code fails here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv import make_spec
from ml_adv.data.catalog import load_dataset
from ml_adv.training import TrainConfig
from ml_adv.training.objectives import DEFAULT_HPARAMS, masked_lm_objective
from ml_adv.training.setup import default_objective
from ml_adv.training.steps import predict_logits

CASES = [
    ("mlp", "digits_flat", False),
    ("mlp", "digits_flat", True),
    ("cnn", "digits", False),
    ("cnn", "digits", True),
    ("lstm", "digits_sequence", False),
    ("transformer", "digits_tokens", False),
    ("bert", "digits_tokens", False),
]


def _abstract(arch, dataset, mixed_precision, loss="cross_entropy"):
    """(module, config, abstract variables, batch): shapes only, nothing compiled or run."""
    data = load_dataset(dataset, split="train").subset(np.arange(8))
    spec = make_spec(
        arch,
        input_shape=data.example_shape,
        input_kind=data.input_kind,
        num_classes=10,
        size="tiny",
    )
    module = spec.build()
    key = jax.random.PRNGKey(0)
    variables = jax.eval_shape(
        lambda: module.init({"params": key, "dropout": key}, jnp.asarray(data.x), train=False)
    )
    config = TrainConfig(batch_size=8, epochs=1, mixed_precision=mixed_precision, loss=loss)
    return module, config, variables, {"x": jnp.asarray(data.x), "y": jnp.asarray(data.y)}


def _lower_gradient(objective, variables, batch):
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    hparams = {k: jnp.float32(v) for k, v in DEFAULT_HPARAMS.items()}

    def loss(params, model_state):
        return objective(params, model_state, batch, jax.random.PRNGKey(0), hparams)[0]

    jax.jit(jax.value_and_grad(loss)).lower(params, model_state)


@pytest.mark.parametrize(("arch", "dataset", "mixed_precision"), CASES)
def test_training_and_prediction_trace_under_strict_promotion(arch, dataset, mixed_precision):
    module, config, variables, batch = _abstract(arch, dataset, mixed_precision)
    with jax.numpy_dtype_promotion("strict"):
        _lower_gradient(default_objective(module, config), variables, batch)
        jax.eval_shape(
            lambda v: predict_logits(module.apply, v, batch["x"], mixed_precision=mixed_precision),
            variables,
        )


def test_focal_loss_and_masked_lm_trace_under_strict_promotion():
    module, config, variables, batch = _abstract("mlp", "digits_flat", False, loss="focal")
    with jax.numpy_dtype_promotion("strict"):
        _lower_gradient(default_objective(module, config), variables, batch)
    module, _, variables, batch = _abstract("bert", "digits_tokens", False)
    with jax.numpy_dtype_promotion("strict"):
        _lower_gradient(
            masked_lm_objective(module.apply, vocab_size=module.config.vocab_size, mask_rate=0.15),
            variables,
            batch,
        )
