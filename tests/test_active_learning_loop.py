"""Loop helpers: per-round training config and the adaptive switching rule."""

from ml_adv.active_learning import ActiveLearningConfig
from ml_adv.active_learning.loop import adaptive_choice, round_config
from ml_adv.training.config import TrainConfig

CONFIG = ActiveLearningConfig(
    train=TrainConfig(epochs=4, batch_size=32), update_epochs=2, min_steps=8
)


def test_round_config_reaches_min_steps():
    cfg = round_config(CONFIG, n_labelled=20, round_index=3, warm=True)
    assert cfg.batch_size == 20 and cfg.epochs == 8 and cfg.seed == 3
    assert round_config(CONFIG, n_labelled=640, round_index=0, warm=False).epochs == 4


def test_adaptive_rule_switches_on_stagnation_and_back():
    def curve(*points):
        return [
            {"round": i, "val_accuracy": acc, "strategy": s} for i, (acc, s) in enumerate(points)
        ]

    rising = curve((0.5, None), (0.6, "entropy"), (0.7, "entropy"))
    assert adaptive_choice(rising, "entropy", "diversity", patience=2, min_gain=0.01) == (
        "entropy",
        None,
    )
    flat = curve((0.5, None), (0.8, "entropy"), (0.801, "entropy"), (0.802, "entropy"))
    name, why = adaptive_choice(flat, "entropy", "diversity", patience=2, min_gain=0.01)
    assert name == "diversity" and "switched to diversity" in why
    # Just switched: the fallback gets `patience` rounds before it is judged.
    switched = flat + [{"val_accuracy": 0.80, "strategy": "diversity"}]
    assert adaptive_choice(switched, "entropy", "diversity", patience=2, min_gain=0.01) == (
        "diversity",
        None,
    )
    stale = flat + [
        {"val_accuracy": 0.80, "strategy": "diversity"},
        {"val_accuracy": 0.80, "strategy": "diversity"},
    ]
    assert adaptive_choice(stale, "entropy", "diversity", patience=2, min_gain=0.01)[0] == "entropy"


def test_mc_predictive_scores_read_the_mean_of_the_dropout_passes(digits_images):
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ml_adv.active_learning import scores as S
    from ml_adv.active_learning.loop import Predictor, choose
    from ml_adv.active_learning.strategies import STRATEGIES
    from ml_adv.models.registry import make_spec

    train, _ = digits_images
    spec = make_spec(
        "mlp", input_shape=(8, 8, 1), input_kind="image", num_classes=10, size="tiny", dropout=0.5
    )
    module = spec.build()
    predictor = Predictor(
        module.apply, module.init(jax.random.PRNGKey(0), train.x[:1], train=False)
    )
    x, key = train.x[:64], jax.random.PRNGKey(3)
    config = ActiveLearningConfig(mc_samples=8, chunk=32)
    available = np.ones(64, bool)

    def picks(cfg):
        return choose(
            STRATEGIES.get("entropy"), predictor, x, available, 5, key, labelled_x=None, config=cfg
        )

    # the same chunks and keys as choose: chunk i uses fold_in(key, i)
    log_p = jnp.concatenate(
        [
            jax.nn.log_softmax(
                predictor.samples(x[i * 32 : (i + 1) * 32], jax.random.fold_in(key, i), 8), -1
            )
            for i in range(2)
        ],
        axis=1,
    )
    mean_entropy = S.entropy(jax.nn.logsumexp(log_p, axis=0) - jnp.log(8.0))
    expected = np.asarray(jax.lax.top_k(mean_entropy, 5)[1])
    assert picks(dataclasses.replace(config, mc_predictive=True)).tolist() == expected.tolist()
    deterministic = np.asarray(jax.lax.top_k(S.entropy(predictor.logits(x)), 5)[1])
    assert picks(config).tolist() == deterministic.tolist()
