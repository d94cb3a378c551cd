"""Shared pieces of the SEED.md examples: the quick switch, real data, a simulated annotator.

SEED.md's examples use placeholders (``training_data``, ``source_domain_data``,
``human_labeling`` ...). Here they become real things: scikit-learn's handwritten digits
and the MNIST-M construction on them (``digits_m_source`` -> ``digits_m``), both built into
ml_adv, and an annotator that reveals the true labels of the samples it is shown.

``ML_ADV_EXAMPLES_QUICK=1`` shrinks every example to a smoke test (tiny models, one epoch,
a few trials or rounds, small slices); the test suite runs them so. It also compiles with
XLA:CPU's cheap settings (``ml_adv.devices.cheap_cpu_compiles``): on a CPU most of a smoke
test is XLA compiling, not training, and a tiny BERT's first fit then took 16 instead of 41
CPU seconds.
"""

# ruff: noqa: E402 (the imports below follow the XLA_FLAGS setting)
from __future__ import annotations

import functools
import os
from pathlib import Path

QUICK = os.environ.get("ML_ADV_EXAMPLES_QUICK") == "1"
# Set before anything runs on JAX's CPU backend, which reads XLA_FLAGS once, when it starts
# (examples/_run_all.py and each script import this module before computing anything).
if QUICK:
    from ml_adv.devices import cheap_cpu_compiles

    cheap_cpu_compiles()  # a no-op on a GPU machine, or when XLA_FLAGS already chose a level

import numpy as np

from ml_adv import (
    AdvancedModelArchitecture,
    ArrayDataset,
    TrainConfig,
    TrainedModel,
    fit,
    load_dataset,
)
from ml_adv.active_learning import ActiveLearningConfig
from ml_adv.data.builtin import (
    BUILTIN_SPLIT_SEED,
    BUILTIN_TEST_FRACTION,
    DIGITS_MAX_PIXEL,
    DIGITS_TOKEN_OFFSET,
    DIGITS_VOCAB_SIZE,
    load_digits_m,
)
from ml_adv.data.catalog import view_for
from ml_adv.rundir import QUIET
from ml_adv.tokens import CLS_ID

# Every example writes its run folders here (runs/ is git-ignored).
RUNS = Path("runs") / ("examples-quick" if QUICK else "examples")
SIZE = "tiny" if QUICK else "small"  # model size variant of the examples' models


def size_for(architecture: str) -> str:
    """``SIZE``, but a tiny BERT: BERT-small trains 5-10x slower than the other families'
    small variants on a CPU (~10 s a digits epoch on 2 cores)."""
    return "tiny" if architecture == "bert" else SIZE


def budget(quick, default):
    """``quick`` under ``ML_ADV_EXAMPLES_QUICK=1``, else ``default``."""
    return quick if QUICK else default


def show(title: str, values: dict) -> None:
    """One readable line: floats rounded, nested dicts left out."""
    shown = {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in values.items()
        if not isinstance(v, (dict, list))
    }
    print(f"{title}: {shown}")


# ------------------------------------------------------------------- data
QUICK_EXAMPLES = 256  # training examples in quick mode
VALIDATION_FRACTION = 0.15


def _parts(train: ArrayDataset, test: ArrayDataset) -> dict[str, ArrayDataset]:
    """``train``/``val``: the training split cut 85/15 (stratified, seeded), ``test`` as given;
    quick mode keeps ``QUICK_EXAMPLES`` training examples."""
    train, val = train.split((1 - VALIDATION_FRACTION, VALIDATION_FRACTION), seed=0)
    if QUICK:
        train = train.subset(np.arange(QUICK_EXAMPLES))
    return {"train": train, "val": val, "test": test}


@functools.cache
def _digits(view: str) -> dict[str, ArrayDataset]:
    return _parts(load_dataset(view, split="train"), load_dataset(view, split="test"))


def digits(view: str = "digits", part: str = "train") -> ArrayDataset:
    """A digits view (``digits``, ``digits_flat``, ``digits_sequence``, ``digits_tokens``):
    ``train`` and ``val`` split the built-in training split 85/15, ``test`` is its test split.

    Every view splits the same examples in the same order (the split depends on the labels
    only), so one example can feed several views of the same digits to an ensemble.
    """
    return _digits(view)[part]


@functools.cache
def _digits_m() -> dict[str, ArrayDataset]:
    # load_dataset("digits_m", ...) builds both domains on every call (seconds each): build them
    # once and split them as load_dataset does (the same fixed 80/20 stratified split).
    source, target = load_digits_m(seed=0)
    out = {}
    for domain, data in (("source", source), ("target", target)):
        train, test = data.train_test_split(BUILTIN_TEST_FRACTION, seed=BUILTIN_SPLIT_SEED)
        out.update({f"{domain}_{k}": v for k, v in _parts(train, test).items()})
    return out


def digits_m(part: str) -> ArrayDataset:
    """``source_train``, ``source_val``, ``source_test`` (``digits_m_source``: grey digits on
    black) or ``target_train``, ``target_val``, ``target_test`` (``digits_m``: the same digits
    blended with colour photos), split as ``digits``."""
    return _digits_m()[part]


def per_class(data: ArrayDataset, n: int, *, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """``(n examples of each class, the rest)``: a small labelled set and what remains."""
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [rng.permutation(np.flatnonzero(data.y == c))[:n] for c in range(data.num_classes)]
    )
    rest = np.setdiff1d(np.arange(len(data)), picked)
    return data.subset(np.sort(picked)), data.subset(rest)


@functools.cache
def digits_m_tokens(part: str) -> ArrayDataset:
    """``digits_m(part)`` as the 65 pixel tokens of ``digits_tokens``, for token models.

    BERT reads token ids only: the grey level of each 2x2 block of the 16x16 colour image
    becomes one of the 17 pixel tokens, after a ``[CLS]`` token, so both domains share
    digits_tokens' vocabulary (and the photo backgrounds still shift the target domain).
    """
    images = digits_m(part)
    grey = images.x.mean(axis=-1)
    n, side = grey.shape[0], grey.shape[1] // 8
    pooled = grey.reshape(n, 8, side, 8, side).mean(axis=(2, 4))
    levels = np.rint(np.clip(pooled, 0, 1) * DIGITS_MAX_PIXEL).astype(np.int32)
    tokens = np.concatenate(
        [np.full((n, 1), CLS_ID, np.int32), levels.reshape(n, -1) + DIGITS_TOKEN_OFFSET], axis=1
    )
    info = {"vocab_size": DIGITS_VOCAB_SIZE, "max_length": tokens.shape[1]}
    return ArrayDataset(
        tokens, images.y, input_kind="tokens", name=f"{images.name}_tokens", info=info
    )


# ------------------------------------------------------------------ models
# One training configuration for the models the examples need as inputs: equal programs
# compile once when the examples run together.
# (Quick mode keeps the trainer's default schedule, so the trainer's runs reuse them too.)
TRAIN_CONFIG = budget(
    TrainConfig(epochs=1, learning_rate=2e-3),
    TrainConfig(epochs=6, learning_rate=2e-3, schedule="warmup_cosine", warmup_fraction=0.05),
)


def input_dim(data: ArrayDataset) -> int:
    """What SEED.md's ``input_dim`` means for this data: the vocabulary size for tokens, the
    side of an image, the number of features (per step, for sequences)."""
    if data.input_kind == "tokens":
        return data.info["vocab_size"]
    return data.example_shape[0] if data.input_kind == "image" else data.example_shape[-1]


def design(architecture: str, data: ArrayDataset):
    """A ``ModelSpec`` of ``architecture`` (``size_for`` it) for ``data``."""
    return AdvancedModelArchitecture(architecture, size=size_for(architecture)).design_architecture(
        input_dim=input_dim(data),
        output_dim=data.num_classes,
        input_shape=data.example_shape,
        input_kind=data.input_kind,
    )


@functools.cache
def trained_model(architecture: str, data: str = "digits") -> TrainedModel:
    """A model of ``architecture`` trained with ``TRAIN_CONFIG`` on ``data`` (``"digits"``: the
    digits view the architecture reads; ``"source"``: digits_m_source); cached, so examples
    run together share it."""
    if data == "source":
        train = digits_m("source_train")
    else:
        train = digits(view_for(data, architecture))
    spec = design(architecture, train)
    return TrainedModel(spec, fit(spec, train, TRAIN_CONFIG, run=QUIET).state.variables())


def active_learning_config() -> ActiveLearningConfig:
    """How each active-learning round trains (the library's defaults, shrunk in quick mode)."""
    if not QUICK:
        return ActiveLearningConfig()
    return ActiveLearningConfig(train=TrainConfig(epochs=1), update_epochs=1, min_steps=1)


# --------------------------------------------------------------- annotator
class SimulatedAnnotator:
    """Stands in for the people who label selected samples: it reveals the true labels of
    the pool (held back from the learner until asked) and counts what it was asked."""

    def __init__(self, pool_labels: np.ndarray):
        self._labels = np.asarray(pool_labels)
        self.labels_given = 0

    async def __call__(self, selection) -> np.ndarray:
        """Labels for ``select_samples``' selection, in its order."""
        self.labels_given += len(selection.indices)
        return self._labels[selection.indices].copy()
