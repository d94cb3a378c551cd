"""Built-in real datasets that need no network: ``digits`` in four views and ``digits_m``.

``digits`` is scikit-learn's copy of the UCI handwritten digits (1,797 real 8x8
images, pixel values 0..16), shipped inside the scikit-learn wheel, so tests,
examples and benchmarks run on real data on a machine without internet.

Views, so the same images feed every architecture family:

* ``"image"``: float32 ``[N, 8, 8, 1]`` in [0, 1] (CNNs).
* ``"flat"``: float32 ``[N, 64]`` in [0, 1] (MLPs).
* ``"sequence"``: float32 ``[N, 8, 8]``, one image row per time step (LSTMs).
* ``"tokens"``: int32 ``[N, 65]``, ``[CLS]`` then the 64 pixel intensities as
  tokens (Transformers/BERT). Vocabulary: PAD=0, CLS=1, SEP=2, MASK=3 and pixel
  value ``v`` in 0..16 -> ``4 + v``; ``vocab_size`` 21. The same four special ids
  as the TFDS byte tokenizer, so BERT-style masking code works on both.

``digits_m`` is the MNIST-M construction (Ganin et al., 2016, "Domain-Adversarial
Training of Neural Networks") applied to digits, for domain adaptation: the
source domain is the digits as RGB (gray replicated to 3 channels); the target
domain blends each digit with a random patch of a colour photo,
``|patch - digit|`` per channel, so strokes invert the photo's colours. The
photos are scikit-learn's bundled sample images (china.jpg, flower.jpg).

Why 16x16 and patches of 64x64 photo pixels by default: at native 8x8 the
one-pixel strokes barely survive a textured patch (32x32 photo pixels: train on
target 0.89-0.91, too close to failing), and a native-scale 8x8 patch is nearly
a flat colour (smaller gap, 0.53 source-only); upsampling the digits to 16x16
keeps strokes readable on textured backgrounds, and a 64x64 crop (block-averaged
4x down to 16x16) brings in real photo texture and edges. Measured with the DESIGN
reference CNN (conv32-pool-conv64-pool-dense128, Adam 1e-3, batch 64, 25 epochs,
80/20 stratified split, seeds 0-2): training on the target reaches 0.94
(0.93-0.95) held-out target accuracy, while the same CNN trained on the source
only scores 0.42 (0.40-0.43) on those target examples (0.99 on source), a domain
gap like MNIST -> MNIST-M (about 0.52 vs 0.96).

Built-in datasets have no official train/test split; ``load_dataset`` defines
one (80/20, stratified, fixed seed) so that ``split="train"`` and
``split="test"`` never overlap and are the same examples in every view
(including ``digits_m`` source and target), and ``split="all"`` returns all.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, check_positive
from ml_adv.registry import Registry
from ml_adv.tokens import SPECIAL_TOKENS  # shared with the TFDS byte tokenizer

DIGITS_VIEWS = ("image", "flat", "sequence", "tokens")
DIGITS_MAX_PIXEL = 16
DIGITS_NUM_CLASSES = 10


DIGITS_TOKEN_OFFSET = len(SPECIAL_TOKENS)
DIGITS_VOCAB_SIZE = DIGITS_TOKEN_OFFSET + DIGITS_MAX_PIXEL + 1

BUILTIN_SPLITS = ("train", "test", "all")
BUILTIN_TEST_FRACTION = 0.2
BUILTIN_SPLIT_SEED = 0

# scikit-learn's bundled photos, in the (name) order its load_sample_images returns them.
SAMPLE_PHOTOS = ("china.jpg", "flower.jpg")

SOURCE_DOMAIN = 0
TARGET_DOMAIN = 1

BUILTIN_DATASETS: Registry[Callable[..., ArrayDataset]] = Registry("dataset")


@functools.cache
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """``(pixels [N, 8, 8] int in 0..16, labels [N])`` from scikit-learn's copy of the data.

    The CSV that ``sklearn.datasets.load_digits`` parses is read directly: importing
    ``sklearn.datasets`` costs ~3.5 s of a 2-core machine's start-up (a fifth of the quickstart's
    process) for 0.2 s of reading. The arrays are cached read-only; views copy them.
    """
    csv = _sklearn_data_file("datasets", "data", "digits.csv.gz")
    if csv is not None:
        table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
        pixels, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)
    else:  # a scikit-learn that keeps the data elsewhere: its own loader
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        pixels, labels = bunch.images.astype(np.int64), bunch.target.astype(np.int32)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_digits(view: str = "image") -> ArrayDataset:
    """scikit-learn's 1,797 real handwritten digits in the view an architecture needs.

    Args:
        view: one of ``"image"``, ``"flat"``, ``"sequence"``, ``"tokens"`` (see the
            module docstring for shapes and the token vocabulary).

    Returns:
        An ``ArrayDataset`` with 10 classes, named ``"digits"`` or ``"digits_<view>"``.

    Example:
        >>> ds = load_digits("tokens")
        >>> ds.x.shape, ds.info["vocab_size"]
        ((1797, 65), 21)
    """
    if view not in DIGITS_VIEWS:
        raise ConfigError(f"view: expected one of {list(DIGITS_VIEWS)}, got {view!r}")
    pixels, labels = _digits_raw()
    n = len(pixels)
    scaled = pixels.astype(np.float32) / np.float32(DIGITS_MAX_PIXEL)
    info: dict = {"source": "sklearn.datasets.load_digits", "view": view}
    if view == "image":
        x, kind = scaled[..., None], "image"
    elif view == "flat":
        x, kind = scaled.reshape(n, -1), "features"
    elif view == "sequence":
        x, kind = scaled, "sequence"
    else:
        cls = np.full((n, 1), SPECIAL_TOKENS["CLS"], np.int32)
        x = np.concatenate(
            [cls, (pixels.reshape(n, -1) + DIGITS_TOKEN_OFFSET).astype(np.int32)], axis=1
        )
        kind = "tokens"
        info.update(
            vocab_size=DIGITS_VOCAB_SIZE,
            special_tokens=dict(SPECIAL_TOKENS),
            max_length=int(x.shape[1]),
            token_offset=DIGITS_TOKEN_OFFSET,
        )
    name = "digits" if view == "image" else f"digits_{view}"
    return ArrayDataset(
        x, labels, num_classes=DIGITS_NUM_CLASSES, input_kind=kind, name=name, info=info
    )


def digits_tokens_to_pixels(tokens: np.ndarray) -> np.ndarray:
    """Invert the ``"tokens"`` view: ``[N, 65]`` ids -> ``[N, 8, 8]`` pixel values 0..16."""
    tokens = np.asarray(tokens)
    return (tokens[:, 1:] - DIGITS_TOKEN_OFFSET).reshape(-1, 8, 8)


# ------------------------------------------------------------------ digits_m
def _linear_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` linear-interpolation weights (half-pixel centres, edge clamp).

    Applying it on both sides (``W @ img @ W.T``) resizes a 2-D image; the rows
    are convex weights, so values stay in the input range.
    """
    coord = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    coord = np.clip(coord, 0.0, size_in - 1)
    lo = np.floor(coord).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = coord - lo
    w = np.zeros((size_out, size_in), np.float64)
    w[np.arange(size_out), lo] += 1.0 - frac
    w[np.arange(size_out), hi] += frac
    return w


def _sklearn_data_file(*parts: str) -> Path | None:
    """A file of scikit-learn's package data, found without importing scikit-learn (importing
    ``sklearn.datasets`` costs ~2-3.5 s of a 2-core machine's process start-up); None when
    this scikit-learn keeps it elsewhere."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return next((f for f in (Path(d).joinpath(*parts) for d in locations) if f.is_file()), None)


@functools.cache
def _sample_photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled colour photos as float32 ``[H, W, 3]`` in [0, 1] (read-only).

    Decoded as ``sklearn.datasets.load_sample_images`` does (Pillow, files in name order), from
    the files themselves when they are where scikit-learn keeps them.
    """
    files = [_sklearn_data_file("datasets", "images", name) for name in SAMPLE_PHOTOS]
    if all(files):
        from PIL import Image

        images = []
        for f in files:
            with Image.open(f) as image:
                images.append(np.asarray(image))
    else:  # a scikit-learn that keeps them elsewhere: its own loader
        from sklearn.datasets import load_sample_images

        images = load_sample_images().images
    photos = tuple(img.astype(np.float32) / np.float32(255.0) for img in images)
    for photo in photos:
        photo.setflags(write=False)
    return photos


@functools.lru_cache(maxsize=4)
def _digits_m_arrays(seed: int, image_size: int, patch_scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(source, target)`` images of ``load_digits_m`` (checked arguments), cached read-only.

    Cached because building them takes ~0.45 s of a 2-core machine (a Python loop over 1,797
    crops), and a domain-adaptation script loads the source and target splits several times.
    """
    pixels = _digits_raw()[0]
    resize = _linear_resize_matrix(pixels.shape[1], image_size)
    gray = np.einsum("oi,nij,pj->nop", resize, pixels / DIGITS_MAX_PIXEL, resize)
    digits = np.repeat(gray.astype(np.float32)[..., None], 3, axis=-1)

    photos = _sample_photos()
    crop = image_size * patch_scale
    for i, photo in enumerate(photos):
        if min(photo.shape[:2]) < crop:
            raise ConfigError(
                f"patch_scale: expected image_size * patch_scale <= {min(photo.shape[:2])} "
                f"(the smaller side of sample photo {i}), got {image_size} * {patch_scale} = {crop}"
            )
    rng = np.random.default_rng(seed)
    which = rng.integers(len(photos), size=len(pixels))
    tops = rng.random(len(pixels))
    lefts = rng.random(len(pixels))
    patches = np.empty_like(digits)
    for n, (p, t, left) in enumerate(zip(which, tops, lefts, strict=True)):
        photo = photos[p]
        r = int(t * (photo.shape[0] - crop + 1))
        c = int(left * (photo.shape[1] - crop + 1))
        window = photo[r : r + crop, c : c + crop]
        patches[n] = window.reshape(image_size, patch_scale, image_size, patch_scale, 3).mean(
            axis=(1, 3)
        )
    blended = np.abs(patches - digits)
    for array in (digits, blended):
        array.setflags(write=False)
    return digits, blended


def load_digits_m(
    seed: int = 0, *, image_size: int = 16, patch_scale: int = 4
) -> tuple[ArrayDataset, ArrayDataset]:
    """The MNIST-M construction on digits: ``(source, target)`` for domain adaptation.

    Args:
        seed: picks the photo and the crop position for each digit; the same seed
            gives bitwise-identical arrays.
        image_size: side of the output images; digits are linearly upsampled from
            8x8 (a multiple of 8 keeps the resampling symmetric).
        patch_scale: photo pixels per output pixel. Each target background is a
            crop of ``image_size * patch_scale`` photo pixels, block-averaged down
            to ``image_size``; larger values bring in more texture (harder shift).

    Returns:
        ``(source, target)``: float32 ``[N, image_size, image_size, 3]`` images in
        [0, 1], the same labels and order, domain ids 0 and 1, named
        ``"digits_m_source"`` and ``"digits_m"``.

    Example:
        >>> source, target = load_digits_m(seed=0)
        >>> source.x.shape == target.x.shape == (1797, 16, 16, 3)
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
    image_size = check_positive("image_size", image_size)
    patch_scale = check_positive("patch_scale", patch_scale)
    digits, blended = _digits_m_arrays(int(seed), image_size, patch_scale)
    labels = _digits_raw()[1]

    info = {
        "construction": "MNIST-M (Ganin et al. 2016): |patch - digit| per channel",
        "photos": f"sklearn.datasets.load_sample_images ({', '.join(SAMPLE_PHOTOS)})",
        "seed": int(seed),
        "image_size": int(image_size),
        "patch_scale": int(patch_scale),
    }
    common = dict(num_classes=DIGITS_NUM_CLASSES, input_kind="image", info=info)
    source = ArrayDataset(
        digits.copy(),  # the cached arrays stay as built whatever a caller does to its copy
        labels,
        domain=np.full(len(labels), SOURCE_DOMAIN, np.int32),
        name="digits_m_source",
        **common,
    )
    target = ArrayDataset(
        blended.copy(),
        labels,
        domain=np.full(len(labels), TARGET_DOMAIN, np.int32),
        name="digits_m",
        **common,
    )
    return source, target


# ------------------------------------------------------------------ registry
for _view in DIGITS_VIEWS:
    BUILTIN_DATASETS.register(
        "digits" if _view == "image" else f"digits_{_view}",
        functools.partial(load_digits, view=_view),
    )
del _view


@BUILTIN_DATASETS.register("digits_m")
def _digits_m_target(seed: int = 0, *, image_size: int = 16, patch_scale: int = 4) -> ArrayDataset:
    return load_digits_m(seed, image_size=image_size, patch_scale=patch_scale)[1]


@BUILTIN_DATASETS.register("digits_m_source")
def _digits_m_source(seed: int = 0, *, image_size: int = 16, patch_scale: int = 4) -> ArrayDataset:
    return load_digits_m(seed, image_size=image_size, patch_scale=patch_scale)[0]


def available_builtin_datasets() -> list[str]:
    """Names ``load_dataset`` serves without TFDS (sorted)."""
    return BUILTIN_DATASETS.names()


def _builtin_split(ds: ArrayDataset, split: str) -> ArrayDataset:
    if split == "all":
        return ds
    train, test = ds.train_test_split(BUILTIN_TEST_FRACTION, seed=BUILTIN_SPLIT_SEED)
    part = train if split == "train" else test
    return dataclasses.replace(part, name=f"{ds.name}:{split}", info=dict(ds.info, split=split))
