"""Orbax checkpoints for every long-running workflow: latest + best, resume, abstract restore.

``RunCheckpointer`` keeps two orbax ``CheckpointManager`` s under one run
directory: ``latest/`` (the last few epochs, used to resume) and ``best/`` (the
best epoch by the monitored metric, used to return the best model). Each
checkpoint holds two items: ``state`` (a pytree of arrays) and ``meta`` (JSON:
epoch, history, early-stopping counters, config). Restores go into an abstract
target built with ``jax.eval_shape``/``ShapeDtypeStruct``, so no throwaway
arrays are allocated and dtypes/shapes are checked against the model.

Why host copies before saving: the training step donates its state buffers, so
the arrays handed to an asynchronous save are copied to host memory first; the
next epoch can then reuse the device buffers while orbax writes in the
background. A process killed mid-write leaves only an orbax temporary folder,
which the manager ignores: the previous checkpoint stays the latest.

Why uncompressed: orbax compresses every array with zstd by default. Trained
float weights and Adam moments do not compress (a few percent), yet zstd cost
about half the CPU time of a save and of a restore (``benchmarks/README.md``,
"Checkpoints"). Arrays are written as uncompressed zarr chunks inside orbax's
OCDBT store; older compressed checkpoints still restore (each array's zarr
metadata names its codec).

Why every array read settles before a failed restore raises: orbax reads a tree's arrays
concurrently (``asyncio.gather``) in a fresh event loop that it closes as soon as the restore
coroutine ends (``asyncio_utils.run_sync``), without waiting for the reads still running.
A damaged checkpoint (a truncated OCDBT manifest) fails every read; the first failure ends
the restore, and the others then complete into the closed loop, where tensorstore prints one
``RuntimeError: Event loop is closed`` traceback per array. ``_SettledNumpyHandler`` waits
for all of them, so a recovered run shows its warning and nothing else.

Nothing is pickled and no code is loaded from a checkpoint.
"""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ml_adv.errors import CheckpointError


def _host_copy(tree: Any) -> Any:
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStruct tree (with shardings) describing ``tree``, for restoring into it."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class _SettledNumpyHandler(ocp.type_handlers.NumpyHandler):
    """orbax's NumPy array handler whose reads all finish before a failure is raised.

    orbax's own ``deserialize`` gathers the arrays' opens and reads and raises at the first
    failure, leaving the others in flight in a loop about to close (see the module docstring).
    """

    async def deserialize(self, infos, args=None):
        args = args or [ocp.RestoreArgs()] * len(infos)
        read = (
            super().deserialize
        )  # bound here: zero-argument super() does not work in the generator
        results = await asyncio.gather(
            *(read([info], [arg]) for info, arg in zip(infos, args)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [result[0] for result in results]


def _type_handlers() -> ocp.type_handlers.TypeHandlerRegistry:
    """orbax's registered type handlers, with ``_SettledNumpyHandler`` for NumPy arrays.

    Every array is saved and restored as a NumPy array (``_host_copy``, ``_restore_args``).
    """
    handlers = ocp.type_handlers
    return handlers.create_type_handler_registry(
        *(
            (
                kind,
                _SettledNumpyHandler() if kind is np.ndarray else handlers.get_type_handler(kind),
            )
            for kind in handlers.supported_types()
        )
    )


def _array_handler() -> ocp.PyTreeCheckpointHandler:
    """Orbax's pytree handler (OCDBT, zarr v2) with compression off: see the module docstring."""
    return ocp.PyTreeCheckpointHandler(
        use_compression=False, type_handler_registry=_type_handlers()
    )


def _save_args(tree: Any) -> ocp.args.PyTreeSave:
    return ocp.args.PyTreeSave(tree)


def _restore_args(abstract: Any) -> ocp.args.PyTreeRestore:
    """Read every array of ``abstract``'s structure into host memory, cast to its dtype.

    Why NumPy first: orbax's ``jax.Array`` read path took twice as long as reading NumPy
    arrays and placing them with one ``device_put`` (``benchmarks/README.md``, "Checkpoints").
    """
    args = jax.tree.map(lambda a: ocp.RestoreArgs(restore_type=np.ndarray, dtype=a.dtype), abstract)
    return ocp.args.PyTreeRestore(abstract, restore_args=args)


def _placed(restored: Any, abstract: Any) -> Any:
    """Check shapes and place each leaf like ``abstract`` (what ``StandardRestore`` did).

    A leaf with a sharding comes back as a ``jax.Array`` placed like it; one without
    (NumPy arrays, ``jax.eval_shape`` output) as a NumPy array.
    """

    def place(value: np.ndarray, spec: Any) -> Any:
        if value.shape != spec.shape:
            raise CheckpointError(
                f"array shape: expected {spec.shape}, got {value.shape} in the checkpoint"
            )
        sharding = getattr(spec, "sharding", None)
        return value if sharding is None else jax.device_put(value, sharding)

    return jax.tree.map(place, restored, abstract)


class RunCheckpointer:
    """Latest and best checkpoints of one run directory.

    Why each manager has its own barrier prefix: in a multi-process run
    (``devices.join_processes``) orbax synchronises the processes around every save with
    named barriers, whose names are the same for every manager (``async_commit_complete.1``,
    ``ThreadSaveMultiHostValueHolder:set_value_start``). With the default prefix, latest and
    best (which both save an improving epoch) reached one barrier from two threads: on a
    loaded machine one process failed with "Barrier ... is already ongoing", dropped the save,
    and the other waited for orbax's 600 s timeout (1 of 6 runs, three 2-process runs at once;
    a CI run stopped after 400 s). orbax's ``barrier_sync_key_prefix`` is meant for
    concurrent managers.

    Args:
        directory: ``runs/<name>/checkpoints``; created if missing.
        max_to_keep: how many of the latest checkpoints to keep.
        asynchronous: write in a background thread (the default).
    """

    def __init__(
        self, directory: str | os.PathLike, *, max_to_keep: int = 2, asynchronous: bool = True
    ):
        self.directory = Path(directory).absolute()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint directory: cannot create {self.directory}: {exc}"
            ) from exc
        options = dict(
            create=True, enable_async_checkpointing=asynchronous, cleanup_tmp_directories=True
        )
        self._latest, self._best = (
            ocp.CheckpointManager(
                self.directory / which,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=keep,
                    # its own barrier names: see the class docstring
                    multiprocessing_options=ocp.options.MultiprocessingOptions(
                        barrier_sync_key_prefix=f"ml_adv_{which}"
                    ),
                    **options,
                ),
                item_handlers={"state": _array_handler(), "meta": ocp.JsonCheckpointHandler()},
            )
            for which, keep in (("latest", max_to_keep), ("best", 1))
        )

    def _manager(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise CheckpointError(f"which: expected 'latest' or 'best', got {which!r}")
        return self._latest if which == "latest" else self._best

    def save(self, step: int, state: Any, meta: dict[str, Any], *, is_best: bool = False) -> None:
        """Save ``state`` (array pytree) and ``meta`` (JSON) as checkpoint ``step``."""
        host_state = _host_copy(state)
        # A copy for the same reason: the write is asynchronous, and the caller goes on appending
        # to the histories inside ``meta``; a later epoch's record must not leak into this step.
        meta = copy.deepcopy(meta)
        for manager in (self._latest, self._best) if is_best else (self._latest,):
            manager.save(
                int(step),
                args=ocp.args.Composite(state=_save_args(host_state), meta=ocp.args.JsonSave(meta)),
            )

    def latest_step(self, which: str = "latest") -> int | None:
        return self._manager(which).latest_step()

    def path(self, which: str = "latest", step: int | None = None) -> str | None:
        step = self.latest_step(which) if step is None else step
        return None if step is None else str(self.directory / which / str(step))

    def restore(
        self, target: Any, *, which: str = "latest", step: int | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Restore ``(state, meta)`` into the structure, shapes and dtypes of ``target``."""
        manager = self._manager(which)
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"checkpoint: no {which!r} checkpoint found in {self.directory}")
        abstract = abstract_like(target)
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(state=_restore_args(abstract), meta=ocp.args.JsonRestore()),
            )
            state = _placed(restored["state"], abstract)
        except Exception as exc:  # orbax raises many types; give one clear error
            raise CheckpointError(
                f"checkpoint: cannot restore step {step} from {self.directory / which} "
                "into the current model/optimizer (did the architecture or optimizer change?): "
                f"{exc}"
            ) from exc
        return state, dict(restored["meta"])

    def restore_newest_intact(
        self, target: Any, *, which: str = "latest"
    ) -> tuple[Any, dict[str, Any]]:
        """Restore the newest checkpoint that reads back whole, warning about each damaged one.

        A disk that filled up or a copy that lost files leaves a step orbax cannot read;
        resuming from the step before it loses one epoch instead of the whole run.
        """
        import warnings

        steps = sorted(self._manager(which).all_steps(), reverse=True)
        errors = []
        for step in steps:
            try:
                return self.restore(target, which=which, step=step)
            except CheckpointError as exc:
                errors.append(step)
                warnings.warn(
                    f"run_dir: checkpoint step {step} in {self.directory / which} "
                    f"is damaged ({exc}); "
                    "trying an older one",
                    RuntimeWarning,
                    stacklevel=2,
                )
        raise CheckpointError(
            f"checkpoint: no intact {which!r} checkpoint in {self.directory} "
            f"(damaged steps: {errors}); "
            "start over with overwrite=True (or --fresh)"
        )

    def wait(self) -> None:
        """Block until pending asynchronous writes are on disk."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._latest.close()
        self._best.close()

    def __enter__(self) -> RunCheckpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _composite() -> ocp.CompositeCheckpointHandler:
    return ocp.CompositeCheckpointHandler(tree=_array_handler(), meta=ocp.JsonCheckpointHandler())


def save_pytree(path: str | os.PathLike, tree: Any, meta: dict[str, Any]) -> None:
    """Save one pytree plus JSON metadata to ``path`` (used by ``TrainedModel.save``)."""
    path = Path(path).absolute()
    if path.exists() and any(path.iterdir()):
        raise CheckpointError(
            f"path: expected a new or empty directory, got existing non-empty {path}"
        )
    with ocp.Checkpointer(_composite()) as ckptr:
        ckptr.save(
            path,
            args=ocp.args.Composite(
                tree=_save_args(_host_copy(tree)), meta=ocp.args.JsonSave(meta)
            ),
        )


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the JSON metadata saved by ``save_pytree``."""
    path = Path(path).absolute()
    if not path.exists():
        raise CheckpointError(f"path: no saved model at {path}")
    with ocp.Checkpointer(_composite()) as ckptr:
        return dict(
            ckptr.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        )


def load_pytree(path: str | os.PathLike, target: Any) -> Any:
    """Restore the pytree saved by ``save_pytree`` into the abstract structure of ``target``."""
    path = Path(path).absolute()
    try:
        abstract = abstract_like(target)
        with ocp.Checkpointer(_composite()) as ckptr:
            out = ckptr.restore(path, args=ocp.args.Composite(tree=_restore_args(abstract)))
        return _placed(out["tree"], abstract)
    except Exception as exc:
        raise CheckpointError(f"path: cannot restore a model from {path}: {exc}") from exc
