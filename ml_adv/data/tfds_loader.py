"""Any TFDS dataset as an ``ArrayDataset``, through ``tfds.data_source`` (no TensorFlow).

TFDS random-access data sources read ArrayRecord files with plain Python and
numpy, so ``mnist``, ``cifar10``, ``svhn_cropped``, ``imdb_reviews`` ... load
without TensorFlow. ``tensorflow_datasets`` is imported inside ``load_tfds`` only,
so ``import ml_adv`` stays fast and works where TFDS is broken or absent.

A dataset that is not prepared in ``data_dir`` (or ``TFDS_DATA_DIR``) is downloaded and
prepared there, as tfds users expect: ``builder.download_and_prepare()`` in the
ArrayRecord format, the one with random access. ``download=False`` (``--no-download`` on
the command line) refuses instead, for machines that must not touch the network; so
does a download that fails (no internet), in one line that says how to prepare it on
another machine::

    tfds build mnist --data_dir ~/tensorflow_datasets --file_format array_record

A failed download removes what it had started writing in ``data_dir``.

Text is turned into token ids by a deterministic byte-level tokenizer (no
vocabulary file to ship or version): the UTF-8 bytes of the text, byte ``b`` ->
id ``4 + b``, after a ``[CLS]`` id, truncated / padded with ``[PAD]`` to
``max_length``. Special ids PAD=0, CLS=1, SEP=2, MASK=3 (shared with the digits
token view, so BERT-style masking code works on both); ``vocab_size`` 260.
"""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_adv.data.builtin import available_builtin_datasets
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError, check_bool, check_positive
from ml_adv.tokens import SPECIAL_TOKENS

BYTE_OFFSET = len(SPECIAL_TOKENS)
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256

# Examples fetched per ``__getitems__`` call: large enough to amortise the Python
# overhead, small enough that one chunk of decoded records stays a few MB.
READ_CHUNK = 1024

_PREPARE_HINT = (
    "prepare it once on a machine with internet, "
    "in the ArrayRecord format, e.g. "
    "`tfds build {name} --data_dir {data_dir} --file_format array_record` "
    "(or tfds.builder({name!r}, data_dir=..., file_format='array_record').download_and_prepare()), "
    "then pass data_dir= or set TFDS_DATA_DIR"
)


def byte_tokenize(texts: Sequence[str | bytes], max_length: int = 128) -> np.ndarray:
    """Token ids ``[N, max_length]`` int32: ``[CLS]``, UTF-8 bytes + 4, ``[PAD]`` padding.

    Example:
        >>> byte_tokenize(["hi"], max_length=5).tolist()
        [[1, 108, 109, 0, 0]]
    """
    check_positive("max_length", max_length)
    out = np.full((len(texts), max_length), SPECIAL_TOKENS["PAD"], np.int32)
    out[:, 0] = SPECIAL_TOKENS["CLS"]
    for i, text in enumerate(texts):
        data = _as_bytes(text)[: max_length - 1]
        out[i, 1 : 1 + len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + BYTE_OFFSET
    return out


def byte_detokenize(ids: np.ndarray) -> list[str]:
    """Inverse of ``byte_tokenize`` (special ids dropped; invalid UTF-8 replaced)."""
    ids = np.asarray(ids)
    return [
        bytes((row[row >= BYTE_OFFSET] - BYTE_OFFSET).astype(np.uint8)).decode("utf-8", "replace")
        for row in np.atleast_2d(ids)
    ]


def _as_bytes(text: Any) -> bytes:
    if isinstance(text, np.ndarray):
        text = text.item()
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        return text.encode("utf-8")
    raise DataError(
        f"text_key: expected text (str or bytes) per example, got {type(text).__name__}"
    )


def _read(source, start: int, stop: int) -> list[dict]:
    keys = list(range(start, stop))
    try:
        return list(source.__getitems__(keys))
    except TypeError:
        # tfds.testing.mock_data replaces __getitems__ with an unbound function;
        # real ArrayRecord sources never take this path.
        return [source[k] for k in keys]


def _builder(tfds, name: str, data_dir):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as exc:
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(name.split("/")[0].split(":")[0], known, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ConfigError(
            f"name: unknown dataset {name!r}: not a built-in dataset "
            f"({available_builtin_datasets()}) nor a TFDS dataset{hint}"
        ) from exc


def _download_and_prepare(tfds, name: str, data_dir) -> None:
    """``download_and_prepare`` in the ArrayRecord format; on failure, remove what it started and
    raise."""
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    root = Path(builder.data_dir_root)
    watched = [root / builder.name, root / "downloads"]
    before = {p for w in watched if w.exists() for p in w.rglob("*")} | {
        w for w in watched if w.exists()
    }
    try:
        builder.download_and_prepare()
    except Exception as exc:
        for w in watched:  # deepest first, so a folder is empty by the time it is removed
            for path in sorted(
                ({w} | set(w.rglob("*"))) if w.exists() else (), key=lambda p: -len(p.parts)
            ):
                if path not in before:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                        missing_ok=True
                    )
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"name: TFDS dataset {name!r} is not prepared in data_dir {str(root)!r} "
            "and downloading it failed "
            f"({reason[:200]}); "
            + _PREPARE_HINT.format(name=name, data_dir=data_dir or "~/tensorflow_datasets")
        ) from None


def _data_source(tfds, builder, name: str, split: str, data_dir, download: bool):
    try:
        return builder.as_data_source(split=split)
    except Exception as exc:
        where = data_dir or str(builder.data_dir)
        if not builder.is_prepared():
            if download:
                _download_and_prepare(tfds, name, data_dir)
                return _builder(tfds, name, data_dir).as_data_source(split=split)
            raise DataError(
                f"name: TFDS dataset {name!r} is not prepared in data_dir {where!r} "
                "and downloading is off "
                "(download=False); "
                + _PREPARE_HINT.format(name=name, data_dir=data_dir or "~/tensorflow_datasets")
            ) from exc
        splits = sorted(builder.info.splits)
        if split.split("[")[0] not in splits:
            raise ConfigError(
                f"split: dataset {name!r} has splits {splits}, got {split!r}"
            ) from exc
        if isinstance(exc, NotImplementedError):
            raise DataError(
                f"name: TFDS dataset {name!r} is prepared in {where!r} in the "
                f"{builder.info.file_format} format, which has no random access; "
                + _PREPARE_HINT.format(name=name, data_dir=data_dir or "<another dir>")
            ) from exc
        raise DataError(
            f"name: could not open TFDS dataset {name!r} split {split!r}: {exc}"
        ) from exc


def _num_classes(feature) -> int | None:
    n = getattr(feature, "num_classes", None)
    return int(n) if isinstance(n, (int, np.integer)) and n > 0 else None


def load_tfds(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    max_examples: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
    text_key: str = "text",
    max_length: int = 128,
    download: bool = True,
) -> ArrayDataset:
    """Load a TFDS dataset into memory as an ``ArrayDataset``, preparing it first if needed.

    Args:
        name: TFDS name, optionally with config/version (``"mnist"``, ``"imdb_reviews"``).
        split: any TFDS split string (``"train"``, ``"test[:10%]"`` ...).
        data_dir: where the prepared dataset lives; TFDS's default when None.
        max_examples: keep only the first ``max_examples`` examples of the split.
        image_key: feature holding uint8 images -> float32 in [0, 1], input_kind 'image'.
        label_key: feature holding integer class ids.
        text_key: feature holding text, used when there is no ``image_key`` feature
            -> byte token ids (see module docstring), input_kind 'tokens'.
        max_length: token sequence length, ``[CLS]`` included.
        download: download and prepare (ArrayRecord) a dataset that is not prepared yet;
            False raises instead.

    Raises:
        ConfigError: unknown dataset name, split or feature key; bad sizes.
        DataError: the dataset is not prepared locally and could not (or may not) be
            downloaded, or its examples are malformed.

    Example:
        >>> ds = load_tfds("mnist", split="test", max_examples=1000)  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name: expected a non-empty dataset name, got {name!r}")
    if not isinstance(split, str) or not split:
        raise ConfigError(f"split: expected a TFDS split string such as 'train', got {split!r}")
    if max_examples is not None:
        check_positive("max_examples", max_examples)
    check_positive("max_length", max_length)

    import tensorflow_datasets as tfds

    builder = _builder(tfds, name, data_dir)
    source = _data_source(tfds, builder, name, split, data_dir, check_bool("download", download))
    features = source.dataset_info.features
    kind = _kind(features, name, label_key, image_key, text_key)
    n = len(source) if max_examples is None else min(len(source), max_examples)
    if n == 0:
        raise DataError(f"split: {name!r} split {split!r} has no examples")
    x, y = _read_all(
        source, n, kind, name, label_key, image_key if kind == "image" else text_key, max_length
    )
    label_feature = features[label_key]
    return ArrayDataset(
        x,
        y,
        num_classes=_num_classes(label_feature),
        input_kind=kind,
        name=name,
        info=_info(name, split, kind, label_feature, max_length),
    )


def _kind(features, name: str, label_key: str, image_key: str, text_key: str) -> str:
    """``"image"`` or ``"tokens"``: what the dataset's features hold (ConfigError naming a missing
    key)."""
    keys = list(features.keys())
    if label_key not in features:
        raise ConfigError(f"label_key: dataset {name!r} has features {keys}, got {label_key!r}")
    if image_key in features:
        return "image"
    if text_key in features:
        return "tokens"
    raise ConfigError(
        f"image_key/text_key: dataset {name!r} has features {keys}, "
        f"got image_key={image_key!r} and text_key={text_key!r}"
    )


def _read_all(source, n: int, kind: str, name: str, label_key: str, key: str, max_length: int):
    """``(x, y)``: the first ``n`` examples, read in chunks; images as float32 in [0, 1]."""
    x: np.ndarray | None = None
    y = np.empty(n, np.int64)
    for start in range(0, n, READ_CHUNK):
        stop = min(start + READ_CHUNK, n)
        records = _read(source, start, stop)
        y[start:stop] = [int(np.asarray(r[label_key])) for r in records]
        if kind == "tokens":
            if x is None:
                x = np.empty((n, max_length), np.int32)
            x[start:stop] = byte_tokenize([r[key] for r in records], max_length)
            continue
        chunk = _image_chunk(records, key, name)
        if x is None:
            x = np.empty((n, *chunk.shape[1:]), np.float32)
        elif chunk.shape[1:] != x.shape[1:]:
            raise DataError(
                f"image_key: expected images of shape {x.shape[1:]} in {name!r}, "
                f"got {chunk.shape[1:]}"
            )
        scale = np.float32(255.0) if chunk.dtype == np.uint8 else np.float32(1.0)
        x[start:stop] = chunk.astype(np.float32) / scale
    return x, y


def _image_chunk(records, key: str, name: str) -> np.ndarray:
    try:
        return np.stack([np.asarray(r[key]) for r in records])
    except ValueError as exc:
        raise DataError(
            f"image_key: expected images of one shape in {name!r}, got varying shapes ({exc})"
        ) from exc


def _info(name: str, split: str, kind: str, label_feature, max_length: int) -> dict:
    info: dict = {"source": "tfds", "tfds_name": name, "split": split}
    names = getattr(label_feature, "names", None)
    if names:
        info["label_names"] = list(names)
    if kind == "tokens":
        info.update(
            vocab_size=BYTE_VOCAB_SIZE,
            special_tokens=dict(SPECIAL_TOKENS),
            max_length=int(max_length),
            tokenizer="utf-8 bytes, id = 4 + byte",
        )
    return info
