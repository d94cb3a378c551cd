"""Loop helpers: per-round training config and the adaptive switching rule."""

from ml_adv.active_learning import ActiveLearningConfig
from ml_adv.active_learning.loop import adaptive_choice, round_config
from ml_adv.training.config import TrainConfig

CONFIG = ActiveLearningConfig(train=TrainConfig(epochs=4, batch_size=32), update_epochs=2, min_steps=8)


def test_round_config_reaches_min_steps():
    cfg = round_config(CONFIG, n_labelled=20, round_index=3, warm=True)
    assert cfg.batch_size == 20 and cfg.epochs == 8 and cfg.seed == 3
    assert round_config(CONFIG, n_labelled=640, round_index=0, warm=False).epochs == 4


def test_adaptive_rule_switches_on_stagnation_and_back():
    def curve(*points):
        return [{"round": i, "val_accuracy": acc, "strategy": s} for i, (acc, s) in enumerate(points)]

    rising = curve((0.5, None), (0.6, "entropy"), (0.7, "entropy"))
    assert adaptive_choice(rising, "entropy", "diversity", patience=2, min_gain=0.01) == ("entropy", None)
    flat = curve((0.5, None), (0.8, "entropy"), (0.801, "entropy"), (0.802, "entropy"))
    name, why = adaptive_choice(flat, "entropy", "diversity", patience=2, min_gain=0.01)
    assert name == "diversity" and "switched to diversity" in why
    # Just switched: the fallback gets `patience` rounds before it is judged.
    switched = flat + [{"val_accuracy": 0.80, "strategy": "diversity"}]
    assert adaptive_choice(switched, "entropy", "diversity", patience=2, min_gain=0.01) == ("diversity", None)
    stale = flat + [{"val_accuracy": 0.80, "strategy": "diversity"}, {"val_accuracy": 0.80, "strategy": "diversity"}]
    assert adaptive_choice(stale, "entropy", "diversity", patience=2, min_gain=0.01)[0] == "entropy"
