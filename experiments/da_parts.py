"""The parts of the MNIST domain-adaptation experiments that ``da_mnist``'s settings and
``da_tf_dann``'s recipe share: the paper's figures, the protocols, the domains (moons, MNIST,
MNIST-M, digits in MNIST's frame), the networks and the training runs.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

# MNIST-M rebuilt from other photo sets (the main one: the 6 photos of ml_adv/data/mnist_m.py).
PHOTO_VARIANTS = {
    "one_photo": "1 photo (scikit-image's astronaut)",
    "photos_x24": "the 6 photos, each mirrored 4 ways (none, left-right, up-down, both) x its "
    "colour channels in 6 orders",
}


# Ganin et al. 2016, Table 2 (MNIST -> MNIST-M, target test accuracy).
PAPER = {"source_only": 0.5225, "dann": 0.7666, "target_only": 0.9596}


MOONS_ANGLE, MOONS_NOISE, MOONS_GRID = 35.0, 0.1, 41


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Step budgets and sizes of one protocol (``PROTOCOLS``); every other setting is the
    paper's."""

    name: str
    mnistm_epochs: int  # passes over the source train set (937 steps of 64 each)
    digits_dann_epochs: int  # DANN passes over MNIST (the digits cycle)
    digits_target_epochs: int  # train-on-target passes over the 1,437 digits (22 steps each)
    adapt_steps: int  # fine-tuning / transfer optimizer steps
    moons_epochs: int  # 10 steps each (300 source points, batch 30)
    batch_size: int = 64  # per domain: a DANN step reads 64 source + 64 target images
    adapt_batch_size: int = 32
    labels_per_class: int = 10
    train_examples: int | None = None  # None: MNIST's 60,000
    test_examples: int | None = None  # None: the 10,000 test images


PROTOCOLS = {
    # What fits ~3 h of CPU time on the 2-core EPYC (module docstring: timings).
    "cpu": Protocol(
        "cpu",
        mnistm_epochs=3,
        digits_dann_epochs=2,
        digits_target_epochs=45,
        adapt_steps=300,
        moons_epochs=1000,
    ),
    # The paper states no iteration count: 10 passes (9,370 steps of 64 + 64) exceed the 8,600
    # steps of 32 + 32 of the best-known re-implementation (pumpikano/tf-dann). For a GPU.
    "full": Protocol(
        "full",
        mnistm_epochs=10,
        digits_dann_epochs=10,
        digits_target_epochs=450,
        adapt_steps=1000,
        moons_epochs=1000,
    ),
    # The test suite's: the same code path on a tiny slice.
    "quick": Protocol(
        "quick",
        mnistm_epochs=1,
        digits_dann_epochs=1,
        digits_target_epochs=1,
        adapt_steps=4,
        moons_epochs=3,
        batch_size=16,
        adapt_batch_size=8,
        labels_per_class=2,
        train_examples=64,
        test_examples=32,
    ),
}


# The quick protocol's network: the paper's (two VALID conv + pool stages, a 100-100 label
# predictor, the domain classifier on the conv features) with 3x3 kernels, which trace and
# compile faster (the first layer's 5x5 kernel on 3 input channels is 75 traced terms).
KERNEL_QUICK = 3


CNN_OVERRIDES = {"quick": {"kernel_size": KERNEL_QUICK}}


def moons(n: int, seed: int, angle: float = 0.0):
    """``n`` inter-twinning moons (labels 0/1), rotated by ``angle`` degrees about their centre."""
    from sklearn.datasets import make_moons

    from ml_adv.data.dataset import ArrayDataset

    x, y = make_moons(n, noise=MOONS_NOISE, random_state=seed)
    centre = np.array([0.5, 0.25])  # the middle of make_moons' two half-circles
    t = np.deg2rad(angle)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    x = (x - centre) @ rotation.T + centre
    return ArrayDataset(
        x.astype(np.float32),
        y.astype(np.int32),
        num_classes=2,
        input_kind="features",
        name=f"moons_{angle:g}",
    )


def digits_as_mnist(split: str):
    """scikit-learn's digits in MNIST's frame, as RGB like the source: ``[N, 28, 28, 3]`` uint8.

    MNIST digits fill a 20x20 box centred in 28x28; the 8x8 digits fill their whole frame.
    So each digit is linearly resized 8x8 -> 20x20 (``builtin._linear_resize_matrix``, the
    resize of ``digits_m``) and padded by 4 pixels, 0..1 becomes MNIST's 0..255, and the gray
    level is copied to three channels as ``mnist_m_source`` does, so the MNIST-M source model
    serves both settings.
    """
    from ml_adv.data.builtin import _linear_resize_matrix
    from ml_adv.data.catalog import load_dataset
    from ml_adv.data.dataset import ArrayDataset

    digits = load_dataset("digits", split=split)
    w = _linear_resize_matrix(8, 20)
    big = np.einsum("oi,nij,pj->nop", w, digits.x[..., 0].astype(np.float64), w)
    framed = np.pad(big, ((0, 0), (4, 4), (4, 4)))
    gray = np.clip(np.rint(framed * 255.0), 0, 255).astype(np.uint8)
    return ArrayDataset(
        np.repeat(gray[..., None], 3, axis=-1),
        digits.y,
        num_classes=10,
        input_kind="image",
        name=f"digits_28:{split}",
        info={"from": "digits", "resize": "linear 8x8 -> 20x20, padded"},
    )


def head(data, n: int | None):
    return data if n is None or n >= len(data) else data.subset(np.arange(n))


def mnistm_source(split: str):
    from ml_adv.data.catalog import load_dataset

    return load_dataset("mnist_m_source", split=split)


def mnistm_domains(p: Protocol):
    """``(source train, source test, target train, target test)``: MNIST as RGB and MNIST-M."""
    from ml_adv.data.catalog import load_dataset

    return (
        head(mnistm_source("train"), p.train_examples),
        head(mnistm_source("test"), p.test_examples),
        head(load_dataset("mnist_m", split="train"), p.train_examples),
        head(load_dataset("mnist_m", split="test"), p.test_examples),
    )


def photo_set(variant: str) -> list[np.ndarray]:
    """The photos MNIST-M's backgrounds are cropped from, per ``PHOTO_VARIANTS`` entry."""
    from ml_adv.data.mnist_m import sample_photos

    photos = sample_photos()
    if variant == "one_photo":
        return photos[:1]
    if variant == "photos_x24":
        flips = [lambda a: a, np.fliplr, np.flipud, lambda a: a[::-1, ::-1]]
        orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
        return [
            np.ascontiguousarray(flip(photo)[..., list(order)])
            for photo in photos
            for flip in flips
            for order in orders
        ]
    raise ValueError(f"variant: expected one of {sorted(PHOTO_VARIANTS)}, got {variant!r}")


def mnistm_with_photos(p: Protocol, photos: list[np.ndarray], seed: int):
    """``(target train, target test)``: MNIST-M built as ``load_dataset("mnist_m")`` is (the
    same digits, order and blend), with backgrounds cropped from ``photos``."""
    from ml_adv.data.mnist_m import blend_with_photos

    out = []
    for split_id, split in enumerate(("train", "test")):
        source = head(
            mnistm_source(split), p.train_examples if split == "train" else p.test_examples
        )
        rng = np.random.default_rng([seed, split_id, len(photos)])
        x = blend_with_photos(source.x[..., 0], photos, rng)
        out.append(dataclasses.replace(source, x=x, domain=np.ones(len(x), np.int32)))
    return tuple(out)


def digits_domains(p: Protocol):
    """``(MNIST train, MNIST test, digits train, digits test)``, all 28x28x3 uint8 (gray as RGB)."""

    return (
        head(mnistm_source("train"), p.train_examples),
        head(mnistm_source("test"), p.test_examples),
        head(digits_as_mnist("train"), p.train_examples),
        head(digits_as_mnist("test"), p.test_examples),
    )


def sgd_config(p: Protocol, epochs: int, seed: int, **changes):
    """The paper's optimiser: SGD, momentum 0.9, ``0.01 / (1 + 10 p)^0.75`` over the run."""
    from ml_adv.training.config import TrainConfig

    settings = {
        "batch_size": p.batch_size,
        "epochs": epochs,
        "optimizer": "momentum",
        "optimizer_options": {"momentum": 0.9},
        "learning_rate": 0.01,
        "schedule": "dann",
        "seed": seed,
    }
    return TrainConfig(**{**settings, **changes})


def cnn(example_shape, p: Protocol | None = None, **changes):
    """The paper's MNIST network (CNN size ``"dann"``); the quick protocol's has 3x3 kernels;
    ``changes``: other ``CNNConfig`` fields (e.g. ``padding="SAME"``)."""
    from ml_adv import make_spec

    overrides = {**(CNN_OVERRIDES.get(p.name, {}) if p is not None else {}), **changes}
    return make_spec(
        "cnn",
        input_shape=example_shape,
        input_kind="image",
        num_classes=10,
        size="dann",
        **overrides,
    )


def train_plain(spec, data, config, run_dir, init_params=None):
    """``fit`` (resuming from ``run_dir``; from ``init_params`` if given); the trained model and
    its last epoch's record."""
    from ml_adv.rundir import Run
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    result = fit(spec, data, config, run=Run.at(run_dir, progress=False), init_params=init_params)
    return TrainedModel(spec, result.state.variables()), result.history[
        -1
    ] if result.history else {}


def train_dann(spec, source, target, config, run_dir, **options):
    """``fit_dann`` from scratch (as the paper trains); the adapted model and its last epoch's
    record."""
    from ml_adv.domain_adaptation.dann import fit_dann
    from ml_adv.rundir import Run
    from ml_adv.training.trained_model import TrainedModel

    result = fit_dann(spec, source, target, config, run=Run.at(run_dir, progress=False), **options)
    return TrainedModel(spec, result.variables), result.fit.history[
        -1
    ] if result.fit.history else {}


def mnist_dann(spec, source, target, config, run_dir, **options):
    """``train_dann`` with the paper's MNIST domain classifier (one hidden layer of 100)."""
    return train_dann(spec, source, target, config, run_dir, discriminator_hidden=(100,), **options)


def dann_record(last: dict) -> dict[str, float]:
    keys = ("train_domain_accuracy", "train_domain_loss", "train_label_loss", "train_grl_lambda")
    return {k: float(last[k]) for k in keys if k in last}


def timed(out: dict, name: str, run, evaluate):
    """Run ``run()``, store ``evaluate(model)`` under ``name`` and the seconds it took."""
    started, cpu = time.perf_counter(), time.process_time()
    model, last = run()
    out[name] = evaluate(model)
    out.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
    # CPU seconds too: on a shared machine the wall clock says more about the neighbours.
    out.setdefault("cpu_seconds", {})[name] = round(time.process_time() - cpu, 1)
    return model, last


def scorer(out: dict, source_test, target_test):
    """``evaluate(name)``: a scorer recording source test accuracy and returning target test
    accuracy."""

    def evaluate(name):
        def score(model):
            out.setdefault("source_accuracy", {})[name] = model.evaluate(source_test)["accuracy"]
            return model.evaluate(target_test)["accuracy"]

        return score

    return evaluate


def centered(datasets, reference, per_channel: bool = False):
    """``datasets`` as float32 in [0, 1] minus the per-pixel mean of ``reference``'s images, or
    with ``per_channel`` the mean of each colour channel over all their pixels (tf-dann's)."""
    if per_channel:
        total = sum(d.x.sum(axis=(0, 1, 2), dtype=np.float64) for d in reference)
        mean = total / sum(d.x[..., 0].size for d in reference) / 255.0
    else:
        mean = np.mean([d.x.mean(axis=0, dtype=np.float64) for d in reference], axis=0) / 255.0
    return [
        dataclasses.replace(d, x=(d.x.astype(np.float32) / 255.0 - mean).astype(np.float32))
        for d in datasets
    ]


def gap_closed(result: dict, method: str, bound: str) -> float | None:
    """``(method - source_only) / (bound - source_only)`` of one seed; None without a gap."""
    low, high, value = result.get("source_only"), result.get(bound), result.get(method)
    if None in (low, high, value) or high <= low:
        return None
    return (value - low) / (high - low)
