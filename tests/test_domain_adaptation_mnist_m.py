"""MNIST-M by name (``ml_adv/data/mnist_m.py``): Ganin's |patch - digit| construction on tiny IDX
fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from ml_adv.data import download as D
from ml_adv.data.catalog import available_datasets, load_dataset
from ml_adv.data.idx import write_idx
from ml_adv.data.mnist import IDX_DATASETS
from ml_adv.data.mnist_m import blend_with_photos, load_mnist_m, sample_photos
from ml_adv.errors import ConfigError

N_TRAIN, N_TEST = 30, 12


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny MNIST in ML_ADV_DATA_DIR and the user cache inside tmp_path; returns the arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(N_TEST) % 10).astype(np.uint8),
    }
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for key, remote in IDX_DATASETS["mnist"].files.items():
        write_idx(folder / remote.filename, arrays[key])
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return arrays


def test_target_and_source_by_name(tiny):
    assert {"mnist_m", "mnist_m_source"} <= set(available_datasets())
    target = load_dataset("mnist_m", split="train")
    source = load_dataset("mnist_m_source", split="train")
    assert target.x.shape == source.x.shape == (N_TRAIN, 28, 28, 3)
    assert (
        target.x.dtype == source.x.dtype == np.uint8
    )  # uint8 on the host, as the other MNIST views
    assert np.array_equal(target.y, tiny["train_labels"]) and np.array_equal(source.y, target.y)
    assert (source.domain == 0).all() and (target.domain == 1).all()
    assert all(np.array_equal(source.x[..., c], tiny["train_images"]) for c in range(3))
    test = load_dataset("mnist_m", split="test")
    assert len(test) == N_TEST and np.array_equal(test.y, tiny["test_labels"])
    assert len(load_dataset("mnist_m", split="all")) == N_TRAIN + N_TEST
    assert len(load_dataset("mnist_m", split="train", max_examples=7)) == 7


def test_each_image_is_a_photo_crop_minus_the_digit(tiny):
    """Some 28x28 crop of one of the photos satisfies |crop - digit| == image, channel by
    channel."""
    target = load_dataset("mnist_m", split="test")
    photos = sample_photos()
    assert len(photos) == 6 and all(p.dtype == np.uint8 and p.shape[2] == 3 for p in photos)
    digit = tiny["test_images"][0].astype(np.int16)
    image = target.x[0].astype(np.int16)
    found = False
    for photo in photos:
        p = photo[..., 0].astype(np.int16)
        # Candidate corners from the top-left pixel, then the whole crop is compared.
        rows, cols = np.nonzero(
            np.abs(p[: p.shape[0] - 27, : p.shape[1] - 27] - digit[0, 0]) == image[0, 0, 0]
        )
        for r, c in zip(rows, cols):
            crop = photo[r : r + 28, c : c + 28].astype(np.int16)
            if (np.abs(crop - digit[..., None]) == image).all():
                found = True
                break
    assert found


def test_deterministic_per_seed_and_cached(tiny, tmp_path):
    a = load_mnist_m("train", seed=3)
    cached = list((tmp_path / "cache").rglob("mnist_m-train-seed3-*.npy"))
    assert len(cached) == 1
    for f in cached:
        f.unlink()  # rebuilt from scratch: the same bytes
    assert np.array_equal(load_mnist_m("train", seed=3).x, a.x)
    assert not np.array_equal(load_mnist_m("train", seed=4).x, a.x)
    assert np.array_equal(load_mnist_m("train", seed=3).x, a.x)  # from the cache


def test_blend_formula_on_flat_photos():
    digits = np.array([[[0, 100], [200, 255]]], np.uint8)
    photos = [np.full((5, 6, 3), (10, 150, 255), np.uint8)]
    out = blend_with_photos(digits, photos, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 3)
    want = np.abs(np.array([10, 150, 255])[None, None] - digits[0, ..., None].astype(int))
    assert np.array_equal(out[0], want)


def test_bad_arguments_fail_fast(tiny):
    with pytest.raises(ConfigError, match="split"):
        load_dataset("mnist_m", split="validation")
    with pytest.raises(ConfigError, match="seed"):
        load_mnist_m("train", seed=-1)
    with pytest.raises(ConfigError, match="domain"):
        load_mnist_m("train", domain="both")
    with pytest.raises(ConfigError, match="max_examples"):
        load_mnist_m("train", max_examples=0)
    with pytest.raises(ConfigError, match="kwargs"):
        load_dataset("mnist_m", view="flat")
