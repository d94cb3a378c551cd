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
from ml_adv.data.tfds_loader import load_tfds
from ml_adv.errors import ConfigError

__all__ = ["available_builtin_datasets", "load_dataset"]


def load_dataset(name: str, *, split: str = "train", **kwargs) -> ArrayDataset:
    """Load a dataset by name: a built-in one, else any TFDS dataset via ``load_tfds``.

    Args:
        name: one of ``available_builtin_datasets()`` or a TFDS name (``"mnist"``,
            ``"imdb_reviews"`` ...).
        split: for built-ins ``"train"`` (80%), ``"test"`` (20%, stratified, fixed
            seed, disjoint from train) or ``"all"``; for TFDS any TFDS split string.
        **kwargs: passed to the loader (e.g. ``seed`` for ``digits_m``,
            ``max_examples`` for TFDS).

    Example:
        >>> train = load_dataset("digits_sequence", split="train")
        >>> test = load_dataset("digits_sequence", split="test")
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name: expected a dataset name such as 'digits', got {name!r}")
    if name in BUILTIN_DATASETS:
        if split not in BUILTIN_SPLITS:
            raise ConfigError(
                f"split: built-in dataset {name!r} has splits {list(BUILTIN_SPLITS)}, got {split!r}"
            )
        loader = BUILTIN_DATASETS.get(name)
        try:
            inspect.signature(loader).bind(**kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"kwargs: built-in dataset {name!r} does not accept {sorted(kwargs)} ({exc})"
            ) from exc
        return _builtin_split(loader(**kwargs), split)
    return load_tfds(name, split=split, **kwargs)
