"""ml_adv.kernels.autotune: decisions by measurement, cached per device, with an opt-out.

The mechanism's tests use decisions measured on every backend (``ANY``), so they expect the
same on a CPU and a GPU. The layer tests (conv, dense, the non-finite guard) are about CPU
fast paths: on a CPU they expect a measurement, on any other backend none (the default
runs, with the same values).
"""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from default_xla import rerun_under_default_xla
from jax import lax

from ml_adv.errors import ConfigError
from ml_adv.kernels import autotune
from ml_adv.kernels.conv import conv2d
from ml_adv.kernels.dense import dense_dot_general
from ml_adv.rundir import Run

EXAMPLE = [jax.ShapeDtypeStruct((64, 64), jnp.float32)]
ANY = autotune.CPU_AND_GPU
ON_CPU = jax.default_backend() == "cpu"


def fast(a):
    return a @ a


def slow(a):  # the same value as ``fast`` after 300 more matmuls' worth of work (~1 ms)
    return jax.lax.fori_loop(0, 300, lambda _, out: out + 0.0 * (out @ a), a @ a)


@pytest.fixture
def tuned(tmp_path):
    """Autotuning on, caching into a fresh directory; restored afterwards."""
    autotune.configure(enabled=True, cache_dir=tmp_path)
    yield tmp_path
    autotune.configure(enabled=None, cache_dir=None)


@pytest.fixture
def tuned_briefly(tuned, monkeypatch):
    """``tuned`` with short timings: the layer tests check the plumbing, not the choice."""
    monkeypatch.setattr(autotune, "REPEATS", 2)
    monkeypatch.setattr(autotune, "SCAN_LENGTH", 2)
    return tuned


def entries(directory):
    (path,) = directory.glob("*.json")
    return json.loads(path.read_text())["entries"]


def test_the_faster_candidate_wins_and_is_cached(tuned):
    before = autotune.measurements()
    choice = autotune.choose(
        "square", {"n": 64}, {"slow": slow, "fast": fast}, EXAMPLE, default="slow", backends=ANY
    )
    assert choice == "fast"
    assert autotune.measurements() == before + 1
    (entry,) = entries(tuned).values()
    assert entry["choice"] == "fast" and entry["us"]["slow"] > entry["us"]["fast"]
    # Same process: from memory. A new process (memory cleared): from the file. No re-measuring.
    assert (
        autotune.choose(
            "square", {"n": 64}, {"slow": slow, "fast": fast}, EXAMPLE, default="slow", backends=ANY
        )
        == "fast"
    )
    autotune.configure(enabled=True, cache_dir=tuned)
    assert (
        autotune.choose(
            "square", {"n": 64}, {"slow": slow, "fast": fast}, EXAMPLE, default="slow", backends=ANY
        )
        == "fast"
    )
    assert autotune.measurements() == before + 1
    # Another shape is another decision.
    autotune.choose(
        "square",
        {"n": 32},
        {"slow": slow, "fast": fast},
        [jax.ShapeDtypeStruct((32, 32), jnp.float32)],
        default="slow",
        backends=ANY,
    )
    assert autotune.measurements() == before + 2 and len(entries(tuned)) == 2


def test_first_writer_wins_across_processes(tuned):
    # Another process recorded this case while we measured: its choice holds here too.
    key = "square" + json.dumps({"n": 64}, sort_keys=True)
    autotune.cache_path().write_text(
        json.dumps({"entries": {key: {"choice": "slow", "us": {"slow": 1.0}}}})
    )
    assert autotune.record("square", {"n": 64}, {"slow": 2.0, "fast": 1.0}) == "slow"
    assert (
        autotune.choose(
            "square", {"n": 64}, {"slow": slow, "fast": fast}, EXAMPLE, default="fast", backends=ANY
        )
        == "slow"
    )


def test_opt_out_takes_the_default_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune.ENV_SWITCH, "off")
    autotune.configure(enabled=None, cache_dir=tmp_path)
    try:
        before = autotune.measurements()
        assert (
            autotune.choose(
                "square",
                {"n": 64},
                {"slow": slow, "fast": fast},
                EXAMPLE,
                default="slow",
                backends=ANY,
            )
            == "slow"
        )
        assert autotune.measurements() == before and not list(tmp_path.iterdir())
    finally:
        autotune.configure(enabled=None, cache_dir=None)


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune.ENV_CACHE, str(tmp_path / "here"))
    autotune.configure(enabled=None, cache_dir=None)
    assert autotune.cache_path().parent == tmp_path / "here"
    assert autotune.cache_path().name == autotune.device_signature() + ".json"
    assert (autotune.device_signature() == autotune.cpu_signature()) == ON_CPU


def test_a_corrupt_cache_is_measured_again_and_rewritten(tuned, caplog):
    autotune.cache_path().write_text("{not json")
    autotune.configure(enabled=True, cache_dir=tuned)
    with caplog.at_level(logging.WARNING, logger="ml_adv.kernels.autotune"):
        assert (
            autotune.choose(
                "square",
                {"n": 64},
                {"slow": slow, "fast": fast},
                EXAMPLE,
                default="slow",
                backends=ANY,
            )
            == "fast"
        )
    assert "unreadable" in caplog.text
    assert len(entries(tuned)) == 1


def test_an_unwritable_cache_still_decides(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    autotune.configure(enabled=True, cache_dir=blocker / "sub")  # a directory under a file
    try:
        with caplog.at_level(logging.WARNING, logger="ml_adv.kernels.autotune"):
            assert (
                autotune.choose(
                    "square",
                    {"n": 64},
                    {"slow": slow, "fast": fast},
                    EXAMPLE,
                    default="slow",
                    backends=ANY,
                )
                == "fast"
            )
        assert "could not write" in caplog.text
    finally:
        autotune.configure(enabled=None, cache_dir=None)


def test_bad_arguments_fail_fast(tuned):
    with pytest.raises(ConfigError, match="default"):
        autotune.choose("square", {}, {"fast": fast}, EXAMPLE, default="missing", backends=ANY)
    with pytest.raises(ConfigError, match="enabled"):
        autotune.configure(enabled="yes")


def _conv_reference(x, k):
    return lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def test_conv_layers_use_measured_lowerings_with_xla_values(tuned_briefly):
    tuned = tuned_briefly
    # 9 input channels: XLA's forward is the only candidate (the multiply-add form is one for
    # <= 8), so only the training decision is measured, between the two gradient methods.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 9))
    k = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 9, 3)) * 0.3

    def loss(conv):
        return lambda x, k: jnp.sum(conv(x, k) ** 2)

    grads = jax.jit(jax.grad(loss(conv2d), argnums=(0, 1)))(x, k)
    expected = jax.grad(loss(_conv_reference), argnums=(0, 1))(x, k)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jax.jit(conv2d)(x, k), _conv_reference(x, k), rtol=1e-5, atol=1e-5)
    if not ON_CPU:  # the native conv runs elsewhere: nothing to decide
        assert not list(tuned.glob("*.json"))
        return
    operations = {key.split("{")[0] for key in entries(tuned)}
    assert operations == {"conv2d_training"}
    (entry,) = entries(tuned).values()
    assert set(entry["us"]) == {"row/xla", "conv/xla"}


def test_dense_weight_gradient_is_measured_with_autodiff_values(tuned_briefly):
    tuned = tuned_briefly
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 16, 32))
    w = jax.random.normal(jax.random.PRNGKey(3), (32, 8))
    dims = (((2,), (0,)), ((), ()))

    def loss(dot):
        return lambda x, w: jnp.sum(jnp.tanh(dot(x, w, dims)))

    got = jax.jit(jax.grad(loss(dense_dot_general), argnums=(0, 1)))(x, w)
    want = jax.grad(loss(lax.dot_general), argnums=(0, 1))(x, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    if not ON_CPU:  # XLA's own dense gradient runs elsewhere: nothing to decide
        assert not list(tuned.glob("*.json"))
        return
    ((key, entry),) = entries(tuned).items()
    assert key.startswith("dense_weight_grad") and '"rows": 64' in key
    assert set(entry["us"]) == {"xla", "transpose_dy"}  # narrowing (32 -> 8): x is never transposed
    widening = jax.random.normal(jax.random.PRNGKey(4), (8, 32))
    jax.jit(jax.grad(loss(dense_dot_general), argnums=1))(x[..., :8], widening)
    wide = [v for k, v in entries(tuned).items() if '"k": 8' in k]
    assert len(wide) == 1 and set(wide[0]["us"]) == {"xla", "transpose_x", "transpose_dy"}


def test_the_nonfinite_guard_is_chosen_on_the_runs_own_epochs(tuned_briefly, request):
    if rerun_under_default_xla(request):  # bitwise equality is a property of XLA's codegen
        return
    from ml_adv import load_dataset, make_spec
    from ml_adv.training import TrainConfig, fit
    from ml_adv.training.runner import GUARD_TRIAL_ROUNDS

    train = load_dataset("digits_flat", split="train").subset(np.arange(256))
    spec = make_spec(
        "mlp",
        input_shape=(64,),
        input_kind="features",
        num_classes=10,
        hidden_sizes=(16,),
        dropout=0.1,
    )
    config = TrainConfig(epochs=2 * GUARD_TRIAL_ROUNDS, batch_size=32)
    tried = fit(spec, train, config, run=Run(progress=False))
    if not ON_CPU:  # a CPU decision: other backends take the architecture's static guard
        assert not list(tuned_briefly.glob("*.json"))
        return
    [entry] = [v for k, v in entries(tuned_briefly).items() if k.startswith("nonfinite_guard")]
    assert set(entry["us"]) == {"cond", "select"} and entry["choice"] in entry["us"], entry
    measured = autotune.measurements()
    cached = fit(spec, train, config, run=Run(progress=False))
    assert autotune.measurements() == measured  # the second run reads the decision
    autotune.configure(enabled=False)
    static = fit(spec, train, config, run=Run(progress=False))
    # The guards give bitwise-identical states: alternating them on real epochs changes no number.
    losses = [[r["train_loss"] for r in run.history] for run in (tried, cached, static)]
    assert losses[0] == losses[1] == losses[2]
    for a, b in zip(jax.tree.leaves(tried.state.params), jax.tree.leaves(static.state.params)):
        np.testing.assert_array_equal(a, b)


def test_a_cached_choice_that_is_no_longer_a_candidate_is_measured_again(tuned):
    signature = {"n": 3}
    assert autotune.record("forms", signature, {"a": 1.0, "b": 2.0}) == "a"
    assert autotune.record("forms", signature, {"a": 2.0, "b": 1.0}) == "a"  # first writer wins
    assert (
        autotune.lookup("forms", signature, ["b", "c"], backends=ANY) is None
    )  # "a" was dropped from the forms
    assert (
        autotune.record("forms", signature, {"b": 1.0, "c": 2.0}) == "b"
    )  # so its entry is replaced
    assert entries(tuned)['forms{"n": 3}']["choice"] == "b"


def test_batch_split_context_and_concurrent_timing_on_one_device(tuned):
    assert autotune.batch_split_devices() == 1
    with autotune.batch_split(2):
        assert autotune.batch_split_devices() == 2
        with autotune.batch_split(1):
            assert autotune.batch_split_devices() == 1
        assert autotune.batch_split_devices() == 2
    assert autotune.batch_split_devices() == 1
    # More concurrent devices than this process has: timed on the one there is.
    choice = autotune.choose(
        "square",
        {"n": 64, "devices": 4},
        {"slow": slow, "fast": fast},
        EXAMPLE,
        default="slow",
        concurrent=4,
        backends=ANY,
    )
    assert choice == "fast"


def test_each_decision_is_measured_only_on_its_backends_and_cached_per_device(tuned, monkeypatch):
    """On a (simulated) GPU: CPU-only decisions take their default unmeasured; decisions
    measured on GPUs too go into a cache file of the GPU's own."""
    from ml_adv.kernels.lstm_layer import measured_lowering

    cpu_file = autotune.cache_path()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    autotune.configure(enabled=True, cache_dir=tuned)  # forget this process's view of the CPU file
    gpu_file = autotune.cache_path()
    assert gpu_file != cpu_file and gpu_file.name.startswith("gpu-")
    before = autotune.measurements()
    assert not autotune.active() and autotune.active(autotune.GPU) and autotune.active(ANY)
    assert (
        autotune.choose("square", {"n": 64}, {"slow": slow, "fast": fast}, EXAMPLE, default="slow")
        == "slow"
    )
    assert autotune.measurements() == before and not gpu_file.exists()
    assert (
        autotune.choose(
            "square",
            {"n": 64},
            {"slow": slow, "fast": fast},
            EXAMPLE,
            default="slow",
            backends=autotune.GPU,
        )
        == "fast"
    )
    assert autotune.measurements() == before + 1 and gpu_file.exists() and not cpu_file.exists()
    monkeypatch.setattr(autotune, "REPEATS", 2)
    assert measured_lowering((2, 3, 4), 8, jnp.float32, reverse=False) in ("fused", "flax")
    assert any(k.startswith("lstm_layer") for k in entries(tuned))  # measured on the GPU too
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert (
        autotune.choose(
            "square", {"n": 8}, {"slow": slow, "fast": fast}, EXAMPLE, default="slow", backends=ANY
        )
        == "slow"
    )  # a backend no decision is measured on
