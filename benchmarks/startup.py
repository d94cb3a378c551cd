"""Start-up rows: import time, first-step compile time of ``fit``, checkpoint save/restore.

* ``startup/import``: each round is a fresh interpreter timing its own imports
  (``time.perf_counter`` around the import statement, interpreter start-up excluded):
  ``import ml_adv`` (lazy, PEP 562), ``from ml_adv import fit`` (the training core: JAX,
  Flax, Optax, Orbax), ``from ml_adv import AdvancedCustomModelTrainer`` (the facade), and
  ``import jax`` as the floor. The row also records which heavy optional modules each import
  pulled in (the issue asks that tfds, nevergrad and matplotlib wait until needed).
* ``startup/fit-compile``: ``fit`` on a digits-sized CNN for one epoch; its
  ``compile_seconds`` is the ahead-of-time compile of the scanned epoch, the first-step
  latency a user sees (the ``compile/*`` rows give it for every workload).
* ``startup/checkpoint``: ``RunCheckpointer`` (orbax) save (until on disk) and restore of a
  Transformer train state (params + AdamW moments after one update, so the moments are not
  zeros that compress away): d256, 4 layers, vocabulary 32,000 in full mode (137 MB, 215
  arrays), 1,000 in quick mode (41 MB). Peers: ``np.save`` / ``np.load`` of the same bytes as
  one flat float32 array (the page-cache floor), and ``np.save`` followed by ``fsync``
  (durable, as orbax's writes are). ``benchmarks/README.md`` ("Checkpoints") says what bounds
  the ratio.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.harness import Context, make_row, register, simple_row
from benchmarks.workloads import WORKLOADS
from ml_adv.rundir import Run

HEAVY = ("tensorflow_datasets", "tensorflow", "nevergrad", "matplotlib", "torch", "sklearn")
IMPORTS = {
    "import ml_adv": "import ml_adv",
    "from ml_adv import fit": "from ml_adv import fit",
    "from ml_adv import AdvancedCustomModelTrainer": (
        "from ml_adv import AdvancedCustomModelTrainer"
    ),
    "import jax": "import jax",
}
_PROBE = """
import json, sys, time
t0 = time.perf_counter()
{stmt}
dt = time.perf_counter() - t0
print(json.dumps({{"s": dt, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _probe(label: str, stmt: str, samples: dict[str, list[float]], seen: dict[str, list[str]]):
    """A round: one fresh interpreter timing ``stmt``; its own measurement is kept."""
    code = _PROBE.format(stmt=stmt, heavy=HEAVY)

    def run():
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        samples[label].append(rec["s"])
        seen[label] = rec["heavy"]

    return run


@register("startup/import", group="startup")
def import_time(ctx: Context) -> list[dict]:
    samples: dict[str, list[float]] = {k: [] for k in IMPORTS}
    seen: dict[str, list[str]] = {}
    fns = {label: _probe(label, stmt, samples, seen) for label, stmt in IMPORTS.items()}
    # one warm-up round (page cache), then rotating rounds; other load matters little here
    ctx.time(fns, rounds=3 if ctx.quick else 5, warmup=1, foreign_limit=10.0, quiet_budget_s=0)
    timed = {k: v[1:] for k, v in samples.items()}
    values = {k: float(np.median(v)) for k, v in timed.items()}
    row = simple_row(
        "startup/import", "startup", "import time (fresh interpreter)", values, unit="s",
        higher_is_better=False,
        extra={"samples_s": timed, "heavy_modules_loaded": seen, "target_import_ml_adv_s": 2.0},
    )  # fmt: skip
    return [row]


@register("startup/fit-compile", group="startup")
def fit_compile(ctx: Context) -> list[dict]:
    from ml_adv import ArrayDataset, TrainConfig, fit

    wl = WORKLOADS["cnn/digits"]
    x, y = wl.data(wl.batch * 8)
    ds = ArrayDataset(x, y)
    config = TrainConfig(epochs=1, batch_size=wl.batch, mixed_precision=ctx.dtype == "bf16")
    samples = [
        fit(wl.spec(), ds, config, run=Run(progress=False)).compile_seconds
        for _ in range(1 if ctx.quick else 3)
    ]
    return [simple_row(
        "startup/fit-compile", "startup", "fit() first-epoch compile, digits CNN",
        {"fit compile_seconds": float(np.median(samples))}, unit="s", higher_is_better=False,
        extra={"samples_s": samples},
    )]  # fmt: skip


def _transformer_state(vocab: int):
    """The train state a checkpoint holds, after one AdamW update with random gradients."""
    import dataclasses

    import optax

    from ml_adv.training import create_train_state

    wl = dataclasses.replace(WORKLOADS["transformer/medium"], input_dim=vocab)
    x, _ = wl.data(1)
    key = jax.random.PRNGKey(0)
    tx = optax.adamw(1e-3)
    state = create_train_state(wl.spec().build(), x, tx, init_key=key, rng=key)
    leaves, treedef = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    grads = treedef.unflatten(
        [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
    )
    _, opt_state = jax.jit(tx.update)(grads, state.opt_state, state.params)
    return state.replace(opt_state=opt_state).checkpoint_items()


@register("startup/checkpoint", group="checkpoint")
def checkpoint(ctx: Context) -> list[dict]:
    from ml_adv.checkpointing import RunCheckpointer

    vocab = 1000 if ctx.quick else 32000
    items = _transformer_state(vocab)
    leaves = [np.asarray(a) for a in jax.tree.leaves(items)]
    flat = np.concatenate([a.reshape(-1).astype(np.float32) for a in leaves])
    mb = sum(a.nbytes for a in leaves) / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="ml_adv_bench_ckpt_"))
    ckpt = RunCheckpointer(tmp / "orbax", max_to_keep=1)
    counter = {"step": 0}
    blocking_s: list[float] = []  # how long ``save`` holds up the training loop (the rest is async)

    def ours_save():
        counter["step"] += 1
        t0 = time.perf_counter()
        ckpt.save(counter["step"], items, {"epoch": counter["step"]})
        blocking_s.append(time.perf_counter() - t0)
        ckpt.wait()

    def ours_restore():
        restored, _ = ckpt.restore(items)
        jax.block_until_ready(restored)

    def np_save():
        np.save(tmp / "flat.npy", flat)

    def np_save_fsync():
        with open(tmp / "flat_durable.npy", "wb") as f:
            np.save(f, flat)
            f.flush()
            os.fsync(f.fileno())

    def np_load():
        np.load(tmp / "flat.npy")

    for fn in (ours_save, np_save, np_save_fsync):
        fn()
    fns = {"ml_adv save": ours_save, "np.save": np_save, "np.save+fsync": np_save_fsync,
           "ml_adv restore": ours_restore, "np.load": np_load}  # fmt: skip
    timing = ctx.time(fns)
    ckpt.close()
    disk_mb = sum(f.stat().st_size for f in (tmp / "orbax").rglob("*") if f.is_file()) / 1e6
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    ops = {
        "save": ("ml_adv save", ("np.save", "np.save+fsync")),
        "restore": ("ml_adv restore", ("np.load",)),
    }
    for op, (ours, peers) in ops.items():
        names = (ours, *peers)
        sub = type(timing)(
            {k: timing.times_s[k] for k in names}, {k: timing.foreign[k] for k in names},
            {k: timing.first_round_s[k] for k in names}, timing.cycles, timing.foreign_limit,
        )  # fmt: skip
        rows.append(make_row(
            f"startup/checkpoint-{op}", "checkpoint", f"{op} {mb:.0f} MB train state", sub,
            rounds=ctx.rounds, work_per_round=mb, unit="MB/s", subject=ours, peers=peers,
            contender_extra=({"ml_adv save": {"blocking_s": blocking_s[1:]}}
                             if op == "save" else None),
            extra={"megabytes": mb, "arrays": len(leaves), "orbax_disk_mb": disk_mb,
                   "state": f"transformer d256 x4 layers, vocab {vocab}: "
                            "params + AdamW moments after one update",
                   "orbax": "OCDBT, zarr v2, compression off, async save from host copies"},
        ))  # fmt: skip
    return rows
