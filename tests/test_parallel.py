"""Data parallelism: training sharded over 8 simulated CPU devices matches single-device
training."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np, flax.linen as nn
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from ml_adv.data.catalog import load_dataset
    from ml_adv.training import TrainConfig, fit
    from ml_adv.rundir import Run

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.relu(nn.Conv(8, (3, 3))(x))
            x = nn.Dropout(0.1, deterministic=not train)(x.reshape(x.shape[0], -1))
            return nn.Dense(10)(x)

    assert len(jax.devices()) == 8, jax.devices()
    train = load_dataset("digits", split="train").subset(np.arange(512))
    test = load_dataset("digits", split="test")
    cfg = TrainConfig(epochs=3, batch_size=64, learning_rate=3e-3, seed=1)
    single = fit(Net(), train, cfg, val=test, run=Run(progress=False))
    sharded = fit(Net(), train, cfg.replace(data_parallel=True), val=test, run=Run(progress=False))
    leaf = jax.tree.leaves(sharded.state.params)[0]
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(single.state.params),
                             jax.tree.leaves(sharded.state.params))]
    # The compiled data-parallel step really splits the batch: gradients are all-reduced.
    from ml_adv.training import build_optimizer, create_train_state, make_train_step
    from ml_adv.training.setup import default_objective
    from ml_adv.training.parallel import data_mesh, replicated
    mesh = data_mesh()
    state = create_train_state(Net(), train.x[:1], build_optimizer(cfg, 10),
                               init_key=jax.random.PRNGKey(0), rng=jax.random.PRNGKey(1))
    state = jax.device_put(state, replicated(mesh))
    batch = jax.device_put({"x": train.x[:64], "y": train.y[:64]}, replicated(mesh))
    hlo = (jax.jit(make_train_step(default_objective(Net(), cfg), mesh=mesh))
           .lower(state, batch, jax.random.PRNGKey(0)).compile().as_text())
    print(json.dumps({
        "max_abs_diff": max(diffs),
        "param_scale": float(max(np.max(np.abs(np.asarray(a)))
                                 for a in jax.tree.leaves(single.state.params))),
        "num_devices_used": len(leaf.sharding.device_set),
        "val_acc": [single.history[-1]["val_accuracy"], sharded.history[-1]["val_accuracy"]],
        "all_reduce": "all-reduce" in hlo,
    }))
    """
)


@pytest.fixture(scope="module")
def launched():
    """The 8-device scripts (and the core-split one), started together: each is mostly a
    single-threaded import and compile, so on two cores they overlap (one after the other took
    ~24 s of the suite)."""
    flags = os.environ.get("XLA_FLAGS", "")  # the suite's compile settings (tests/conftest.py)
    env = dict(
        os.environ,
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=8".strip(),
        JAX_PLATFORMS="cpu",
    )
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, script in (("sharded", SCRIPT), ("stacked", STACKED_SCRIPT))
    }
    cores_env = dict(os.environ, XLA_FLAGS=flags)  # no forced count: ML_ADV_CPU_DEVICES splits
    procs["cores"] = subprocess.Popen(
        [sys.executable, "-c", CORES_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(cores_env, ML_ADV_CPU_DEVICES="2", JAX_PLATFORMS="cpu"),
    )
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


def finished(proc):
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_sharded_training_matches_single_device(launched):
    out = finished(launched["sharded"])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["num_devices_used"] == 8  # params replicated over all 8 devices
    assert result["all_reduce"]  # the batch is split and gradients are summed across devices
    # Same maths, different reduction order across devices: equal to float tolerance.
    assert result["max_abs_diff"] < 1e-4 * max(1.0, result["param_scale"]), result
    assert abs(result["val_acc"][0] - result["val_acc"][1]) < 0.01, result


STACKED_SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from ml_adv import load_dataset, make_spec
    from ml_adv.training import TrainConfig
    from ml_adv.rundir import Run
    from ml_adv.training.parallel import MEMBER_AXIS, DATA_AXIS
    from ml_adv.training.stacked import fit_stacked
    train = load_dataset("digits", split="train").subset(np.arange(256))
    spec = make_spec("mlp", input_shape=train.example_shape, input_kind="image", num_classes=10,
                     size="tiny")
    cfg = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3)
    hp = {"learning_rate": [1e-3, 2e-3, 3e-3, 4e-3]}
    single = fit_stacked(spec, train, cfg.replace(spread_members=False), members=4,
                         member_hparams=hp, run=Run(progress=False))
    sharded = fit_stacked(spec, train, cfg.replace(data_parallel=True), members=4,
                          member_hparams=hp, run=Run(progress=False))
    spread = fit_stacked(spec, train, cfg, members=4, member_hparams=hp,
                         run=Run(progress=False))  # the default
    # The per-member scans split over the devices (the layout the runner may measure fastest),
    # also with per-member data orders (bootstrap): the order's member axis is split too.
    import functools
    from ml_adv.training import stacked as st
    runner = st.EpochRunner
    boot = fit_stacked(spec, train, cfg.replace(spread_members=False), members=4, bootstrap=True,
                       run=Run(progress=False))
    st.EpochRunner = functools.partial(runner, members_as="spread_scan")
    spread_scan = fit_stacked(spec, train, cfg, members=4, member_hparams=hp,
                              run=Run(progress=False))
    boot_scan = fit_stacked(spec, train, cfg, members=4, bootstrap=True, run=Run(progress=False))
    st.EpochRunner = runner
    scan_leaf = jax.tree.leaves(spread_scan.state.params)[0]
    def max_diff(a, b):
        return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                   for u, v in zip(jax.tree.leaves(a.state.params),
                                   jax.tree.leaves(b.state.params)))
    leaf, spread_leaf = (jax.tree.leaves(sharded.state.params)[0],
                         jax.tree.leaves(spread.state.params)[0])
    print(json.dumps({"max_abs_diff": max_diff(single, sharded),
                      "devices": len(leaf.sharding.device_set),
                      "mesh": dict(leaf.sharding.mesh.shape), "spec": str(leaf.sharding.spec),
                      "single_devices": len(
                          jax.tree.leaves(single.state.params)[0].sharding.device_set),
                      "spread_diff": max_diff(single, spread),
                      "spread_mesh": dict(spread_leaf.sharding.mesh.shape),
                      "spread_devices": len(spread_leaf.sharding.device_set),
                      "spread_scan_diff": max_diff(single, spread_scan),
                      "boot_scan_diff": max_diff(boot, boot_scan),
                      "spread_scan_devices": len(scan_leaf.sharding.device_set)}))
    """
)


@pytest.mark.slow
def test_stacked_members_and_batch_shard_over_a_2d_mesh(launched):
    out = finished(launched["stacked"])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mesh"] == {"members": 4, "data": 2} and result["devices"] == 8
    assert "members" in result["spec"]
    assert result["max_abs_diff"] < 1e-5
    # By default (spread_members) the members alone are split, over 4 of the 8 devices, and
    # nothing crosses devices, so the result is the single-device one.
    assert result["single_devices"] == 1
    assert result["spread_mesh"] == {"members": 4, "data": 1} and result["spread_devices"] == 4
    assert result["spread_diff"] < 1e-6, result
    assert result["spread_scan_devices"] == 4 and result["spread_scan_diff"] < 1e-6, result
    assert result["boot_scan_diff"] < 1e-6, result


CORES_SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    import ml_adv  # ML_ADV_CPU_DEVICES=2 splits the CPU before JAX's backend starts
    from ml_adv.errors import ConfigError
    from ml_adv.devices import use_cpu_cores
    devices = jax.device_count()
    assert use_cpu_cores(2) == 2  # asking again for the same split is harmless
    try:
        use_cpu_cores(3)
        late = "no error"
    except ConfigError as exc:
        late = str(exc)
    # A stacked run measures the member-split layout against the one-device ones and caches it.
    import tempfile
    from ml_adv import load_dataset, make_spec
    from ml_adv.kernels import autotune
    from ml_adv.training import TrainConfig
    from ml_adv.rundir import Run
    from ml_adv.training.stacked import fit_stacked
    cache = tempfile.mkdtemp()
    autotune.configure(enabled=True, cache_dir=cache)
    train = load_dataset("digits_flat", split="train").subset(np.arange(256))
    spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10,
                     hidden_sizes=(16,), dropout=0.0)
    fit_stacked(spec, train, TrainConfig(epochs=1, batch_size=32), members=2,
                run=Run(progress=False))
    entries = json.load(open(autotune.cache_path()))["entries"]
    layout = [v for k, v in entries.items() if k.startswith("stacked_epoch_layout")]
    # A single run with data_parallel="auto" (the default) times one device against the batch
    # over both cores, caches the choice, records it in its run directory and keeps it on resume.
    from ml_adv.training import fit
    cfg = TrainConfig(epochs=1, batch_size=32)
    before = autotune.measurements()
    run_dir = tempfile.mkdtemp()
    auto = fit(spec, train, cfg, run=Run.at(run_dir, progress=False))
    measured = autotune.measurements() - before
    fit_layout = [v for k, v in json.load(open(autotune.cache_path()))["entries"].items()
                  if k.startswith("fit_layout")]
    sharded = fit_layout[0]["choice"] == "batch_over_cores"
    recorded = json.load(open(run_dir + "/config.json"))["train_config"]["data_parallel"]
    again = fit(spec, train, cfg, run=Run(progress=False))
    explicit = fit(spec, train, cfg.replace(data_parallel=sharded), run=Run(progress=False))
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(auto.state.params),
                                                    jax.tree.leaves(explicit.state.params)))
    remeasured = autotune.measurements() - before - measured
    # a run directory written with the other layout keeps it when resumed with "auto"
    other_dir = tempfile.mkdtemp()
    fit(spec, train, cfg.replace(data_parallel=not sharded), run=Run.at(other_dir, progress=False))
    resumed = fit(spec, train, cfg.replace(epochs=2), run=Run.at(other_dir, progress=False))
    resumed_devices = len(jax.tree.leaves(resumed.state.params)[0].sharding.device_set)
    # A train step with its batch over the two cores measures its dense weight gradients on
    # each core's half of the batch, both cores at once; without the mesh, on the whole batch.
    import flax.linen as nn
    from ml_adv.kernels.dense import dense_dot_general
    from ml_adv.training import build_optimizer, create_train_state, make_train_step
    from ml_adv.training.parallel import data_mesh, replicated
    from ml_adv.training.setup import default_objective

    class Wide(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(10, dot_general=dense_dot_general)(
                nn.relu(nn.Dense(48, dot_general=dense_dot_general)(x)))

    mesh = data_mesh()
    state = create_train_state(Wide(), train.x[:1], build_optimizer(cfg, 10),
                               init_key=jax.random.PRNGKey(0), rng=jax.random.PRNGKey(1))
    batch = {"x": train.x[:64], "y": train.y[:64]}
    for m in (mesh, None):
        placed = ((jax.device_put(state, replicated(m)), jax.device_put(batch, replicated(m)))
                  if m else (state, batch))
        jax.jit(make_train_step(default_objective(Wide(), cfg), mesh=m)).lower(
            *placed, jax.random.PRNGKey(0))
    dense = sorted(k for k in json.load(open(autotune.cache_path()))["entries"]
                   if k.startswith("dense_weight_grad"))
    print(json.dumps({"devices": devices, "late": late, "layout": layout, "fit_layout": fit_layout,
                      "measured": measured, "recorded": recorded, "sharded": sharded,
                      "remeasured": remeasured, "same_as_explicit": same,
                      "resumed_from": resumed.resumed_from, "resumed_devices": resumed_devices,
                      "dense": dense}))
    """
)


@pytest.mark.slow
def test_cpu_split_into_core_devices_at_import(launched):
    out = finished(launched["cores"])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    assert "use_cpu_cores" in result["late"] and "before any JAX computation" in result["late"]
    [layout] = result["layout"]
    assert (
        set(layout["us"]) == {"vmap", "scan", "spread", "spread_scan"}
        and layout["choice"] in layout["us"]
    ), layout
    [fit_layout] = result["fit_layout"]
    assert set(fit_layout["us"]) == {"one_device", "batch_over_cores"}, fit_layout
    assert result["measured"] == 1 and result["remeasured"] == 0  # once, then from the cache
    assert result["recorded"] is result["sharded"] and result["same_as_explicit"]
    assert result["resumed_from"] == 1 and result["resumed_devices"] == (
        1 if result["sharded"] else 2
    )
    # both layers, sharded (32 rows per core, timed on both) and on one device (64 rows)
    assert result["dense"] == sorted(
        "dense_weight_grad{"
        + devices
        + '"dtype": "float32", "k": '
        + f'{k}, "n": {n}, "rows": {rows}'
        + "}"
        for k, n in ((64, 48), (48, 10))
        for devices, rows in (('"devices": 2, ', 32), ("", 64))
    ), result["dense"]


def test_use_cpu_cores_rejects_bad_counts_and_late_calls():
    from ml_adv.devices import use_cpu_cores
    from ml_adv.errors import ConfigError
    from ml_adv.training.parallel import member_mesh

    for bad in (0, -2, "two", 1.5, True):
        with pytest.raises(ConfigError, match="expected 'auto' or a positive integer"):
            use_cpu_cores(bad)
    assert use_cpu_cores(1) == 1  # the suite's single device: nothing to change
    import jax

    if jax.device_count() == 1:
        with pytest.raises(ConfigError, match="before any JAX computation"):
            use_cpu_cores(4)
        assert member_mesh(8) is None
