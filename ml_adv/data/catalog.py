"""``load_dataset``: one name for every dataset, built-in or TFDS.

This small module sits above ``builtin`` (the digits loaders and their registry) and
``tfds_loader``; it imports both and neither imports it, so the two loaders no longer
import each other.
"""

from __future__ import annotations

import inspect

from ml_adv.data.builtin import (
    BUILTIN_DATASETS,
    BUILTIN_SPLITS,
    _builtin_split,
    available_builtin_datasets,
)
from ml_adv.data.dataset import ArrayDataset
from ml_adv.data.mnist import IDX_DATASETS, MNIST_VIEWS, load_mnist
from ml_adv.data.mnist_m import MNIST_M_NAMES, load_mnist_m
from ml_adv.data.tfds_loader import load_tfds
from ml_adv.errors import ConfigError

__all__ = ["available_builtin_datasets", "available_datasets", "load_dataset"]

# "mnist", "mnist_flat", ... "fashion_mnist_tokens": the IDX datasets in each view.
IDX_NAMES = {
    (base if view == "image" else f"{base}_{view}"): (base, view)
    for base in IDX_DATASETS
    for view in MNIST_VIEWS
}


def load_dataset(
    name: str, *, split: str = "train", download: bool = True, **kwargs
) -> ArrayDataset:
    """Load a dataset by name: a built-in one, else any TFDS dataset via ``load_tfds``.

    Args:
        name: one of ``available_datasets()`` (digits views, ``digits_m``, ``mnist``,
            ``fashion_mnist`` and their ``_flat``/``_sequence``/``_patches``/``_tokens``
            views, ``mnist_m`` and ``mnist_m_source``) or any TFDS name (``"cifar10"``,
            ``"imdb_reviews"`` ...).
        split: for digits ``"train"`` (80%), ``"test"`` (20%, stratified, fixed seed,
            disjoint from train) or ``"all"``; MNIST and Fashion-MNIST have their
            standard 60,000 / 10,000 ``"train"`` / ``"test"`` (and ``"all"``); for TFDS any
            TFDS split string.
        download: fetch a missing dataset (MNIST files, TFDS preparation); False raises
            a one-line DataError instead. The digits ship with scikit-learn.
        **kwargs: passed to the loader (e.g. ``seed`` for ``digits_m``; ``data_dir``,
            ``download`` and ``max_examples`` for MNIST and TFDS).

    Example:
        >>> train = load_dataset("digits_sequence", split="train")
        >>> test = load_dataset("digits_sequence", split="test")
        >>> train.example_shape, len(train) + len(test)
        ((8, 8), 1797)
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name: expected a dataset name such as 'digits', got {name!r}")
    if name in IDX_NAMES:
        base, view = IDX_NAMES[name]
        _check_kwargs(name, load_mnist, kwargs, skip=("name", "view", "split", "download"))
        return load_mnist(base, view=view, split=split, download=download, **kwargs)
    if name in MNIST_M_NAMES:  # MNIST-M target / its RGB MNIST source, MNIST's standard split
        _check_kwargs(name, load_mnist_m, kwargs, skip=("domain", "split", "download"))
        return load_mnist_m(split, domain=MNIST_M_NAMES[name], download=download, **kwargs)
    if name in BUILTIN_DATASETS:
        if split not in BUILTIN_SPLITS:
            raise ConfigError(
                f"split: built-in dataset {name!r} has splits {list(BUILTIN_SPLITS)}, got {split!r}"
            )
        loader = BUILTIN_DATASETS.get(name)
        _check_kwargs(name, loader, kwargs)
        return _builtin_split(loader(**kwargs), split)
    return load_tfds(name, split=split, download=download, **kwargs)


# The view each architecture family reads, for dataset names that come in several views.
_VIEW_FOR = {
    "digits": {
        "cnn": "digits",
        "mlp": "digits_flat",
        "lstm": "digits_sequence",
        "transformer": "digits_tokens",
        "bert": "digits_tokens",
    },
    **{
        base: {
            "cnn": base,
            "mlp": f"{base}_flat",
            "lstm": f"{base}_sequence",
            "transformer": f"{base}_patches",
            "bert": f"{base}_tokens",
        }
        for base in IDX_DATASETS
    },
}


def view_for(name: str, architecture: str) -> str:
    """The view of dataset ``name`` that ``architecture`` reads: ``view_for("mnist", "lstm")`` is
    ``"mnist_sequence"`` (rows as steps). Names without views, and custom architectures,
    pass through.

    Example:
        >>> (view_for("digits", "mlp"), view_for("fashion_mnist", "transformer"),
        ...  view_for("cifar10", "cnn"))
        ('digits_flat', 'fashion_mnist_patches', 'cifar10')
    """
    return _VIEW_FOR.get(name, {}).get(architecture, name)


def _check_kwargs(name: str, loader, kwargs: dict, skip: tuple[str, ...] = ()) -> None:
    accepted = [p for p in inspect.signature(loader).parameters if p not in skip]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"kwargs: built-in dataset {name!r} accepts {accepted}, got {unknown}")


def available_datasets() -> list[str]:
    """Every name ``load_dataset`` serves without TFDS: the digits views, digits_m, MNIST and
    Fashion-MNIST."""
    return sorted([*available_builtin_datasets(), *IDX_NAMES, *MNIST_M_NAMES])
