"""``data_parallel="auto"`` (training.core_split): config, the measured choice and its margin,
the run record.

The two-device end-to-end check (a real measurement, the cache, resume) is in test_parallel's
core-split script; here the process has one device. The split is a CPU decision: on other
backends the tests check that nothing is measured.
"""

import json

import jax
import pytest

from ml_adv.errors import ConfigError
from ml_adv.kernels import autotune
from ml_adv.rundir import Run
from ml_adv.training import TrainConfig, core_split


def test_config_accepts_true_false_and_auto_only():
    assert TrainConfig().data_parallel == "auto"
    assert TrainConfig(data_parallel=True).data_parallel is True
    assert TrainConfig(data_parallel=False).data_parallel is False
    with pytest.raises(ConfigError, match="data_parallel: expected True, False or 'auto', got"):
        TrainConfig(data_parallel="yes")


@pytest.fixture
def tuning(tmp_path):
    autotune.configure(enabled=True, cache_dir=tmp_path)
    yield tmp_path
    autotune.configure()


def _fake(seconds):
    def build():
        return lambda: seconds

    return build


@pytest.mark.parametrize(
    ("sharded_s", "expected"),
    [(0.90, core_split.SHARDED), (0.97, core_split.ONE_DEVICE), (1.20, core_split.ONE_DEVICE)],
)
def test_choice_needs_a_clear_win_and_is_cached(tuning, sharded_s, expected):
    if jax.default_backend() != "cpu":
        # The per-core split is a CPU layout: elsewhere "auto" has nothing to measure.
        assert core_split.candidate_mesh(TrainConfig(batch_size=8)) is None
        return
    signature = {"arch": "test", "batch": 8, "devices": 2, "program": f"p{sharded_s}"}
    layouts = {core_split.ONE_DEVICE: _fake(1.0), core_split.SHARDED: _fake(sharded_s)}
    assert (
        core_split.choose(signature, layouts) == expected
    )  # sharding must win by more than MARGIN
    count = autotune.measurements()
    flipped = {core_split.ONE_DEVICE: _fake(sharded_s), core_split.SHARDED: _fake(1.0)}
    assert (
        core_split.choose(signature, flipped) == expected and autotune.measurements() == count
    )  # cached
    entry = next(iter(json.loads(autotune.cache_path().read_text())["entries"].values()))
    assert entry["us"] == {
        core_split.ONE_DEVICE: 1e6,
        core_split.SHARDED: round(sharded_s * 1e6, 2),
    }


def test_recorded_layout_is_read_only_when_resuming(tmp_path):
    from ml_adv.rundir import Run

    (tmp_path / "config.json").write_text(json.dumps({"train_config": {"data_parallel": True}}))
    assert core_split.recorded_layout(Run.at(tmp_path)) is True
    assert core_split.recorded_layout(Run.at(tmp_path, resume=False)) is None
    assert core_split.recorded_layout(Run.at(tmp_path, overwrite=True)) is None
    assert core_split.recorded_layout(Run.at(tmp_path / "absent")) is None
    assert core_split.recorded_layout(Run.at(None)) is None
    (tmp_path / "config.json").write_text(json.dumps({"train_config": {"data_parallel": "auto"}}))
    assert core_split.recorded_layout(Run.at(tmp_path)) is None


def test_one_device_measures_nothing_and_records_the_layout(tuning, tmp_path):
    import numpy as np

    from ml_adv import load_dataset, make_spec
    from ml_adv.training import fit

    train = load_dataset("digits_flat", split="train").subset(np.arange(64))
    spec = make_spec(
        "mlp",
        input_shape=(64,),
        input_kind="features",
        num_classes=10,
        hidden_sizes=(8,),
        dropout=0.0,
    )
    count = autotune.measurements()
    fit(
        spec,
        train,
        TrainConfig(epochs=1, batch_size=32),
        run=Run.at(tmp_path / "run", progress=False),
    )
    assert autotune.measurements() == count  # one device: nothing to choose
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"][
        "data_parallel"
    ]
    assert saved is False


def test_a_layout_that_cannot_be_built_falls_back_to_one_device(tuning, monkeypatch):
    import numpy as np

    from ml_adv import load_dataset, make_spec
    from ml_adv.training import parallel
    from ml_adv.training.loop import device_data
    from ml_adv.training.sampling import EpochPlan
    from ml_adv.training.setup import init_run

    train = load_dataset("digits_flat", split="train").subset(np.arange(64))
    spec = make_spec(
        "mlp",
        input_shape=(64,),
        input_kind="features",
        num_classes=10,
        hidden_sizes=(8,),
        dropout=0.0,
    )
    config = TrainConfig(epochs=1, batch_size=32)
    setup = init_run(spec, config, example_x=train.x[:1], steps_per_epoch=2)
    monkeypatch.setattr(core_split, "candidate_mesh", lambda config: parallel.data_mesh())

    def make_setup(mesh):
        raise RuntimeError("this model cannot be sharded")

    plan = EpochPlan((len(train),), 32, setup.shuffle_key)
    mesh, chosen = core_split.resolve(
        config,
        setup,
        make_setup,
        lambda m: device_data(train, m),
        plan,
        plan.streams,
        train.x[:1],
        None,
    )
    assert mesh is None and chosen is setup
    entry = next(iter(json.loads(autotune.cache_path().read_text())["entries"].values()))
    assert entry["choice"] == core_split.ONE_DEVICE and entry["us"][core_split.SHARDED] == float(
        "inf"
    )
