"""AdvancedActiveLearning end to end on real digits with a tiny MLP: the loop, restore, budget,
stopping."""

import numpy as np
import pytest

from ml_adv.active_learning import ActiveLearningConfig, AdvancedActiveLearning, Budget, Strategy
from ml_adv.active_learning.loop import choose, predictor_for
from ml_adv.active_learning.strategies import STRATEGIES
from ml_adv.errors import BudgetError, ConfigError, DataError, NotFittedError
from ml_adv.training.config import TrainConfig

CONFIG = ActiveLearningConfig(
    train=TrainConfig(epochs=4, batch_size=32, learning_rate=3e-3),
    update_epochs=2,
    min_steps=8,
    mc_samples=3,
)


def make(run_dir, strategy="entropy", **kwargs):
    return AdvancedActiveLearning(
        strategy,
        architecture="mlp",
        size="tiny",
        num_classes=10,
        run_dir=run_dir,
        config=CONFIG,
        **kwargs,
    )


@pytest.fixture(scope="module")
def data(small_digits, digits_images):
    val = digits_images[1].subset(np.arange(120))
    return small_digits.x[:40], small_digits.y[:40], small_digits.x[40:], small_digits.y[40:], val


@pytest.fixture(scope="module")
def looped(tmp_path_factory, data):
    x0, y0, pool, oracle, val = data
    run_dir = tmp_path_factory.mktemp("al") / "run"
    al = make(run_dir, validation_data=val)
    al.add_labeled_data(x0, y0)
    al.add_unlabeled_data(pool)
    picked = []
    for _ in range(2):
        samples, idx = al.select_samples(n_samples=16)
        np.testing.assert_array_equal(samples, pool[idx])
        picked.append(idx)
        assert al.update_model(oracle[idx]) is True
    return al, run_dir, picked


def test_loop_records_labels_in_order_and_warm_starts(looped, data):
    al, _, picked = looped
    x0, y0, pool, oracle, _ = data
    both = np.concatenate(picked)
    assert len(set(both.tolist())) == 32 and both.min() >= 0 and both.max() < len(pool)
    x, y = al.store.labelled()
    np.testing.assert_array_equal(x, np.concatenate([x0, pool[both]]))
    np.testing.assert_array_equal(y, np.concatenate([y0, oracle[both]]))
    curve = al.get_learning_curve()
    assert [p["labels"] for p in curve] == [40, 56, 72]
    assert [p["warm_start"] for p in curve] == [False, True, True]
    assert [p["strategy"] for p in curve] == [None, "entropy", "entropy"]
    assert all(0.0 <= p["val_accuracy"] <= 1.0 for p in curve)
    # The labelled set grows inside a fixed-capacity pool: later rounds reuse the compiled
    # epoch (a real compile of it takes seconds here; a cache hit, milliseconds).
    assert all(p["compile_seconds"] < 0.25 for p in curve[1:]), [
        p["compile_seconds"] for p in curve
    ]
    stats = al.get_active_learning_statistics()
    assert (
        stats["rounds"] == 2 and stats["labelled"] == 72 and stats["unlabelled"] == len(pool) - 32
    )
    assert stats["budget"] == {"enabled": False} and stats["model_is_current"]


def test_every_strategy_picks_valid_distinct_samples(looped):
    al = looped[0]
    available = al.store.available
    initial = al.store.initial_labelled()[0]
    for name in ("random", "margin", "least_confidence", "bald", "diversity", "hybrid"):
        picks = choose(
            STRATEGIES.get(name),
            predictor_for(al._apply_fn(), al.model),
            al.store.pool_x,
            available,
            12,
            __import__("jax").random.PRNGKey(0),
            labelled_x=initial,
            config=CONFIG,
        )
        assert len(picks) == 12 and len(set(picks.tolist())) == 12 and available[picks].all(), name


def test_restart_restores_everything_without_training(looped, data):
    al, run_dir, _ = looped
    x0, y0, pool, _, val = data
    again = make(run_dir, validation_data=val)
    again.add_labeled_data(x0, y0)  # the same script run again: recognised, not duplicated
    again.add_unlabeled_data(pool)
    assert again.get_active_learning_statistics()["labelled"] == 72
    assert again.store.restored and again.store.model_is_current
    leaves = lambda m: __import__("jax").tree.leaves(m.variables)  # noqa: E731
    for a, b in zip(leaves(al.model), leaves(again.model)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert again.get_learning_curve() == al.get_learning_curve()
    with pytest.raises(DataError, match="different data"):
        make(run_dir).add_labeled_data(x0, (y0 + 1) % 10)


def test_adaptive_sampling_switches_when_uncertainty_stagnates(looped, data):
    x0, y0, pool, oracle, val = data
    al = make(None, validation_data=val)
    al.add_labeled_data(x0, y0)
    al.add_unlabeled_data(pool)
    # min_gain=1: no round can gain 100 points, so each judged strategy "stagnates".
    al.set_adaptive_sampling(True, fallback="diversity", patience=1, min_gain=1.0)
    used = []
    for _ in range(3):
        _, idx = al.select_samples(8)
        used.append(al.store.pending_strategy)
        al.update_model(oracle[idx])
    assert used == ["entropy", "diversity", "entropy"]
    switches = al.get_active_learning_statistics()["adaptive"]["switches"]
    assert [s["to"] for s in switches] == [
        "diversity",
        "entropy",
    ] and "switched to diversity" in switches[0]["reason"]
    assert [p["strategy"] for p in al.get_learning_curve()] == [
        None,
        "entropy",
        "diversity",
        "entropy",
    ]


def test_committee_bald_uses_stacked_members_and_restores(tmp_path, data):
    import dataclasses
    import warnings

    import jax

    from ml_adv.active_learning import bald
    from ml_adv.training.stacked import StackedModel

    x0, y0, pool, oracle, val = data
    config = dataclasses.replace(CONFIG, members=3)

    def committee():
        return AdvancedActiveLearning(
            "bald",
            architecture="mlp",
            size="tiny",
            num_classes=10,
            config=config,
            model_overrides={"dropout": 0.0},
            run_dir=tmp_path / "c",
            validation_data=val,
        )

    al = committee()
    al.add_labeled_data(x0, y0)
    al.add_unlabeled_data(pool)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error"
        )  # no "every score is 0": the members disagree without dropout
        _, idx = al.select_samples(8)
    assert isinstance(al.model, StackedModel) and al.model.members == 3
    member_logits = al.model.logits(pool[idx])
    assert member_logits.shape == (3, 8, 10) and float(bald(member_logits).min()) > 0
    assert al.update_model(oracle[idx])
    assert [p["labels"] for p in al.get_learning_curve()] == [40, 48]
    again = committee()
    assert isinstance(again.model, StackedModel) and again.store.model_is_current
    for a, b in zip(jax.tree.leaves(al.model.variables), jax.tree.leaves(again.model.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_threshold_stops_the_loop(tmp_path, looped, data):
    al = looped[0]
    al.set_performance_threshold(0.05)
    assert al.stopped and "threshold" in al.stop_reason
    samples, idx = al.select_samples(5)
    assert len(idx) == 0 and samples.shape[0] == 0
    assert al.update_model([]) is False
    al.set_performance_threshold(None)
    assert not al.stopped


def test_bad_updates_are_rejected_and_nothing_recorded(tmp_path, data):
    _, _, pool, oracle, _ = data
    al = make(tmp_path / "r", strategy="random")  # no seed labels: selection needs no model
    al.add_unlabeled_data(pool)
    with pytest.raises(NotFittedError, match="select_samples"):
        al.update_model([1, 2])
    _, idx = al.select_samples(4)
    journal = (tmp_path / "r" / "journal.jsonl").read_text()
    for bad, match in (
        ([1, 2, 3], "expected 4 labels"),
        ([0, 1, 2, 10], r"class ids in \[0, 10\)"),
        ({int(i) + 1: 0 for i in idx}, "selected pool indices"),
    ):
        with pytest.raises(DataError, match=match):
            al.update_model(bad)
    with pytest.raises(DataError, match="indices"):
        al.update_model(oracle[idx], indices=idx[::-1])
    with pytest.raises(ConfigError, match="await labels"):
        al.select_samples(5)
    assert al.select_samples(4).indices.tolist() == idx.tolist()  # the pending selection again
    assert (tmp_path / "r" / "journal.jsonl").read_text() == journal and al.store.rounds == 0


def test_budget_raises_or_trims_and_reports(tmp_path, data):
    pool = data[2]
    al = make(tmp_path / "b", strategy="random")
    al.add_unlabeled_data(pool)
    costs = np.full(len(pool), 2.0)
    al.set_budget_management(enabled=True, budget=7, costs=costs)
    with pytest.raises(BudgetError, match="only 7"):
        al.select_samples(4)
    al.set_budget_management(enabled=True, budget=7, costs=costs, trim=True)
    assert len(al.select_samples(4).indices) == 3
    stats = al.get_active_learning_statistics()["budget"]
    assert stats["used"] == 0 and stats["left"] == 7 and stats["per_sample_costs"]
    with pytest.raises(ConfigError, match="budget"):
        al.set_budget_management(enabled=True, budget=-1)
    with pytest.raises(DataError, match="one cost per pool sample"):
        al.set_budget_management(enabled=True, budget=5, costs=np.ones(3))


def test_budget_management_without_a_cap_accounts_the_cost(tmp_path, data):
    """SEED.md's ``set_budget_management(enabled=True)``: no cap, the labels' cost counted."""
    pool = data[2]
    al = make(tmp_path / "u", strategy="random")
    al.add_unlabeled_data(pool)
    al.set_budget_management(enabled=True, costs=np.full(len(pool), 2.0))
    assert len(al.select_samples(len(pool)).indices) == len(pool)  # nothing is cut
    stats = al.get_active_learning_statistics()["budget"]
    assert stats == {**stats, "enabled": True, "total": None, "used": 0.0, "left": None}
    budget = Budget(None, np.full(4, 2.0))
    assert budget.charge([0, 3]) == 4.0 and budget.used == 4.0 and not budget.spent


def test_config_errors():
    with pytest.raises(ConfigError, match="sampling_strategy"):
        AdvancedActiveLearning("uncertain")
    with pytest.raises(ConfigError, match="architecture"):
        AdvancedActiveLearning("entropy", architecture="resnet")
    with pytest.raises(ConfigError, match="score"):
        Strategy("mine", score="variance")
    with pytest.raises(NotFittedError, match="add_unlabeled_data"):
        AdvancedActiveLearning("random").select_samples(3)
    with pytest.raises(ConfigError, match="threshold"):
        AdvancedActiveLearning("random").set_performance_threshold(1.5)
    with pytest.raises(ConfigError, match="fallback"):
        AdvancedActiveLearning("random").set_adaptive_sampling(True, fallback="nope")


def test_threshold_and_adaptive_need_validation_data(data):
    al = AdvancedActiveLearning("random", num_classes=10)
    al.add_unlabeled_data(data[2])
    al.set_adaptive_sampling(True)
    with pytest.raises(NotFittedError, match="validation_data"):
        al.select_samples(2)
    al.set_adaptive_sampling(False)
    assert len(al.select_samples(2).indices) == 2


CRASHING_SCRIPT = """
import os, signal, sys
import numpy as np
from ml_adv.active_learning import facade
from ml_adv.data.catalog import load_dataset

def killed_while_training(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

facade.train_round = killed_while_training
digits = load_dataset("digits", split="train").subset(np.arange(256))
al = facade.AdvancedActiveLearning(
    "random", architecture="mlp", size="tiny", num_classes=10, run_dir=sys.argv[1]
)
al.add_unlabeled_data(digits.x[40:])  # no seed labels: "random" selects without a model
al.set_budget_management(enabled=True, budget=50, costs=np.full(216, 1.5))
samples, idx = al.select_samples(8)
al.update_model(digits.y[40:][idx])
raise SystemExit("not reached: training should have been killed")
"""


def test_sigkill_during_training_loses_no_label(tmp_path, data):
    import json
    import subprocess
    import sys

    _, _, pool, oracle, _ = data
    run_dir = tmp_path / "crash"
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_SCRIPT, str(run_dir)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    last = json.loads((run_dir / "journal.jsonl").read_text().splitlines()[-1])
    assert last["op"] == "label" and len(last["labels"]) == 8

    al = make(run_dir, strategy="random")
    al.add_unlabeled_data(pool)  # the same script again (allowed although costs are set: a replay)
    stats = al.get_active_learning_statistics()
    assert stats["labelled"] == 8 and stats["pending"] == 0 and stats["rounds"] == 1
    assert (
        stats["budget"]["used"] == 12
        and stats["budget"]["left"] == 38
        and stats["budget"]["per_sample_costs"]
    )
    assert not stats["model_is_current"] and al.model is None
    np.testing.assert_array_equal(al.store.pool_labels[last["indices"]], oracle[last["indices"]])
    _, idx = al.select_samples(8)  # continues: the owed training runs first
    assert [p["labels"] for p in al.get_learning_curve()] == [8] and al.store.model_is_current
    assert len(set(idx.tolist()) & set(last["indices"])) == 0


@pytest.mark.slow
def test_uncertainty_beats_random_at_equal_labels_on_digits(digits_images):
    """Real digits, small MLP, 20 seeded random labels + 2 rounds of 40: margin vs random at 100
    labels.

    Measured (seeds 0/1/2): margin 0.914/0.911/0.919 vs random 0.883/0.894/0.877 test accuracy
    (+3.1/+1.7/+4.2 points). Asserted: margin ahead on every seed and by >= 2 points on
    average; CPU runs are deterministic for a seed.
    """
    from ml_adv.active_learning.simulate import simulate_loop

    train, test = digits_images
    config = ActiveLearningConfig(
        train=TrainConfig(epochs=30, batch_size=32, learning_rate=2e-3),
        update_epochs=5,
        min_steps=60,
    )
    gaps = []
    for seed in (0, 1, 2):
        final = {}
        for name in ("random", "margin"):
            curve = simulate_loop(
                name, train, test, rounds=2, query_size=40, initial=20, seed=seed, config=config
            )
            assert [p["labels"] for p in curve] == [20, 60, 100]
            final[name] = curve[-1]["val_accuracy"]
        assert final["margin"] > final["random"], (seed, final)
        gaps.append(final["margin"] - final["random"])
    assert np.mean(gaps) >= 0.02, gaps
