"""BERT masked-token pretraining: the corruption rule, learning, and transfer into
classification."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.errors import ConfigError, DataError
from ml_adv.rundir import Run
from ml_adv.training import TrainConfig, fit
from ml_adv.training.pretraining import mask_tokens, pretrain_masked_lm


def test_mask_tokens_follows_the_bert_rule():
    tokens = jnp.concatenate(
        [jnp.ones((200, 1), jnp.int32), jnp.full((200, 64), 10, jnp.int32)], axis=1
    )
    corrupted, chosen = mask_tokens(tokens, jax.random.PRNGKey(0), vocab_size=21, mask_rate=0.15)
    chosen, corrupted = np.asarray(chosen), np.asarray(corrupted)
    assert not chosen[:, 0].any()  # [CLS] (a special token) is never chosen
    assert abs(chosen.mean() * 65 / 64 - 0.15) < 0.01
    picked = corrupted[chosen]
    assert abs(np.mean(picked == 3) - 0.8) < 0.03  # [MASK]
    assert np.all(corrupted[~chosen] == np.asarray(tokens)[~chosen])
    assert np.all((picked >= 3) & (picked < 21))


@pytest.mark.slow
def test_pretraining_learns_and_transfers(tmp_path):
    from ml_adv.data.catalog import load_dataset
    from ml_adv.models import AdvancedModelArchitecture

    train = load_dataset("digits_tokens", split="train")
    spec = AdvancedModelArchitecture("bert", size="tiny").design_architecture(
        21, 10, input_shape=train.example_shape, input_kind="tokens"
    )
    pre = pretrain_masked_lm(spec, train, TrainConfig(epochs=4, batch_size=64, learning_rate=3e-3))
    losses = [h["mlm_loss"] for h in pre.history]
    assert losses[-1] < losses[0]
    pixels = np.asarray(train.x[:, 1:]).ravel()
    majority = np.bincount(pixels).max() / pixels.size  # always guessing the commonest pixel value
    print("mlm accuracy", pre.history[-1]["mlm_accuracy"], "majority baseline", majority)
    assert pre.history[-1]["mlm_accuracy"] > majority
    small = train.subset(np.arange(128))
    result = fit(
        spec,
        small,
        TrainConfig(epochs=1, batch_size=32),
        init_params=pre.variables["params"],
        run=Run(progress=False),
    )
    assert result.history and np.isfinite(result.history[-1]["train_loss"])


def test_pretraining_rejects_wrong_inputs(small_digits):
    from ml_adv.models import AdvancedModelArchitecture

    cnn = AdvancedModelArchitecture("cnn").design_architecture(8, 10, input_shape=(8, 8, 1))
    with pytest.raises(ConfigError, match="bert"):
        pretrain_masked_lm(cnn, small_digits)
    bert = AdvancedModelArchitecture("bert", size="tiny").design_architecture(
        21, 10, input_shape=(65,), input_kind="tokens"
    )
    with pytest.raises(DataError, match="token"):
        pretrain_masked_lm(bert, small_digits)


def test_mlm_step_drops_a_nonfinite_update():
    import optax

    from ml_adv.models import AdvancedModelArchitecture
    from ml_adv.training import create_train_state
    from ml_adv.training.pretraining import make_mlm_train_step

    spec = AdvancedModelArchitecture("bert", size="tiny").design_architecture(
        21, 10, input_shape=(9,), input_kind="tokens"
    )
    tokens = jnp.asarray(np.random.default_rng(0).integers(3, 21, (8, 9)), jnp.int32)
    # Initialised in one compiled program (op-by-op initialisation of BERT took ~5 s here).
    state = jax.jit(
        lambda t: create_train_state(
            spec.build(),
            t,
            optax.adam(1e-3),
            init_key=jax.random.PRNGKey(0),
            rng=jax.random.PRNGKey(1),
        )
    )(tokens[:1])
    step = jax.jit(make_mlm_train_step(spec, mask_rate=0.5))
    good, metrics = step(state, {"x": tokens}, jax.random.PRNGKey(2))
    assert float(metrics["nonfinite"]) == 0.0 and int(good.step) == 1
    # Poison every weight tensor: the loss turns non-finite and the state must stay as it was.
    poisoned = state.replace(
        params=jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.inf), state.params)
    )
    new, metrics = step(poisoned, {"x": tokens}, jax.random.PRNGKey(2))
    assert float(metrics["nonfinite"]) == 1.0 and int(new.step) == 1
    for a, b in zip(
        jax.tree.leaves((new.params, new.opt_state)),
        jax.tree.leaves((poisoned.params, poisoned.opt_state)),
    ):
        np.testing.assert_array_equal(a, b)
