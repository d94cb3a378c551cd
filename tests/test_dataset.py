"""Tests for ml_adv.data.dataset: validation on entry, deterministic splits, batching in a given
order."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ml_adv.data import ArrayDataset, concatenate
from ml_adv.errors import ConfigError, DataError


def _indexed(n: int = 60, num_classes: int = 3) -> ArrayDataset:
    """Dataset whose feature 0 is the example's index, so parts can be traced back."""
    x = np.stack([np.arange(n), np.ones(n)], axis=1).astype(np.float32)
    return ArrayDataset(x, np.arange(n) % num_classes, domain=np.arange(n) % 2, name="indexed")


def _ids(ds: ArrayDataset) -> np.ndarray:
    return ds.x[:, 0].astype(np.int64)


X3 = np.zeros((3, 2), np.float32)
Y3 = np.array([0, 1, 2])

BAD_INPUTS = {
    "nan features": (dict(x=np.array([[0.0, np.nan], [1.0, 2.0]]), y=[0, 1]), DataError, "x"),
    "inf features": (dict(x=np.array([[0.0, np.inf], [1.0, 2.0]]), y=[0, 1]), DataError, "x"),
    "label above num_classes": (dict(x=X3, y=[0, 1, 3], num_classes=3), DataError, "y"),
    "negative label": (dict(x=X3, y=[0, -1, 2]), DataError, "y"),
    "non-integer float labels": (dict(x=X3, y=np.array([0.0, 1.5, 2.0])), DataError, "y"),
    "nan labels": (dict(x=X3, y=np.array([0.0, np.nan, 2.0])), DataError, "y"),
    "string labels": (dict(x=X3, y=np.array(["a", "b", "c"])), DataError, "y"),
    "2-d labels": (dict(x=X3, y=np.zeros((3, 1), np.int32)), DataError, "y"),
    "mismatched lengths": (dict(x=X3, y=[0, 1]), DataError, "y"),
    "mismatched domain": (dict(x=X3, y=Y3, domain=[0, 1]), DataError, "domain"),
    "empty dataset": (
        dict(x=np.zeros((0, 2), np.float32), y=np.zeros(0, np.int32)),
        DataError,
        "x",
    ),
    "1-d features": (dict(x=np.zeros(3, np.float32), y=Y3), DataError, "x"),
    "ragged features": (dict(x=[[1.0, 2.0], [3.0]], y=[0, 1]), DataError, "x"),
    "string features": (dict(x=np.array([["a", "b"], ["c", "d"]]), y=[0, 1]), DataError, "x"),
    "zero num_classes": (dict(x=X3, y=Y3, num_classes=0), ConfigError, "num_classes"),
    "unknown input_kind": (dict(x=X3, y=Y3, input_kind="audio"), DataError, "input_kind"),
    "float tokens": (dict(x=X3, y=Y3, input_kind="tokens"), DataError, "x"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_named_error(case):
    kwargs, error, argument = BAD_INPUTS[case]
    with pytest.raises(error) as info:
        ArrayDataset(**kwargs)
    assert str(info.value).startswith(f"{argument}:"), str(info.value)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        ArrayDataset(X3, [0, 1])


def test_valid_input_is_normalised():
    ds = ArrayDataset(np.arange(6, dtype=np.float64).reshape(3, 2), np.array([0.0, 2.0, 1.0]))
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    assert ds.num_classes == 3 and ds.input_kind == "features" and len(ds) == 3
    tokens = ArrayDataset(np.ones((2, 5), np.int64), [0, 1])
    assert tokens.input_kind == "tokens" and tokens.x.dtype == np.int32


@pytest.mark.parametrize("batch_size", [0, -1, 61, 2.0, True, "8"])
def test_bad_batch_size(batch_size):
    ds = _indexed()
    with pytest.raises(ConfigError) as info:
        ds.check_batch_size(batch_size)
    assert str(info.value).startswith("batch_size:")
    with pytest.raises(ConfigError):
        next(ds.iter_batches(batch_size))


def test_batch_size_equal_to_dataset_is_allowed():
    ds = _indexed()
    ds.check_batch_size(len(ds))
    assert len(list(ds.iter_batches(len(ds)))) == 1


@pytest.mark.parametrize("fractions", [(1.0,), (0.5, 0.6), (0.0, 1.0), (-0.2, 1.2), (0.999, 0.001)])
def test_bad_fractions(fractions):
    with pytest.raises(DataError) as info:
        _indexed().split(fractions)
    assert str(info.value).startswith("fractions:")


def test_subset_rejects_bad_indices():
    ds = _indexed()
    for bad in ([], [0, 60], np.zeros((2, 2), np.int64)):
        with pytest.raises(DataError, match="^indices:"):
            ds.subset(bad)


# ------------------------------------------------------------------ splits
@pytest.mark.parametrize("stratify", [True, False])
def test_split_is_deterministic_disjoint_and_covering(stratify):
    ds = _indexed()
    parts = ds.split((0.5, 0.3, 0.2), seed=7, stratify=stratify)
    again = ds.split((0.5, 0.3, 0.2), seed=7, stratify=stratify)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.domain, b.domain)
    ids = [_ids(p) for p in parts]
    assert [len(i) for i in ids] == [30, 18, 12]
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(len(ds)))
    for part, i in zip(parts, ids, strict=True):  # rows stay aligned with their labels/domains
        np.testing.assert_array_equal(part.y, i % 3)
        np.testing.assert_array_equal(part.domain, i % 2)
    other = ds.split((0.5, 0.3, 0.2), seed=8, stratify=stratify)
    assert not np.array_equal(_ids(other[0]), ids[0])


def test_stratified_split_keeps_class_balance():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    ds = ArrayDataset(np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32), y)
    train, test = ds.train_test_split(0.2, seed=0)
    np.testing.assert_array_equal(train.class_counts(), [40, 24, 16])
    np.testing.assert_array_equal(test.class_counts(), [10, 6, 4])
    assert train.num_classes == test.num_classes == 3


# ---------------------------------------------------------------- batching
def _order(key: int, n: int) -> np.ndarray:
    from ml_adv.training.steps import epoch_order

    return np.asarray(epoch_order(jax.random.key(key), n, 1)).reshape(-1)


def test_iter_batches_follows_the_training_order():
    ds = _indexed()
    order = _order(1, len(ds))
    ids = np.concatenate([b["x"][:, 0] for b in ds.iter_batches(16, order=order)]).astype(np.int64)
    np.testing.assert_array_equal(ids, order)
    assert not np.array_equal(ids, np.arange(len(ds)))
    with pytest.raises(DataError, match="^order:"):
        next(ds.iter_batches(16, order=[0, 60]))


@pytest.mark.parametrize("key", [None, 3])
def test_iter_batches_visits_every_example_once(key):
    ds = _indexed()
    batches = list(ds.iter_batches(16, order=None if key is None else _order(key, len(ds))))
    assert [len(b["y"]) for b in batches] == [16, 16, 16, 12]
    ids = np.concatenate([b["x"][:, 0] for b in batches]).astype(np.int64)
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(ds)))
    if key is None:
        np.testing.assert_array_equal(ids, np.arange(len(ds)))
    for b in batches:  # labels and domains travel with their examples
        i = b["x"][:, 0].astype(np.int64)
        np.testing.assert_array_equal(b["y"], i % 3)
        np.testing.assert_array_equal(b["domain"], i % 2)


def test_iter_batches_drop_remainder():
    batches = list(_indexed().iter_batches(16, drop_remainder=True))
    assert [len(b["y"]) for b in batches] == [16, 16, 16]


def test_concatenate_keeps_domains_and_checks_shapes():
    a = _indexed(6).with_domain(0)
    b = _indexed(4).with_domain(1)
    both = concatenate([a, b])
    assert len(both) == 10
    np.testing.assert_array_equal(both.domain, [0] * 6 + [1] * 4)
    with pytest.raises(DataError, match="^datasets:"):
        concatenate([a, ArrayDataset(np.zeros((2, 3), np.float32), [0, 1])])
    with pytest.raises(DataError, match="^datasets:"):
        concatenate([])


def test_subset_takes_masks_and_refuses_float_indices():
    ds = _indexed(6)
    mask = np.array([True, False, True, False, False, True])
    np.testing.assert_array_equal(_ids(ds.subset(mask)), [0, 2, 5])
    with pytest.raises(DataError, match="^indices: a boolean mask"):
        ds.subset(mask[:3])
    with pytest.raises(DataError, match="^indices: expected integer indices"):
        ds.subset([0.5, 1.7])
    np.testing.assert_array_equal(_ids(ds.subset(np.array([5, 0], np.uint8))), [5, 0])


def test_metadata_types_are_checked():
    with pytest.raises(DataError, match="^info:"):
        ArrayDataset(X3, Y3, info=3)
    with pytest.raises(DataError, match="^name:"):
        ArrayDataset(X3, Y3, name=None)
    assert ArrayDataset(X3, Y3, num_classes=np.int64(4)).num_classes == 4
    with pytest.raises(ConfigError, match="^num_classes:"):
        ArrayDataset(X3, Y3, num_classes=True)
