"""simulate_stacked: lockstep equals alone, resumed equals uninterrupted, inputs checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml_adv.active_learning.stacked_simulation import (
    StackedSimulationConfig,
    balanced_indices,
    grid,
    labels_to_error,
    member_order,
    seed_split,
    simulate_stacked,
)
from ml_adv.data.catalog import load_dataset
from ml_adv.errors import ConfigError, DataError
from ml_adv.models.registry import make_spec
from ml_adv.training.config import TrainConfig

CONFIG = StackedSimulationConfig(
    train=TrainConfig(batch_size=16),
    initial=20,
    query_size=10,
    max_labels=40,
    validation=20,
    pool_subset=100,
    mc_samples=4,
    steps_per_round=6,
    test_subset=100,
    members_as="scan",
)


@pytest.fixture(scope="module")
def digits():
    train, test = (
        load_dataset("digits_flat", split="train"),
        load_dataset("digits_flat", split="test"),
    )
    spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10, size="tiny")
    return spec, train, test


def test_config_rejects_bad_protocols():
    with pytest.raises(ConfigError, match="max_labels"):
        StackedSimulationConfig(initial=20, query_size=7, max_labels=100)
    with pytest.raises(ConfigError, match="steps_per_round"):
        StackedSimulationConfig(steps_per_round=None)
    with pytest.raises(ConfigError, match="members_as"):
        StackedSimulationConfig(members_as="pmap")
    with pytest.raises(ConfigError, match="stop_error"):
        StackedSimulationConfig(stop_error=5.0)
    with pytest.raises(ConfigError, match="mc_predictive"):
        StackedSimulationConfig(mc_predictive="entropy")
    assert CONFIG.rounds == 3 and CONFIG.labels_at(2) == 40
    assert (
        StackedSimulationConfig(
            steps_per_round=None, epochs_per_round=50, train=TrainConfig(batch_size=128)
        ).steps_at(300)
        == 150
    )


def test_bad_inputs_fail_before_training(digits):
    spec, train, test = digits
    with pytest.raises(DataError, match="training examples"):
        simulate_stacked(
            spec, train.subset(np.arange(100)), test, loops=[("random", 0)], config=CONFIG
        )
    with pytest.raises(ConfigError, match="once"):
        simulate_stacked(spec, train, test, loops=[("random", 0), ("random", 0)], config=CONFIG)
    with pytest.raises(ConfigError, match="sampling_strategy"):
        simulate_stacked(spec, train, test, loops=[("nope", 0)], config=CONFIG)


def test_balanced_initial_labels_and_orders(digits):
    _, train, test = digits
    picks = balanced_indices(train.y, 23, np.random.default_rng(0), 10)
    counts = np.bincount(train.y[picks], minlength=10)
    assert len(set(picks.tolist())) == 23 and counts.min() == 2 and counts.max() == 3
    split = seed_split(train, test, 0, CONFIG)
    assert np.bincount(train.y[split.initial], minlength=10).tolist() == [2] * 10
    assert not set(split.val) & set(split.initial) and not set(split.val) & set(split.pool)
    labelled = np.arange(20) * 7
    order = member_order(labelled, steps=5, batch_size=16, rng=np.random.default_rng(1))
    assert order.shape == (5, 16) and set(order.ravel()) == set(labelled)
    # passes over the set: every example is used 4 times in 80 draws
    assert np.bincount(order.ravel() // 7).tolist() == [4] * 20


def test_loops_in_lockstep_equal_loops_run_alone(digits):
    spec, train, test = digits
    loops = grid(["random", "bald", "coreset", "entropy"], [0, 1])
    together = {r.name: r for r in simulate_stacked(spec, train, test, loops=loops, config=CONFIG)}
    alone = simulate_stacked(spec, train, test, loops=[("bald", 1)], config=CONFIG)[0]
    assert together["bald-seed1"].acquired == alone.acquired
    np.testing.assert_allclose(
        [p["test_error"] for p in together["bald-seed1"].curve],
        [p["test_error"] for p in alone.curve],
        atol=1e-9,
    )
    for r in together.values():
        assert [p["labels"] for p in r.curve] == [20, 30, 40]
        assert len(r.acquired) == 40 == len(set(r.acquired))
        assert not set(r.acquired) & set(seed_split(train, test, r.seed, CONFIG).val.tolist())
    # same seed, same first model (common random numbers); another seed, other initial labels
    assert together["random-seed0"].curve[0] == {**together["bald-seed0"].curve[0]}
    assert together["random-seed0"].acquired[:20] != together["random-seed1"].acquired[:20]


def test_resumed_run_equals_uninterrupted(digits, tmp_path):
    spec, train, test = digits
    loops = [("margin", 0), ("hybrid", 0)]
    full = simulate_stacked(spec, train, test, loops=loops, config=CONFIG)

    def crash(round_index, facts):
        if round_index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_stacked(
            spec, train, test, loops=loops, config=CONFIG, checkpoint_dir=tmp_path, on_round=crash
        )
    finished = []
    resumed = simulate_stacked(
        spec,
        train,
        test,
        loops=loops,
        config=CONFIG,
        checkpoint_dir=tmp_path,
        on_finish=finished.append,
    )
    assert [r.acquired for r in resumed] == [r.acquired for r in full]
    assert [r.curve for r in resumed] == [r.curve for r in full]
    assert sorted(r.name for r in finished) == ["hybrid-seed0", "margin-seed0"]


def test_stop_error_ends_a_loop_and_labels_to_error(digits):
    spec, train, test = digits
    easy = dataclasses.replace(
        CONFIG, stop_error=0.99
    )  # any model but a hopeless one stops at once
    (result,) = simulate_stacked(spec, train, test, loops=[("random", 0)], config=easy)
    assert result.stopped_early and len(result.curve) == 1 and result.labels_to_error(0.99) == 20
    curve = [
        {"labels": 20, "test_error": 0.2},
        {"labels": 30, "test_error": 0.09},
        {"labels": 40, "test_error": 0.04},
    ]
    assert labels_to_error(curve, 0.10) == 30 and labels_to_error(curve, 0.05) == 40
    assert labels_to_error(curve, 0.01) is None
