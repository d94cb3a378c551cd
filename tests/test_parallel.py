"""Data parallelism: training sharded over 8 simulated CPU devices matches single-device training."""

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
    single = fit(Net(), train, cfg, val=test, progress=False)
    sharded = fit(Net(), train, cfg.replace(data_parallel=True), val=test, progress=False)
    leaf = jax.tree.leaves(sharded.state.params)[0]
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(single.state.params), jax.tree.leaves(sharded.state.params))]
    # The compiled data-parallel step really splits the batch: gradients are all-reduced.
    from ml_adv.training import build_optimizer, create_train_state, make_train_step
    from ml_adv.training.setup import default_objective
    from ml_adv.training.parallel import data_mesh, replicated
    mesh = data_mesh()
    state = create_train_state(Net(), train.x[:1], build_optimizer(cfg, 10), init_key=jax.random.PRNGKey(0),
                               rng=jax.random.PRNGKey(1))
    state = jax.device_put(state, replicated(mesh))
    batch = jax.device_put({"x": train.x[:64], "y": train.y[:64]}, replicated(mesh))
    hlo = jax.jit(make_train_step(default_objective(Net(), cfg), mesh=mesh)).lower(state, batch, jax.random.PRNGKey(0)).compile().as_text()
    print(json.dumps({
        "max_abs_diff": max(diffs),
        "param_scale": float(max(np.max(np.abs(np.asarray(a))) for a in jax.tree.leaves(single.state.params))),
        "num_devices_used": len(leaf.sharding.device_set),
        "val_acc": [single.history[-1]["val_accuracy"], sharded.history[-1]["val_accuracy"]],
        "all_reduce": "all-reduce" in hlo,
    }))
    """
)


@pytest.fixture(scope="module")
def launched():
    """Both 8-device scripts, started together: each is mostly a single-threaded import and
    compile, so on two cores they overlap (one after the other took ~24 s of the suite)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    procs = {name: subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, script in (("sharded", SCRIPT), ("stacked", STACKED_SCRIPT))}
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
    from ml_adv.training.parallel import MEMBER_AXIS, DATA_AXIS
    from ml_adv.training.stacked import fit_stacked
    train = load_dataset("digits", split="train").subset(np.arange(256))
    spec = make_spec("mlp", input_shape=train.example_shape, input_kind="image", num_classes=10, size="tiny")
    cfg = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3)
    hp = {"learning_rate": [1e-3, 2e-3, 3e-3, 4e-3]}
    single = fit_stacked(spec, train, cfg, members=4, member_hparams=hp, progress=False)
    sharded = fit_stacked(spec, train, cfg.replace(data_parallel=True), members=4, member_hparams=hp, progress=False)
    leaf = jax.tree.leaves(sharded.state.params)[0]
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(single.state.params), jax.tree.leaves(sharded.state.params))]
    print(json.dumps({"max_abs_diff": max(diffs), "devices": len(leaf.sharding.device_set),
                      "mesh": dict(leaf.sharding.mesh.shape), "spec": str(leaf.sharding.spec)}))
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
