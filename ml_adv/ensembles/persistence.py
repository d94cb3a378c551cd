"""Saving and loading an ensemble: one orbax pytree plus JSON, never pickle.

The pytree holds every member's variables (``members/m0``, ``m1`` ... in member
order), the raw weights, the temperature and, for stacking, the meta-learner. The
JSON holds what rebuilds the rest: each member's ``ModelSpec`` (rebuilt from the
architecture registry), id, metrics and precision, the combination method and the
facade's settings and reports. Restores go into an abstract target built with
``jax.eval_shape`` from the specs, so shapes and dtypes are checked.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ml_adv.checkpointing import load_meta, load_pytree, save_pytree
from ml_adv.errors import CheckpointError

FORMAT = "ml_adv.AdvancedModelEnsemble/1"
RUN_FORMAT = "ml_adv.AdvancedModelEnsemble.run/1"
RUN_RECORD = "ensemble_run.json"


def _jsonable(obj: Any) -> Any:
    """JSON-ready copy (numpy / jax scalars and arrays become Python numbers and lists)."""
    return json.loads(json.dumps(obj, default=lambda o: np.asarray(o).tolist()))


def save_ensemble(
    path: str | Path, members, weights, *, meta_learner, temperature, settings: dict
) -> str:
    """Write the ensemble to a new directory ``path``; returns its absolute path."""
    tree = {
        "members": {f"m{i}": m.variables for i, m in enumerate(members)},
        "weights": np.asarray(weights, np.float32),
        "temperature": np.asarray(1.0 if temperature is None else temperature, np.float32),
    }
    if meta_learner is not None:
        tree["meta_learner"] = jax.tree.map(np.asarray, meta_learner)
    meta = {
        "format": FORMAT,
        "members": [
            {
                "spec": m.spec.to_dict(),
                "model_id": m.model_id,
                "metrics": m.metrics,
                "mixed_precision": bool(m.mixed_precision),
                "lineage": m.lineage,
            }
            for m in members
        ],
        "has_meta_learner": meta_learner is not None,
        "calibrated": temperature is not None,
        "settings": settings,
    }
    save_pytree(path, tree, _jsonable(meta))
    return str(Path(path).absolute())


def load_ensemble(path: str | Path) -> tuple[list, np.ndarray, Any, float | None, dict]:
    """``(members, weights, meta_learner, temperature, settings)`` saved by ``save_ensemble``."""
    from ml_adv.models.registry import ModelSpec
    from ml_adv.training.trained_model import TrainedModel

    meta = load_meta(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"path: expected an ensemble saved by AdvancedModelEnsemble.save ({FORMAT}), "
            f"got {meta.get('format')!r}"
        )
    specs = [ModelSpec.from_dict(m["spec"]) for m in meta["members"]]
    k = len(specs)
    target: dict[str, Any] = {
        "members": {
            f"m{i}": dict(
                jax.eval_shape(
                    lambda s=s: s.build().init(
                        jax.random.PRNGKey(0), s.example_input(), train=False
                    )
                )
            )
            for i, s in enumerate(specs)
        },
        "weights": jax.ShapeDtypeStruct((k,), np.float32),
        "temperature": jax.ShapeDtypeStruct((), np.float32),
    }
    if meta["has_meta_learner"]:
        c = specs[0].num_classes
        target["meta_learner"] = {
            "kernel": jax.ShapeDtypeStruct((k * c, c), np.float32),
            "bias": jax.ShapeDtypeStruct((c,), np.float32),
        }
    tree = load_pytree(path, target)
    members = [
        TrainedModel(
            s,
            dict(tree["members"][f"m{i}"]),
            m["model_id"],
            dict(m["metrics"]),
            bool(m["mixed_precision"]),
            m.get("lineage"),
        )
        for i, (s, m) in enumerate(zip(specs, meta["members"]))
    ]
    temperature = float(tree["temperature"]) if meta["calibrated"] else None
    return (
        members,
        np.asarray(tree["weights"]),
        tree.get("meta_learner"),
        temperature,
        dict(meta["settings"]),
    )


def run_record(rd, *, members: int, folds: int | None) -> dict[str, Any]:
    """The facade's record of a deep-ensemble run in the ``RunDirectory`` ``rd``: its
    members' ids and weights.

    Written before training starts, next to the stacked core's checkpoints: a run killed
    mid-training and started again with the same ``run_dir`` resumes training from the
    last checkpoint (the core) and comes back as the same members, with the same ids and
    weights (this record). A record of another run (other member or fold count) is an error.
    """
    path = rd.path_for(RUN_RECORD)
    if path.exists():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"run_dir: cannot read the ensemble record {path}: {exc}"
            ) from exc
        if record.get("format") != RUN_FORMAT:
            raise CheckpointError(
                f"run_dir: expected an ensemble record ({RUN_FORMAT}) in {path}, "
                f"got {record.get('format')!r}"
            )
        if (record["members"], record["folds"]) != (members, folds):
            raise CheckpointError(
                f"run_dir: {rd.path} holds an ensemble run with members={record['members']}, "
                f"folds={record['folds']}; got members={members}, folds={folds} "
                "(use another run directory, or --fresh on the command line)"
            )
        return record
    record = {
        "format": RUN_FORMAT,
        "members": members,
        "folds": folds,
        "model_ids": [uuid.uuid4().hex[:12] for _ in range(members)],
        "weights": [1.0] * members,
    }
    rd.write_json(RUN_RECORD, record)
    return record
