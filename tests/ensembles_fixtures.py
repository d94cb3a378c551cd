"""Trained models shared by the ensemble test modules, each built once per test session.

Pytest shares a session fixture only when it lives in conftest.py; these builders are
cached functions instead (``functools.cache``), which the test modules wrap in their own
fixtures, so a model trained for one module is reused by the others. Everything is tiny:
tiny specs, 2 epochs, 480 training digits. Every run of one architecture uses one config
and one data size, so each training program compiles once per session.

``deep_inputs`` is also imported by the kill/resume test's child process, which must train
exactly what ``deep_ensemble`` trains.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ml_adv import AdvancedModelEnsemble, TrainConfig, TrainedModel, fit, load_dataset, make_spec
from ml_adv.rundir import Run

VIEWS = {"cnn": "digits", "mlp": "digits_flat", "lstm": "digits_sequence"}
# One conv layer and no hidden dense layer: half the compile time of the tiny CNN, and after
# 2 epochs on 480 digits a better model (0.87 test accuracy against 0.45).
OVERRIDES = {"cnn": {"conv_features": (4,), "dense_features": ()}}
TRAIN_EXAMPLES = 480
CONFIG = TrainConfig(epochs=2, batch_size=32, learning_rate=1e-2)
DEEP_MEMBERS = 3  # as many as the command test's folds: the stacked initialiser compiles once


def data_and_spec(arch: str):
    """(first TRAIN_EXAMPLES digits in ``arch``'s view, its tiny spec with ``OVERRIDES``)."""
    train = load_dataset(VIEWS[arch], split="train").subset(np.arange(TRAIN_EXAMPLES))
    spec = make_spec(
        arch,
        input_shape=train.example_shape,
        input_kind=train.input_kind,
        num_classes=10,
        size="tiny",
        **OVERRIDES.get(arch, {}),
    )
    return train, spec


def deep_inputs():
    """``(spec, train, config, members)`` of the shared deep ensemble."""
    train, spec = data_and_spec("mlp")
    return spec, train, CONFIG, DEEP_MEMBERS


@functools.cache
def deep_ensemble() -> AdvancedModelEnsemble:
    """Three tiny MLPs trained as one stacked program by ``AdvancedModelEnsemble.train`` (no
    run_dir)."""
    spec, train, config, members = deep_inputs()
    return AdvancedModelEnsemble.train(spec, train, config, members=members)


@functools.cache
def single_model(arch: str) -> TrainedModel:
    """One tiny ``arch`` model trained with ``fit`` (a jitted step, which compiles faster than a
    scanned epoch)."""
    train, spec = data_and_spec(arch)
    result = fit(
        spec, train, dataclasses.replace(CONFIG, scan_epochs=False), run=Run(progress=False)
    )
    return TrainedModel(spec, result.state.variables(), model_id=f"{arch}0")


@functools.cache
def heterogeneous_members() -> tuple[TrainedModel, ...]:
    """(cnn0, mlp0, mlp1, lstm0): two of the deep ensemble's MLPs renamed, between a CNN and an
    LSTM."""
    mlp0, mlp1 = (
        TrainedModel(m.spec, m.variables, model_id=f"mlp{i}", metrics=m.metrics)
        for i, m in enumerate(deep_ensemble().models[:2])
    )
    return single_model("cnn"), mlp0, mlp1, single_model("lstm")


@functools.cache
def split_views():
    """(val, test): dicts of ArrayDataset views keyed by input kind, the same examples in each.

    Both halves of the digits test split have the same size, so every compiled ensemble
    function is reused between them.
    """
    out = []
    for idx in (np.arange(0, 358, 2), np.arange(1, 358, 2)):
        out.append(
            {
                ds.input_kind: ds
                for ds in (load_dataset(v, split="test").subset(idx) for v in VIEWS.values())
            }
        )
    return tuple(out)
