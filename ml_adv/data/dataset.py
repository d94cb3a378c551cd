"""In-memory datasets: validation on entry, deterministic splits, key-driven batching.

``ArrayDataset`` is the one data container the library passes around. It holds
host (numpy) arrays: features ``x``, integer labels ``y`` and optional integer
``domain`` ids. Everything is validated once, when the dataset is built, so the
compiled training code never sees NaNs, out-of-range labels or ragged inputs.

Integer features are ambiguous: token ids for a Transformer, counts or
categories for an MLP, pixel values for a CNN. The dtype alone does not decide:
pass ``input_kind`` (the trainer passes the one its architecture takes), and
non-token integer features become float32 with their values unchanged. uint8
arrays are the exception: they are pixel intensities, kept as uint8 (a quarter of
the memory) and read by the built-in models as ``x / 255``
(``ml_adv.models.layers.float_input``). Only when nothing says otherwise is a 2-D
array of non-negative integers taken for token ids (negative values cannot be).

Epoch order lives in one place, ``ml_adv.training.steps.epoch_order``, drawn on
the host from an explicit key; ``iter_batches`` takes such an order, so there is
no second shuffling path here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ml_adv.errors import ConfigError, DataError, check_positive, describe

# What ``x`` represents; models use it to validate inputs (see ModelSpec).
INPUT_KINDS = ("features", "image", "sequence", "tokens")


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise DataError(
            f"{name}: expected an array-like of uniform shape, got {describe(value)} ({exc})"
        ) from exc
    if arr.dtype == object:
        raise DataError(
            f"{name}: expected a numeric array of uniform shape, got a ragged/object array"
        )
    return arr


def validate_labels(name: str, y: Any, num_classes: int | None = None) -> np.ndarray:
    """Return ``y`` as int32 after checking it is 1-D, integral and within ``[0, num_classes)``.

    Booleans are accepted as classes 0 and 1.
    """
    arr = _as_array(name, y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        raise DataError(
            f"{name}: expected a 1-D array of integer class ids, got {describe(arr)}; "
            "a column vector? pass y.ravel()"
        )
    if arr.ndim == 2:
        raise DataError(
            f"{name}: expected a 1-D array of integer class ids, got {describe(arr)}; "
            "one-hot labels? pass y.argmax(-1)"
        )
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array of integer class ids, got {describe(arr)}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(
                f"{name}: expected integer class ids, got non-integer floats (dtype {arr.dtype})"
            )
    elif arr.dtype.kind in "USO":
        raise DataError(
            f"{name}: expected integer class ids, got dtype {arr.dtype} (text labels?); "
            "encode them first, e.g. classes, y = np.unique(y, return_inverse=True)"
        )
    elif arr.dtype.kind not in "iub":
        raise DataError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "f" and np.abs(arr).max() >= 2**31:
        raise DataError(f"{name}: expected class ids below 2**31, got maximum {arr.max()}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise DataError(f"{name}: expected class ids >= 0, got minimum {int(arr.min())}")
    if arr.size and arr.max() >= 2**31:
        raise DataError(f"{name}: expected class ids below 2**31, got maximum {int(arr.max())}")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise DataError(
            f"{name}: expected class ids in [0, {num_classes}), got maximum {int(arr.max())}"
        )
    return arr.astype(np.int32)


def validate_features(name: str, x: Any, input_kind: str | None = None) -> np.ndarray:
    """Return ``x`` checked (finite, non-empty, numeric) as float32, or int32 for token ids.

    Args:
        name: the argument name used in error messages.
        x: ``[N, ...]`` array-like.
        input_kind: one of ``INPUT_KINDS``; integer ``x`` stays int32 only for ``'tokens'``
            (and, when ``input_kind`` is None, as before: the caller decides later).
            Booleans are always features (float32 0/1).
    """
    arr = _as_array(name, x)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise DataError(
            f"{name}: expected a non-empty array with a leading example axis, got {describe(arr)}"
        )
    if arr.ndim < 2:
        raise DataError(
            f"{name}: expected at least 2 dimensions (examples, features...), got {describe(arr)}; "
            "one feature per example? pass x.reshape(-1, 1)"
        )
    if arr.size == 0:
        raise DataError(f"{name}: expected at least one feature per example, got {describe(arr)}")
    if arr.dtype.kind == "b":
        return arr.astype(np.float32)
    if arr.dtype == np.uint8 and input_kind not in (None, "tokens"):
        return arr  # pixel intensities stay uint8 (4x less memory); models read them as x / 255
    if arr.dtype.kind in "iu":
        if input_kind in (None, "tokens"):
            if arr.min() < 0 and input_kind == "tokens":
                raise DataError(f"{name}: expected token ids >= 0, got minimum {int(arr.min())}")
            if arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min:
                raise DataError(
                    f"{name}: expected integers that fit in int32, "
                    f"got range [{arr.min()}, {arr.max()}]"
                )
            return arr.astype(np.int32)
        return arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise DataError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if input_kind == "tokens":
        raise DataError(
            f"{name}: input_kind 'tokens' expects integer token ids, got dtype {arr.dtype}"
        )
    with np.errstate(over="ignore"):  # reported below as a DataError, not a RuntimeWarning
        out = arr.astype(np.float32)
    # Checked after the cast: float64 values beyond float32's range become inf.
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        what = "NaN/inf" if not np.all(np.isfinite(arr)) else "float32-overflowing (|x| > 3.4e38)"
        raise DataError(f"{name}: expected finite values, got {bad} {what} entries")
    return out


def check_labels_below(argument: str, y: np.ndarray, num_classes: int) -> None:
    """DataError unless every label in ``y`` is below ``num_classes`` (a model's output count)."""
    if len(y) and int(np.max(y)) >= num_classes:
        raise DataError(
            f"{argument}: expected class ids in [0, {num_classes}) "
            f"for a model with {num_classes} outputs, "
            f"got maximum {int(np.max(y))}"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Features, integer labels and optional domain ids, validated on construction.

    Args:
        x: ``[N, ...]`` features (float) or token ids (int).
        y: ``[N]`` integer class ids in ``[0, num_classes)``.
        num_classes: number of classes; inferred as ``max(y) + 1`` when omitted.
        domain: optional ``[N]`` integer domain ids (0 = source, 1 = target, ...).
        input_kind: what ``x`` holds, one of ``INPUT_KINDS``; inferred when omitted.
        name: a label used in reports.
        info: free-form metadata (e.g. ``vocab_size`` for token data).

    Example:
        >>> ds = ArrayDataset(np.zeros((4, 3)), np.array([0, 1, 0, 1]))
        >>> train, test = ds.split((0.5, 0.5), seed=0)
        >>> len(train), len(test)
        (2, 2)
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int | None = None
    domain: np.ndarray | None = None
    input_kind: str | None = None
    name: str = "dataset"
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.input_kind is not None and self.input_kind not in INPUT_KINDS:
            raise DataError(
                f"input_kind: expected one of {list(INPUT_KINDS)}, got {self.input_kind!r}"
            )
        raw = _as_array("x", self.x)
        kind = self.input_kind or _infer_kind(raw)
        x = validate_features("x", raw, kind)
        if self.num_classes is not None:
            object.__setattr__(self, "num_classes", check_positive("num_classes", self.num_classes))
        y = validate_labels("y", self.y, self.num_classes)
        if len(y) != len(x):
            raise DataError(f"y: expected {len(x)} labels to match x, got {len(y)}")
        num_classes = self.num_classes if self.num_classes is not None else int(y.max()) + 1
        domain = self.domain
        if domain is not None:
            domain = validate_labels("domain", domain)
            if len(domain) != len(x):
                raise DataError(
                    f"domain: expected {len(x)} domain ids to match x, got {len(domain)}"
                )
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "input_kind", kind)
        if not isinstance(self.info, dict) or not isinstance(self.name, str):
            bad = ("info", "a dict") if not isinstance(self.info, dict) else ("name", "a string")
            raise DataError(f"{bad[0]}: expected {bad[1]}, got {describe(getattr(self, bad[0]))}")
        object.__setattr__(self, "info", dict(self.info))

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example (``x.shape[1:]``)."""
        return tuple(self.x.shape[1:])

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, n={len(self)}, example_shape={self.example_shape}, "
            f"input_kind={self.input_kind!r}, num_classes={self.num_classes})"
        )

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> ArrayDataset:
        """Dataset restricted to ``indices`` (in the given order), or to the rows of a boolean
        mask."""
        raw = np.asarray(indices)
        if raw.dtype.kind == "b":
            if raw.shape != (len(self),):
                raise DataError(
                    f"indices: a boolean mask needs one entry per example ({len(self)}), "
                    f"got {describe(raw)}"
                )
            raw = np.flatnonzero(raw)
        elif raw.size and raw.dtype.kind not in "iu":
            raise DataError(
                f"indices: expected integer indices or a boolean mask, got {describe(raw)}"
            )
        idx = raw.astype(np.int64)
        if idx.ndim != 1:
            raise DataError(f"indices: expected a 1-D index array, got {describe(idx)}")
        if idx.size == 0:
            raise DataError("indices: expected at least one index, got an empty selection")
        if idx.min() < -len(self) or idx.max() >= len(self):
            raise DataError(
                f"indices: expected values in [0, {len(self)}), "
                f"got range [{idx.min()}, {idx.max()}]"
            )
        return dataclasses.replace(
            self,
            x=self.x[idx],
            y=self.y[idx],
            domain=None if self.domain is None else self.domain[idx],
            name=name or self.name,
        )

    def with_input_kind(self, input_kind: str, *, argument: str = "x") -> ArrayDataset:
        """The same examples read as ``input_kind`` (e.g. integer features for an MLP: float32).

        Raises DataError when impossible (float features cannot be token ids).
        """
        if input_kind == self.input_kind:
            return self
        if input_kind not in INPUT_KINDS:
            raise DataError(f"input_kind: expected one of {list(INPUT_KINDS)}, got {input_kind!r}")
        if input_kind == "tokens" and self.x.dtype.kind not in "iu":
            raise DataError(
                f"{argument}: {input_kind!r} inputs are integer token ids, "
                f"got {self.input_kind} data of dtype {self.x.dtype}"
            )
        keep = input_kind == "tokens" or self.x.dtype == np.uint8  # uint8 pixels stay uint8
        x = self.x if keep else self.x.astype(np.float32)
        return dataclasses.replace(self, x=x, input_kind=input_kind)

    def with_domain(self, domain_id: int) -> ArrayDataset:
        """Copy with every example tagged with ``domain_id``."""
        return dataclasses.replace(self, domain=np.full(len(self), domain_id, np.int32))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.num_classes)

    # ------------------------------------------------------------------ splits
    def split(
        self, fractions: Sequence[float] = (0.8, 0.2), *, seed: int = 0, stratify: bool = True
    ) -> tuple[ArrayDataset, ...]:
        """Deterministic split into parts with the given fractions (which must sum to 1).

        Stratified by label by default, so each part keeps the class balance.
        The same ``seed`` always yields the same parts.
        """
        fr = np.asarray(fractions, dtype=np.float64)
        if fr.ndim != 1 or fr.size < 2 or np.any(fr <= 0) or not np.isclose(fr.sum(), 1.0):
            raise DataError(
                f"fractions: expected >= 2 positive fractions summing to 1, got {list(fractions)}"
            )
        rng = np.random.default_rng(seed)
        groups = (
            [np.flatnonzero(self.y == c) for c in range(self.num_classes)]
            if stratify
            else [np.arange(len(self))]
        )
        parts: list[list[np.ndarray]] = [[] for _ in fr]
        for group in groups:
            group = rng.permutation(group)
            bounds = np.round(np.cumsum(fr) * len(group)).astype(int)
            start = 0
            for i, end in enumerate(bounds):
                parts[i].append(group[start:end])
                start = end
        out = []
        for i, chunks in enumerate(parts):
            idx = rng.permutation(np.concatenate(chunks)) if chunks else np.array([], np.int64)
            if idx.size == 0:
                raise DataError(
                    f"fractions: part {i} ({fr[i]:.3f}) of {len(self)} examples would be empty"
                )
            out.append(self.subset(idx, name=f"{self.name}[{i}]"))
        return tuple(out)

    def train_test_split(self, test_fraction: float = 0.2, *, seed: int = 0):
        """``(train, test)`` stratified split."""
        return self.split((1.0 - test_fraction, test_fraction), seed=seed)

    # ---------------------------------------------------------------- batching
    def check_batch_size(self, batch_size: int, *, argument: str = "batch_size") -> None:
        """Raise ConfigError if ``batch_size`` is not positive or exceeds the dataset size."""
        batch_size = check_positive(argument, batch_size)
        if batch_size > len(self):
            raise ConfigError(
                f"{argument}: expected at most the dataset size "
                f"({len(self)} examples in {self.name!r}), got {batch_size}"
            )

    def iter_batches(
        self,
        batch_size: int,
        *,
        order: Sequence[int] | np.ndarray | None = None,
        drop_remainder: bool = False,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{'x', 'y'[, 'domain']}`` batches in ``order`` (default: as stored).

        For a shuffled epoch pass ``ml_adv.training.steps.epoch_order(key, len(ds), batch_size)``
        flattened, the order training uses.
        """
        self.check_batch_size(batch_size)
        if order is None:
            idx_all = np.arange(len(self))
        else:
            idx_all = np.asarray(order, dtype=np.int64).reshape(-1)
            if idx_all.size and (idx_all.min() < 0 or idx_all.max() >= len(self)):
                raise DataError(
                    f"order: expected indices in [0, {len(self)}), "
                    f"got range [{idx_all.min()}, {idx_all.max()}]"
                )
        stop = len(idx_all) - (len(idx_all) % batch_size if drop_remainder else 0)
        for start in range(0, stop, batch_size):
            idx = idx_all[start : start + batch_size]
            batch = {"x": self.x[idx], "y": self.y[idx]}
            if self.domain is not None:
                batch["domain"] = self.domain[idx]
            yield batch

    def arrays(self) -> dict[str, np.ndarray]:
        """All examples as one batch dict."""
        out = {"x": self.x, "y": self.y}
        if self.domain is not None:
            out["domain"] = self.domain
        return out


def _infer_kind(x: np.ndarray) -> str:
    # Only a fallback: the trainer passes its architecture's kind (see the module docstring).
    if (
        x.dtype.kind in "iu"
        and x.ndim == 2
        and x.dtype != np.uint8
        and (x.size == 0 or x.min() >= 0)
    ):
        return "tokens"
    if x.ndim == 2:
        return "features"
    if x.ndim == 3:
        return "sequence"
    return "image"


def concatenate(datasets: Sequence[ArrayDataset], name: str | None = None) -> ArrayDataset:
    """Concatenate datasets with the same example shape; domains are kept if all have them."""
    if not datasets:
        raise DataError("datasets: expected at least one dataset, got none")
    shapes = {d.example_shape for d in datasets}
    if len(shapes) != 1:
        raise DataError(f"datasets: expected one example shape, got {sorted(shapes)}")
    domains = [d.domain for d in datasets]
    return ArrayDataset(
        x=np.concatenate([d.x for d in datasets]),
        y=np.concatenate([d.y for d in datasets]),
        num_classes=max(d.num_classes for d in datasets),
        domain=None if any(d is None for d in domains) else np.concatenate(domains),
        input_kind=datasets[0].input_kind,
        name=name or "+".join(d.name for d in datasets),
        info=datasets[0].info,
    )
