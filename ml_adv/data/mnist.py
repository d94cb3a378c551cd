"""MNIST and Fashion-MNIST by name, from their original IDX files, in five views.

``load_mnist("mnist", split="train")`` (or ``load_dataset("mnist")``) gives the standard
60,000 / 10,000 split. The four ``*-idx?-ubyte.gz`` files are looked for in ``data_dir=``,
``$ML_ADV_DATA_DIR`` and the user cache, and downloaded (sha256-checked, atomic) when
missing (``download.py``).

Pixels stay uint8 on the host (MNIST's training images are 47 MB, not 188 MB as
float32); the built-in models read a uint8 input as ``x / 255`` per batch, on device
(``ml_adv.models.layers.float_input``), so nothing is converted up front.

Views, so one dataset feeds every architecture family (names as for ``digits``):

* ``mnist`` (``"image"``): ``[N, 28, 28, 1]`` uint8 (CNNs);
* ``mnist_flat`` (``"flat"``): ``[N, 784]`` uint8 (MLPs);
* ``mnist_sequence`` (``"sequence"``): ``[N, 28, 28]`` uint8, one image row per step (LSTMs);
* ``mnist_patches`` (``"patches"``): ``[N, 49, 16]`` uint8, the 7x7 grid of 4x4 patches in
  raster order, each flattened, a sequence for the Transformer's input projection
  (ViT-style; use ``pooling="cls"`` for a learned ``[CLS]`` vector). 4x4 rather than 7x7
  patches: 49 positions keep a stroke's shape visible to attention while the sequence
  stays short enough for a CPU (16 positions of 49 pixels lose most spatial structure
  to the projection);
* ``mnist_tokens`` (``"tokens"``): ``[N, 50]`` int32, ``[CLS]`` then one token per 4x4
  patch: the id of its nearest centre in a 256-entry k-means codebook of the training
  patches (``codebooks/<name>.npy``, built by ``python -m ml_adv.data.codebooks``), plus
  the 4 special ids; ``vocab_size`` 260. Discrete tokens are what BERT's masked-token
  pretraining needs; a codebook of image patches is the usual way to get them (image GPT
  clusters pixels, BEiT patches). The quantisation keeps 95% of the test patches' pixel
  variance on MNIST and 94% on Fashion-MNIST.

The same names with ``fashion_mnist`` serve Fashion-MNIST.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.data.download import RemoteFile, cache_root, locate_or_download
from ml_adv.data.idx import read_idx
from ml_adv.errors import ConfigError, DataError
from ml_adv.tokens import SPECIAL_TOKENS

MNIST_VIEWS = ("image", "flat", "sequence", "patches", "tokens")
SPLITS = ("train", "test", "all")
PATCH = 4
CODEBOOK_SIZE = 256
TOKEN_OFFSET = len(SPECIAL_TOKENS)
VOCAB_SIZE = TOKEN_OFFSET + CODEBOOK_SIZE
CODEBOOK_DIR = Path(__file__).with_name("codebooks")


@dataclasses.dataclass(frozen=True)
class IdxDataset:
    """Where a dataset of four IDX files is published and what its files are."""

    name: str
    mirrors: tuple[str, ...]
    files: dict[str, RemoteFile]  # keys: train_images, train_labels, test_images, test_labels
    label_names: tuple[str, ...]
    licence: str


def _files(sizes_and_hashes: dict[str, tuple[str, int, str]]) -> dict[str, RemoteFile]:
    return {
        key: RemoteFile(name, size, digest)
        for key, (name, size, digest) in sizes_and_hashes.items()
    }


# Sizes and sha256 of the canonical files (as TFDS records them in its url_checksums).
IDX_DATASETS = {
    "mnist": IdxDataset(
        "mnist",
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        files=_files(
            {
                "train_images": (
                    "train-images-idx3-ubyte.gz",
                    9912422,
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                ),
                "train_labels": (
                    "train-labels-idx1-ubyte.gz",
                    28881,
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                ),
                "test_images": (
                    "t10k-images-idx3-ubyte.gz",
                    1648877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                ),
                "test_labels": (
                    "t10k-labels-idx1-ubyte.gz",
                    4542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
            }
        ),
        label_names=tuple(str(d) for d in range(10)),
        licence="CC BY-SA 3.0 (Y. LeCun, C. Cortes)",
    ),
    "fashion_mnist": IdxDataset(
        "fashion_mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=_files(
            {
                "train_images": (
                    "train-images-idx3-ubyte.gz",
                    26421880,
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ),
                "train_labels": (
                    "train-labels-idx1-ubyte.gz",
                    29515,
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                ),
                "test_images": (
                    "t10k-images-idx3-ubyte.gz",
                    4422102,
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ),
                "test_labels": (
                    "t10k-labels-idx1-ubyte.gz",
                    5148,
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
            }
        ),
        label_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        licence="MIT (Zalando SE)",
    ),
}


def _stamp(*files: Path) -> str:
    return "-".join(f"{f.stat().st_size}.{f.stat().st_mtime_ns}" for f in files)


def _cached(name: str, build, dtype, ndim: int) -> np.ndarray:
    """``build()``, kept as ``.npy`` in the user cache so a second load takes milliseconds.

    ``name`` carries the sources' sizes and modification times, so a replaced source is
    decoded again; a cache that cannot be read or written is skipped.
    """
    cached = cache_root() / "decoded" / f"{name}.npy"
    if cached.is_file():
        try:
            array = np.load(cached)
            if array.dtype == dtype and array.ndim == ndim:
                return array
        except (OSError, ValueError):
            pass
    array = build()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_name(f"{cached.name}.part-{os.getpid()}")
        with open(part, "wb") as handle:
            np.save(handle, array)
        os.replace(part, cached)
    except OSError:
        pass
    return array


def _read_cached(source: Path, ndim: int) -> np.ndarray:
    """``read_idx(source)``, decompressed once into the user cache."""
    return _cached(
        f"{source.name}.{_stamp(source)}", lambda: read_idx(source, ndim=ndim), np.uint8, ndim
    )


@functools.lru_cache(maxsize=4)
def _raw(name: str, split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 28, 28] uint8, labels [N] uint8)`` of one split, read once per process."""
    entry = IDX_DATASETS[name]
    images = _read_cached(Path(folder) / entry.files[f"{split}_images"].filename, 3)
    labels = _read_cached(Path(folder) / entry.files[f"{split}_labels"].filename, 1)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {split} has {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(entry.label_names):
        raise DataError(
            f"{folder}: {split} labels must be below {len(entry.label_names)}, got {labels.max()}"
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def to_patches(images: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """``[N, H, W]`` -> ``[N, (H/p)*(W/p), p*p]``: non-overlapping patches in raster order."""
    n, h, w = images.shape
    grid = images.reshape(n, h // patch, patch, w // patch, patch)
    return grid.transpose(0, 1, 3, 2, 4).reshape(n, (h // patch) * (w // patch), patch * patch)


@functools.lru_cache(maxsize=2)
def load_codebook(name: str) -> np.ndarray:
    """The ``[256, 16]`` float32 k-means centres of 4x4 training patches of ``name``
    (0..255 scale)."""
    path = CODEBOOK_DIR / f"{name}.npy"
    if not path.is_file():
        raise DataError(
            f"view: no patch codebook for {name!r} at {path}; build it with "
            "`python -m ml_adv.data.codebooks`"
        )
    return np.load(path).astype(np.float32)


def patch_tokens(images: np.ndarray, codebook: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """``[N, 1 + P]`` int32 token ids: ``[CLS]``, then each patch's nearest codebook entry + 4."""
    patches = to_patches(images).reshape(-1, codebook.shape[1])
    centre_norms = (codebook**2).sum(1)
    # Blank patches (half of MNIST's) all get the blank patch's code: quantise the others only.
    blank = ~patches.any(axis=1)
    codes = np.full(len(patches), np.argmin(centre_norms), np.int32)
    rows = np.flatnonzero(~blank)
    for start in range(0, len(rows), chunk):
        part = patches[rows[start : start + chunk]].astype(np.float32)
        # argmin ||x - c||^2 = argmin (||c||^2 - 2 x.c): one matmul per chunk.
        codes[rows[start : start + chunk]] = np.argmin(
            centre_norms[None, :] - 2.0 * part @ codebook.T, axis=1
        )
    out = np.empty((len(images), 1 + patches.shape[0] // len(images)), np.int32)
    out[:, 0] = SPECIAL_TOKENS["CLS"]
    out[:, 1:] = codes.reshape(len(images), -1) + TOKEN_OFFSET
    return out


def _view(name: str, split: str, view: str, folder: Path) -> tuple[np.ndarray, str, dict]:
    """``(x, input_kind, info)`` of one split in one view; patches and tokens cached on disk."""
    images = _raw(name, split, str(folder))[0]
    n = len(images)
    if view == "image":
        return images[..., None], "image", {}
    if view == "flat":
        return images.reshape(n, -1), "features", {}
    if view == "sequence":
        return images, "sequence", {}
    source = folder / IDX_DATASETS[name].files[f"{split}_images"].filename
    if view == "patches":
        patches = _cached(
            f"{name}-{split}-patches-{_stamp(source)}", lambda: to_patches(images), np.uint8, 3
        )
        return patches, "sequence", {"patch": PATCH}
    codebook = CODEBOOK_DIR / f"{name}.npy"
    tokens = _cached(
        f"{name}-{split}-tokens-{_stamp(source, codebook)}",
        lambda: patch_tokens(images, load_codebook(name)),
        np.int32,
        2,
    )
    return (
        tokens,
        "tokens",
        {
            "vocab_size": VOCAB_SIZE,
            "special_tokens": dict(SPECIAL_TOKENS),
            "max_length": int(tokens.shape[1]),
            "token_offset": TOKEN_OFFSET,
            "patch": PATCH,
            "codebook": f"{CODEBOOK_SIZE} k-means centres of {PATCH}x{PATCH} training patches",
        },
    )


def load_mnist(
    name: str = "mnist",
    *,
    view: str = "image",
    split: str = "train",
    data_dir=None,
    download: bool = True,
    max_examples: int | None = None,
) -> ArrayDataset:
    """MNIST or Fashion-MNIST in the view an architecture needs.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        view: ``"image"``, ``"flat"``, ``"sequence"``, ``"patches"`` or ``"tokens"``
            (module docstring).
        split: ``"train"`` (60,000), ``"test"`` (10,000) or ``"all"`` (both, train first).
        data_dir: a folder holding ``<name>/`` with the four IDX files (searched first).
        download: fetch missing files from the canonical mirrors (sha256-checked).
        max_examples: keep the first ``max_examples`` of the split (quick runs).

    Example:
        >>> test = load_mnist("mnist", split="test", view="flat")  # doctest: +SKIP
        >>> test.x.shape, test.x.dtype  # doctest: +SKIP
        ((10000, 784), dtype('uint8'))
    """
    if name not in IDX_DATASETS:
        raise ConfigError(f"name: expected one of {sorted(IDX_DATASETS)}, got {name!r}")
    if view not in MNIST_VIEWS:
        raise ConfigError(f"view: expected one of {list(MNIST_VIEWS)}, got {view!r}")
    if split not in SPLITS:
        raise ConfigError(f"split: {name!r} has splits {list(SPLITS)}, got {split!r}")
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ConfigError(
            f"max_examples: expected a positive integer or None, got {max_examples!r}"
        )
    entry = IDX_DATASETS[name]
    folder = locate_or_download(
        name, list(entry.files.values()), entry.mirrors, data_dir=data_dir, download=download
    )
    splits = ("train", "test") if split == "all" else (split,)
    views = [_view(name, s, view, folder) for s in splits]
    x = views[0][0] if len(views) == 1 else np.concatenate([v[0] for v in views])
    labels = np.concatenate([_raw(name, s, str(folder))[1] for s in splits])
    if max_examples is not None:
        x, labels = x[:max_examples], labels[:max_examples]
    kind, extra = views[0][1], views[0][2]
    info = {
        "source": str(folder),
        "view": view,
        "split": split,
        "label_names": list(entry.label_names),
        "licence": entry.licence,
        "pixel_scale": "uint8 0..255, read as x / 255 by the models",
        **extra,
    }
    dataset_name = name if view == "image" else f"{name}_{view}"
    return ArrayDataset(
        x, labels, num_classes=len(entry.label_names), input_kind=kind, name=dataset_name, info=info
    )
