"""Checkpoints: save/restore round trips, latest/best, and resume == uninterrupted (in process and
after SIGKILL)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_training_core import TinyNet

from ml_adv.checkpointing import RunCheckpointer, load_meta, load_pytree, save_pytree
from ml_adv.errors import CheckpointError
from ml_adv.rundir import Run
from ml_adv.training import TrainConfig, fit


def _tree_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


def test_save_restore_round_trip_into_abstract_target(tmp_path):
    tree = {
        "w": jnp.arange(6.0).reshape(2, 3),
        "n": {"b": jnp.ones(3, jnp.bfloat16), "i": jnp.int32(7)},
    }
    with RunCheckpointer(tmp_path / "c") as ckpt:
        ckpt.save(1, tree, {"epoch": 1, "note": "first"})
        ckpt.save(2, jax.tree.map(lambda a: a * 2, tree), {"epoch": 2}, is_best=True)
        ckpt.save(3, jax.tree.map(lambda a: a * 3, tree), {"epoch": 3})
    with RunCheckpointer(tmp_path / "c") as ckpt:
        assert ckpt.latest_step() == 3 and ckpt.latest_step("best") == 2
        target = jax.eval_shape(lambda: tree)
        latest, meta = ckpt.restore(target)
        best, best_meta = ckpt.restore(target, which="best")
    assert meta == {"epoch": 3} and best_meta == {"epoch": 2}
    assert _tree_equal(latest, jax.tree.map(lambda a: a * 3, tree))
    assert _tree_equal(best, jax.tree.map(lambda a: a * 2, tree))
    assert latest["n"]["b"].dtype == jnp.bfloat16


def test_restore_errors_are_clear(tmp_path):
    with RunCheckpointer(tmp_path / "empty") as ckpt:
        with pytest.raises(CheckpointError, match="no 'latest' checkpoint"):
            ckpt.restore({"w": jnp.zeros(2)})
        ckpt.save(1, {"w": jnp.zeros(2)}, {})
        ckpt.wait()
        with pytest.raises(CheckpointError, match="cannot restore"):
            ckpt.restore({"w": jnp.zeros(5)})


def test_save_pytree_refuses_to_overwrite(tmp_path):
    save_pytree(tmp_path / "m", {"a": jnp.ones(2)}, {"format": "x"})
    assert load_meta(tmp_path / "m") == {"format": "x"}
    np.testing.assert_array_equal(load_pytree(tmp_path / "m", {"a": jnp.zeros(2)})["a"], np.ones(2))
    with pytest.raises(CheckpointError, match="non-empty"):
        save_pytree(tmp_path / "m", {"a": jnp.ones(2)}, {})


def test_checkpoints_written_compressed_by_earlier_versions_still_restore(tmp_path):
    """Arrays were zstd-compressed (orbax's default, StandardSave) before compression was turned
    off."""
    import orbax.checkpoint as ocp

    tree = {"w": np.arange(12.0, dtype=np.float32).reshape(3, 4), "b": np.ones(5, jnp.bfloat16)}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(tmp_path / "old", args=ocp.args.Composite(
            tree=ocp.args.StandardSave(tree),
            meta=ocp.args.JsonSave({"format": "old"})))  # fmt: skip
    assert load_meta(tmp_path / "old") == {"format": "old"}
    restored = load_pytree(tmp_path / "old", jax.tree.map(jnp.zeros_like, tree))
    assert _tree_equal(restored, tree) and restored["b"].dtype == jnp.bfloat16
    assert isinstance(restored["w"], jax.Array)


def test_resumed_fit_matches_uninterrupted(small_digits, digits_images, tmp_path):
    _, test = digits_images
    cfg = TrainConfig(epochs=6, batch_size=32, learning_rate=3e-3, seed=2)
    full = fit(
        TinyNet(), small_digits, cfg, val=test, run=Run.at(tmp_path / "full", progress=False)
    )
    fit(
        TinyNet(),
        small_digits,
        cfg.replace(epochs=3),
        val=test,
        run=Run.at(tmp_path / "part", progress=False),
    )
    resumed = fit(
        TinyNet(), small_digits, cfg, val=test, run=Run.at(tmp_path / "part", progress=False)
    )
    assert resumed.resumed_from == 3 and len(resumed.history) == 6
    assert _tree_equal(full.state.params, resumed.state.params)
    assert _tree_equal(full.state.opt_state, resumed.state.opt_state)
    assert [h["val_loss"] for h in full.history] == [h["val_loss"] for h in resumed.history]
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_different_run(small_digits, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=32)
    fit(TinyNet(), small_digits, cfg, run=Run.at(tmp_path / "r", progress=False))
    with pytest.raises(CheckpointError, match="seed"):
        fit(
            TinyNet(), small_digits, cfg.replace(seed=9), run=Run.at(tmp_path / "r", progress=False)
        )
    with pytest.raises(CheckpointError, match="already has checkpoints"):
        fit(TinyNet(), small_digits, cfg, run=Run.at(tmp_path / "r", resume=False, progress=False))
    fresh = fit(
        TinyNet(),
        small_digits,
        cfg.replace(seed=9),
        run=Run.at(tmp_path / "r", overwrite=True, progress=False),
    )
    assert fresh.resumed_from is None


def _cli(run_dir: Path, epochs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ml_adv.cli",
        "train",
        "--arch",
        "cnn",
        "--size",
        "tiny",
        "--data",
        "digits",
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--run-dir",
        str(run_dir),
    ]


def _finished_steps(run_dir: Path) -> list[int]:
    latest = run_dir / "checkpoints" / "latest"
    return (
        sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) if latest.exists() else []
    )


@pytest.mark.slow
def test_sigkill_mid_run_then_same_command_resumes_bitwise(tmp_path):
    """A real subprocess is SIGKILLed mid-training; re-running the same command resumes and ends
    with parameters bitwise-identical to an uninterrupted run."""
    from ml_adv.training.trained_model import TrainedModel

    epochs = 10  # a tiny CNN: ~0.3 s an epoch with its save, so the kill below lands mid-run
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # The uninterrupted reference runs alongside the killed run (two cores; mostly compile).
    reference = subprocess.Popen(
        _cli(tmp_path / "ref", epochs),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(run_dir, epochs), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_finished_steps(run_dir)) < 1:
        time.sleep(0.01)
    steps = _finished_steps(run_dir)
    if proc.poll() is None:
        time.sleep(0.3)  # let it get further into training so the kill lands mid-epoch / mid-save
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    steps = _finished_steps(run_dir)
    assert steps and max(steps) < epochs

    resumed = subprocess.run(
        _cli(run_dir, epochs), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from epoch" in resumed.stdout
    resumed_from = int(resumed.stdout.split("resumed from epoch")[1].split()[0])
    assert 0 < resumed_from < epochs

    _, reference_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, reference_err[-2000:]
    a = TrainedModel.load(tmp_path / "ref" / "model")
    b = TrainedModel.load(run_dir / "model")
    assert _tree_equal(a.variables, b.variables)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))


_RECOVER = """
import sys
import numpy as np
from ml_adv.checkpointing import RunCheckpointer

target = {f"w{i:02d}": np.zeros(4, np.float32) for i in range(int(sys.argv[2]))}
with RunCheckpointer(sys.argv[1]) as ckpt:
    state, meta = ckpt.restore_newest_intact(target)
print("restored epoch", meta["epoch"], float(state["w03"][0]))
"""


def test_recovering_past_a_truncated_manifest_prints_only_the_warning(tmp_path):
    """A damaged latest step is skipped with one warning; orbax's concurrent reads of the damaged
    step must not leave tracebacks behind (``Event loop is closed``, also at interpreter exit)."""
    arrays = 32  # one read per array: enough reads in flight to show the failure every time
    tree = {f"w{i:02d}": np.full(4, i, np.float32) for i in range(arrays)}
    with RunCheckpointer(tmp_path / "c") as ckpt:
        ckpt.save(1, tree, {"epoch": 1})
        ckpt.save(2, jax.tree.map(lambda a: a + 100, tree), {"epoch": 2})
    manifests = list((tmp_path / "c" / "latest" / "2").rglob("manifest.ocdbt"))
    assert manifests
    for path in manifests:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", _RECOVER, str(tmp_path / "c"), str(arrays)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restored epoch 1 3.0" in done.stdout
    assert "checkpoint step 2" in done.stderr and "is damaged" in done.stderr
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr, (
        done.stderr[-3000:]
    )
