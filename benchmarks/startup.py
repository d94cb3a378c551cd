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
* ``startup/checkpoint``: ``RunCheckpointer`` (orbax) save (until on disk) and restore of the
  medium Transformer's train state (params + AdamW moments), against ``np.save`` /
  ``np.load`` of the same bytes as one flat float32 array (the disk-bandwidth floor).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from benchmarks.harness import Context, make_row, register, simple_row
from benchmarks.workloads import WORKLOADS

HEAVY = ("tensorflow_datasets", "tensorflow", "nevergrad", "matplotlib", "torch", "sklearn")
IMPORTS = {
    "import ml_adv": "import ml_adv",
    "from ml_adv import fit": "from ml_adv import fit",
    "from ml_adv import AdvancedCustomModelTrainer": "from ml_adv import AdvancedCustomModelTrainer",
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
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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
    samples = [fit(wl.spec(), ds, config, progress=False).compile_seconds for _ in range(1 if ctx.quick else 3)]
    return [simple_row(
        "startup/fit-compile", "startup", "fit() first-epoch compile, digits CNN",
        {"fit compile_seconds": float(np.median(samples))}, unit="s", higher_is_better=False,
        extra={"samples_s": samples},
    )]  # fmt: skip


def _transformer_state():
    import optax

    from ml_adv.training import create_train_state

    wl = WORKLOADS["transformer/medium"]
    x, _ = wl.data(1)
    key = jax.random.PRNGKey(0)
    state = create_train_state(wl.spec().build(), x, optax.adamw(1e-3), init_key=key, rng=key)
    return state.checkpoint_items()


@register("startup/checkpoint", group="checkpoint")
def checkpoint(ctx: Context) -> list[dict]:
    from ml_adv.checkpointing import RunCheckpointer

    items = _transformer_state()
    leaves = [np.asarray(a) for a in jax.tree.leaves(items)]
    flat = np.concatenate([a.reshape(-1).astype(np.float32) for a in leaves])
    mb = sum(a.nbytes for a in leaves) / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="ml_adv_bench_ckpt_"))
    ckpt = RunCheckpointer(tmp / "orbax", max_to_keep=1)
    counter = {"step": 0}

    def orbax_save():
        counter["step"] += 1
        ckpt.save(counter["step"], items, {"epoch": counter["step"]})
        ckpt.wait()

    def orbax_restore():
        restored, _ = ckpt.restore(items)
        jax.block_until_ready(restored)

    def np_save():
        np.save(tmp / "flat.npy", flat)

    def np_load():
        np.load(tmp / "flat.npy")

    orbax_save()
    np_save()
    fns = {"orbax save": orbax_save, "orbax restore": orbax_restore, "np.save": np_save, "np.load": np_load}
    timing = ctx.time(fns)
    ckpt.close()
    rows = []
    for op, (ours, raw) in {"save": ("orbax save", "np.save"), "restore": ("orbax restore", "np.load")}.items():
        sub = type(timing)(
            {k: timing.times_s[k] for k in (ours, raw)}, {k: timing.foreign[k] for k in (ours, raw)},
            {k: timing.first_round_s[k] for k in (ours, raw)}, timing.cycles, timing.foreign_limit,
        )  # fmt: skip
        rows.append(make_row(
            f"startup/checkpoint-{op}", "checkpoint", f"{op} {mb:.0f} MB train state", sub,
            rounds=ctx.rounds, work_per_round=mb, unit="MB/s", subject=ours, peers=(raw,),
            extra={"megabytes": mb, "arrays": len(leaves), "state": "transformer/medium params + AdamW"},
        ))  # fmt: skip
    return rows
