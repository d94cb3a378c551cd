"""Trials on a real dask.distributed LocalCluster (``distributed`` is in the dev extra)."""

import os
import sys

import pytest

distributed = pytest.importorskip("distributed")

from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace  # noqa: E402
from ml_adv.hpo.study import Study  # noqa: E402

SPACE = SearchSpace([Float("x", -3.0, 3.0), Int("n", 1, 5), Categorical("c", ["a", "b"])])


def score(config):
    return {
        "score": -((config["x"] - 1.0) ** 2) - abs(config["n"] - 3) + (config["c"] == "b"),
        "pid": os.getpid(),
    }


class Remote:
    """A picklable objective that records which process evaluated it."""

    metric = None

    def check_space(self, space):
        pass

    def describe(self):
        return {"kind": "function", "fn": "remote-score"}

    def __call__(self, config, epoch_callback=None):
        out = score(config)
        return {"score": out["score"], "metrics": {"pid": out["pid"]}}


def test_trials_run_on_a_dask_local_cluster(tmp_path):
    import cloudpickle

    # The workers cannot import this test module by name: ship its objective by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            result = Study(
                Remote(),
                SPACE,
                method="genetic",
                max_trials=6,
                executor=client,
                run_dir=tmp_path,
                progress=False,
            ).run()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [t["batch"] for t in result.trials] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]  # one trial per worker thread per batch
    assert all(t["status"] == "ok" for t in result.trials)
    assert {t["metrics"]["pid"] for t in result.trials} != {
        os.getpid()
    }  # evaluated in the worker process
    local = Study(
        Remote(), SPACE, method="genetic", max_trials=6, trials_per_batch=2, progress=False
    ).run()
    assert [t["config"] for t in result.trials] == [t["config"] for t in local.trials]
    assert (tmp_path / "trials.jsonl").exists()
