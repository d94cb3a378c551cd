"""Pruners: the median and successive-halving rules, and pruning inside a trial."""

import dataclasses

import pytest

from ml_adv.errors import ConfigError
from ml_adv.hpo.objective import run_trial
from ml_adv.hpo.pruning import MedianPruner, SuccessiveHalvingPruner, resolve_pruner


def test_median_pruner_waits_for_warmup_and_startup_trials():
    pruner = MedianPruner(n_startup_trials=2, n_warmup_epochs=1)
    reference = [[0.5, 0.6, 0.7], [0.3, 0.8, 0.9]]
    assert not pruner.should_prune(1, 0.0, reference)  # warm-up epoch
    assert pruner.should_prune(2, 0.69, reference)  # median at epoch 2 is 0.7
    assert not pruner.should_prune(2, 0.71, reference)
    assert not pruner.should_prune(2, 0.1, reference[:1])  # one earlier trial < n_startup_trials
    assert not pruner.should_prune(4, 0.1, reference)  # nobody reached epoch 4
    assert pruner.should_prune(2, float("nan"), reference)


def test_successive_halving_keeps_the_top_fraction_at_rungs():
    pruner = SuccessiveHalvingPruner(min_epochs=1, reduction_factor=3)
    assert [e for e in range(1, 30) if pruner.is_rung(e)] == [1, 3, 9, 27]
    reference = [
        [0.9, 0.1, 0.2],
        [0.8, 0.2, 0.3],
        [0.7, 0.3, 0.4],
        [0.6, 0.4, 0.5],
        [0.5, 0.5, 0.6],
    ]
    # rung 1: six competitors keep the best 6 // 3 = 2 (0.9, 0.8)
    assert pruner.should_prune(1, 0.75, reference) and not pruner.should_prune(1, 0.85, reference)
    assert not pruner.should_prune(2, 0.0, reference)  # not a rung
    assert not pruner.should_prune(1, 0.0, [])  # alone at a rung: kept (max(1, 1 // 3) = 1)
    assert pruner.should_prune(1, 0.4, [[0.5]])  # two competitors: only the best is kept


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MedianPruner(n_startup_trials=0), "n_startup_trials"),
        (lambda: MedianPruner(n_warmup_epochs=-1), "n_warmup_epochs"),
        (lambda: SuccessiveHalvingPruner(reduction_factor=1), "reduction_factor"),
        (lambda: resolve_pruner("hyperband"), "pruner"),
        (lambda: resolve_pruner(3), "pruner"),
    ],
)
def test_bad_pruners_are_rejected(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@dataclasses.dataclass
class Curve:
    """An objective that reports a fixed learning curve through fit's epoch_callback."""

    curve: list
    metric: str = "val_accuracy"

    def __call__(self, config, epoch_callback=None):
        seen = []
        for epoch, value in enumerate(self.curve, start=1):
            seen.append(value)
            if epoch_callback is not None and epoch_callback({"epoch": epoch, self.metric: value}):
                break
        return {"score": seen[-1], "metrics": {"epochs_run": len(seen)}}


def test_run_trial_stops_a_pruned_trial_and_records_its_curve():
    reference = [[0.5, 0.6, 0.7, 0.8]] * 3
    out = run_trial(
        Curve([0.4, 0.45, 0.5, 0.55]),
        {},
        MedianPruner(n_startup_trials=3, n_warmup_epochs=1),
        reference,
    )
    assert out["status"] == "pruned" and out["intermediate"] == [0.4, 0.45] and out["score"] == 0.45
    good = run_trial(Curve([0.6, 0.7, 0.8, 0.9]), {}, MedianPruner(n_startup_trials=3), reference)
    assert (
        good["status"] == "ok"
        and good["intermediate"] == [0.6, 0.7, 0.8, 0.9]
        and good["score"] == 0.9
    )
    unpruned = run_trial(Curve([0.4, 0.45]), {})
    assert unpruned["status"] == "ok" and unpruned["intermediate"] == [0.4, 0.45]
