"""Shared test setup: strict numerics and small real data.

``jax_numpy_rank_promotion="raise"`` catches accidental broadcasting bugs in
library code (the Optax / Levanter convention).
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def digits_images():
    """(train, test) splits of the real digits images."""
    from ml_adv.data.catalog import load_dataset

    return load_dataset("digits", split="train"), load_dataset("digits", split="test")


@pytest.fixture(scope="session")
def small_digits(digits_images):
    """A 256-example slice of the digits images, for fast training tests."""
    train, _ = digits_images
    return train.subset(np.arange(256))
