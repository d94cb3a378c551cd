"""Deep ensembles through the stacked core (ml_adv.ensembles.deep) and the facade's resume after a
kill.

The shared deep ensemble (``ensembles_fixtures.deep_ensemble``: two tiny MLPs, one stacked
program) is trained once per session; k-fold CV runs end to end in test_ensembles_command.py.
The kill test trains that same ensemble in a child process with a run directory, kills it
with SIGKILL, resumes it here and compares with the shared, uninterrupted one.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from ensembles_fixtures import deep_ensemble, deep_inputs, split_views

from ml_adv import TrainConfig, load_dataset, make_spec
from ml_adv.ensembles.deep import cross_validation_scores, train_ensemble
from ml_adv.ensembles.facade import AdvancedModelEnsemble as FacadeClass
from ml_adv.ensembles.persistence import RUN_RECORD, run_record
from ml_adv.errors import CheckpointError, ConfigError, DataError
from ml_adv.model_ensemble import AdvancedModelEnsemble

# The child trains exactly the shared deep ensemble, with a run directory. After epoch PARK
# is logged and its checkpoint is on disk, it parks (sleeps) so that the kill lands at a
# known point; the parent then kills it with SIGKILL.
KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from ensembles_fixtures import deep_inputs
    from ml_adv import AdvancedModelEnsemble
    from ml_adv.rundir import RunDirectory

    run_dir, park = Path(sys.argv[1]), int(sys.argv[2])
    append_metrics = RunDirectory.append_metrics

    def parking(self, record):
        out = append_metrics(self, record)
        if record.get("epoch") == park:
            while not (run_dir / "checkpoints" / "latest" / str(park)).is_dir():
                time.sleep(0.01)
            (run_dir / "parked").write_text("")
            time.sleep(600)
        return out

    RunDirectory.append_metrics = parking
    spec, train, config, members = deep_inputs()
    AdvancedModelEnsemble.train(
        spec, train, config, members=members, combination_method="weighted", run_dir=run_dir
    )
    """
)


@pytest.mark.slow
def test_deep_ensemble_resumes_after_sigkill(tmp_path):
    """Killed after epoch 1 of 2, the same call resumes: same ids and weights, same params bit for
    bit."""
    spec, train, config, members = deep_inputs()
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(run_dir), "1", str(Path(__file__).parent)],
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    # The uninterrupted run (no run_dir). This test runs first in the module, so the shared
    # ensemble trains here, on the other core, while the child runs.
    straight = deep_ensemble()
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (run_dir / "parked").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the child run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recorded = json.loads((run_dir / RUN_RECORD).read_text())
    assert len(list((run_dir / "checkpoints" / "latest").glob("[0-9]*"))) == 1  # epoch 2 never ran

    resumed = AdvancedModelEnsemble.train(
        spec, train, config, members=members, combination_method="weighted", run_dir=run_dir
    )
    training = resumed.get_ensemble_statistics()["training"]
    assert training["resumed_from"] == 1 and training["failed"] == [False] * 3
    # The facade's state: the members and weights the killed run recorded before training.
    assert resumed.model_ids == recorded["model_ids"] == training["trained"]
    assert resumed.get_ensemble_statistics()["weights"] == pytest.approx(
        dict(zip(recorded["model_ids"], [1 / 3] * 3))
    )
    for a, b in zip(resumed.models, straight.models):
        for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
            np.testing.assert_array_equal(x, y)
        assert {k: v for k, v in a.metrics.items() if k != "epoch_seconds"} == {
            k: v for k, v in b.metrics.items() if k != "epoch_seconds"
        }
    # Once finished, the same call trains nothing more and returns the same ensemble again.
    again = AdvancedModelEnsemble.train(spec, train, config, members=members, run_dir=run_dir)
    assert (
        again.model_ids == resumed.model_ids
        and again.get_ensemble_statistics()["training"]["resumed_from"] == 2
    )
    # A run directory of another ensemble run is refused, before training.
    with pytest.raises(CheckpointError, match="members=3, folds=None; got members=2"):
        AdvancedModelEnsemble.train(spec, train, config, members=2, run_dir=run_dir)


def test_deep_ensemble_end_to_end():
    """Three MLPs trained as one stacked program by ``AdvancedModelEnsemble.train``."""
    deep, (_, test) = deep_ensemble(), split_views()
    assert FacadeClass is AdvancedModelEnsemble  # the seed import path re-exports the facade
    stats = deep.get_ensemble_statistics()
    assert len(deep) == 3 and stats["stacked_groups"] == [
        deep.model_ids
    ]  # one vmapped forward pass
    assert stats["training"]["failed"] == [False] * 3 and stats["combination_method"] == "averaging"
    perf = deep.get_ensemble_performance(test["features"])
    nlls = [m["nll"] for m in perf["members"].values()]
    assert len(set(nlls)) == 3  # different initialisations and orders: different members
    assert perf["ensemble"]["nll"] <= np.mean(nlls) and perf["ensemble"]["accuracy"] > 0.5
    assert all(
        m.metrics["epoch"] == 2 for m in deep.models
    )  # per-member history from the stacked core


def test_run_record_is_written_once_and_checked(tmp_path):
    from ml_adv.rundir import RunDirectory

    def record(**sizes):
        return run_record(RunDirectory(tmp_path / "r"), **sizes)

    first = record(members=3, folds=3)
    assert len(set(first["model_ids"])) == 3 and first["weights"] == [1.0] * 3
    assert record(members=3, folds=3) == first
    with pytest.raises(CheckpointError, match="folds=3; got members=3, folds=None"):
        record(members=3, folds=None)
    (tmp_path / "r" / RUN_RECORD).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="expected an ensemble record"):
        record(members=3, folds=3)


def test_cross_validation_scores_by_hand():
    labels = np.array([0, 1, 0, 1])
    fold_ids = np.array([0, 0, 1, 1])
    # Member 0 is scored on rows 0, 1 only (its fold): right with p=0.9, then wrong (p(1)=0.2).
    # Member 1 is scored on rows 2, 3 only: right with p=0.9 and p=0.6. Rows outside a
    # member's fold are set so that counting them would change every number.
    probs = np.array(
        [
            [[0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [1.0, 0.0]],
            [[0.0, 1.0], [1.0, 0.0], [0.9, 0.1], [0.4, 0.6]],
        ],
        np.float32,
    )
    report = cross_validation_scores(probs, labels, fold_ids)
    assert report["per_fold"]["accuracy"] == pytest.approx([0.5, 1.0])
    assert report["per_fold"]["nll"] == pytest.approx(
        [-(np.log(0.9) + np.log(0.2)) / 2, -(np.log(0.9) + np.log(0.6)) / 2], rel=1e-5
    )
    assert report["per_fold"]["brier"] == pytest.approx(
        [(0.02 + 1.28) / 2, (0.02 + 0.32) / 2], rel=1e-5
    )
    assert report["mean"]["accuracy"] == pytest.approx(0.75) and report["std"][
        "accuracy"
    ] == pytest.approx(0.25)
    # Out-of-fold predictions: rows 0, 1 from member 0, rows 2, 3 from member 1.
    assert report["out_of_fold"]["accuracy"] == pytest.approx(0.75)


def test_bad_training_requests_fail_before_compiling():
    train = load_dataset("digits_flat", split="train").subset(np.arange(100))
    spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10, size="tiny")
    with pytest.raises(DataError, match="data: expected an ArrayDataset"):
        train_ensemble(spec, (train.x, train.y), TrainConfig(), members=2, folds=None, seed=0)
    with pytest.raises(ConfigError, match="one member per fold"):
        train_ensemble(spec, train, TrainConfig(), members=5, folds=3, seed=0)
    with pytest.raises(ConfigError, match="members: expected a positive integer"):
        train_ensemble(spec, train, TrainConfig(), members=0, folds=None, seed=0)
    with pytest.raises(DataError, match="at least 50 examples"):
        train_ensemble(spec, train, TrainConfig(), members=None, folds=50, seed=0)
