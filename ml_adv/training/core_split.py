"""``data_parallel="auto"``: split a single run's batches over the CPU's cores when measured faster.

With the CPU split into one JAX device per core (``ml_adv.use_cpu_cores``; the command
line and the benchmark harness do this by default) a single run can either stay one
program on device 0, where XLA's intra-op threads share out each op, or shard every batch
over the per-core devices (``TrainConfig(data_parallel=True)``), where each core runs the
whole step on its share. Which is faster depends on the model and the machine: sharding
helps convolutional and attention models and hurts a serial recurrence (an LSTM gains
nothing from a half batch). Measurements: benchmarks/README.md, 'Kernel and step measurements'.

So the default, ``"auto"``, times both layouts on the run's own first batches before the
first epoch (a few steps of the real compiled epoch, alternating, best of three after a
warm-up), once per program and CPU model, and caches the choice with the rest of
``ml_adv.kernels.autotune``'s decisions. The two layouts round differently (a sharded gradient is
the mean of per-core means), so the layout is fixed before training: the run directory
records it, and a resumed run keeps it even if the cache has gone.

``"auto"`` is a single device (nothing measured) when there is one device, on other
backends (accelerators keep the explicit ``True``/``False``), when the batch does not
split evenly over the devices, with several processes, and when autotuning is off
(``ML_ADV_AUTOTUNE=0``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ml_adv.kernels import autotune
from ml_adv.training import parallel
from ml_adv.training.config import DATA_PARALLEL_AUTO as AUTO
from ml_adv.training.steps import make_epoch_fn

OPERATION = "fit_layout"
ONE_DEVICE, SHARDED = "one_device", "batch_over_cores"
# steps per timed call: per-execution costs (scratch-buffer faults) are paid per call, as per epoch
TRIAL_STEPS = 4
TRIAL_REPEATS = 3  # alternating timed calls per layout, after one warm-up each; the best counts
MARGIN = 0.05  # sharding must win by more than this to replace the one-device default

_log = logging.getLogger(__name__)


def candidate_mesh(config) -> Any | None:
    """The mesh ``"auto"`` would shard over, or None when only one device is possible."""
    if config.data_parallel != AUTO or not autotune.active():
        return None
    devices = jax.device_count()
    if devices < 2 or config.batch_size % devices or jax.process_count() > 1:
        return None
    return parallel.data_mesh()


def recorded_layout(run) -> bool | None:
    """The layout the run folder's earlier run used (``config.json``), so a resumed run keeps it.

    ``run``: the ``rundir.Run`` being opened; None when it starts afresh or has no folder.
    """
    if run.directory is None or not run.resume or run.overwrite:
        return None
    try:
        saved = json.loads(run.directory.path_for("config.json").read_text())["train_config"][
            "data_parallel"
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return saved if isinstance(saved, bool) else None


def program_signature(setup, config, example_x, streams) -> dict[str, Any]:
    """What identifies the compiled step for this decision (hashed; the architecture kept
    readable)."""
    saved = config.to_dict()
    keys = (
        "batch_size",
        "optimizer",
        "optimizer_options",
        "param_groups",
        "mixed_precision",
        "grad_accum_steps",
        "loss",
        "scan_epochs",
        "nan_policy",
    )
    program = {
        "model": setup.spec.to_dict() if setup.spec is not None else repr(setup.module),
        "config": {k: saved.get(k) for k in keys},
        "clip": config.grad_clip_norm is not None,
        "example": [list(example_x.shape), str(example_x.dtype)],
        "streams": list(streams) if streams else None,
        "augment": config.augment is not None,
    }
    digest = hashlib.sha256(json.dumps(program, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]
    arch = setup.spec.architecture if setup.spec is not None else type(setup.module).__name__
    return {
        "arch": arch,
        "batch": config.batch_size,
        "devices": jax.device_count(),
        "program": digest,
    }


def _trial(setup, mesh, data, plan) -> Callable[[], float]:
    """A timed call of the run's compiled epoch over its first ``TRIAL_STEPS`` batches (results
    discarded)."""
    order, active = plan.draw(0)
    steps = min(TRIAL_STEPS, plan.steps)
    order = jax.tree.map(lambda o: o[:steps], order)
    active = None if active is None else active[:steps]
    state = setup.state if mesh is None else jax.device_put(setup.state, parallel.replicated(mesh))
    compiled = make_epoch_fn(setup.train_step).lower(state, data, order, active).compile()

    def run() -> float:
        fresh = jax.tree.map(jnp.copy, state)  # the epoch donates its state
        start = time.perf_counter()
        jax.block_until_ready(compiled(fresh, data, order, active))
        return time.perf_counter() - start

    return run


def choose(signature: dict[str, Any], layouts: dict[str, Callable[[], Callable[[], float]]]) -> str:
    """The cached or measured layout: ``layouts`` maps each name to a builder of its timed call."""
    cached = autotune.lookup(OPERATION, signature, list(layouts))
    if cached is not None:
        return cached
    runs = {name: build() for name, build in layouts.items()}
    for run in runs.values():
        run()  # warm-up: first-execution page faults and cold caches
    best = {name: float("inf") for name in runs}
    for _ in range(TRIAL_REPEATS):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return autotune.record(OPERATION, signature, best, keep=ONE_DEVICE, margin=MARGIN)


def resolve(config, setup, make_setup, place_data, plan, streams, example_x, recorded: bool | None):
    """``(mesh or None, setup)`` for ``data_parallel="auto"``; ``setup`` is the one-device run's.

    ``make_setup(mesh)`` builds the sharded run's setup, ``place_data(mesh)`` its device data;
    ``streams`` names the data streams (None for one); ``recorded`` is ``recorded_layout``'s answer.
    """
    if recorded is not None:
        mesh = parallel.data_mesh() if recorded and jax.device_count() > 1 else None
        return mesh, (make_setup(mesh) if mesh is not None else setup)
    mesh = candidate_mesh(config)
    if mesh is None:
        return None, setup
    # built only when measured or chosen: a cached "one device" costs no second set-up
    sharded = functools.cache(lambda: make_setup(mesh))
    signature = program_signature(setup, config, example_x, streams)

    def sharded_trial():
        try:
            return _trial(sharded(), mesh, place_data(mesh), plan)
        except Exception as err:  # noqa: BLE001  (a model that cannot be sharded stays on one device)
            _log.warning(
                "data_parallel='auto': the sharded layout failed to build (%s); using one device",
                err,
            )
            return lambda: float("inf")

    choice = choose(
        signature,
        {
            ONE_DEVICE: lambda: _trial(setup, None, place_data(None), plan),
            SHARDED: sharded_trial,
        },
    )
    return (mesh, sharded()) if choice == SHARDED else (None, setup)
