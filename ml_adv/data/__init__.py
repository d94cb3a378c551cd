"""Data: ``ArrayDataset``, built-in real datasets and the TFDS loader.

Nothing here imports scikit-learn's data or ``tensorflow_datasets`` until a
loader is called, so importing ``ml_adv.data`` stays cheap.
"""

from ml_adv.data.builtin import (
    available_builtin_datasets,
    digits_tokens_to_pixels,
    load_digits,
    load_digits_m,
)
from ml_adv.data.catalog import load_dataset
from ml_adv.data.dataset import (
    INPUT_KINDS,
    ArrayDataset,
    concatenate,
    validate_features,
    validate_labels,
)
from ml_adv.data.tfds_loader import byte_detokenize, byte_tokenize, load_tfds

__all__ = [
    "INPUT_KINDS",
    "ArrayDataset",
    "available_builtin_datasets",
    "byte_detokenize",
    "byte_tokenize",
    "concatenate",
    "digits_tokens_to_pixels",
    "load_dataset",
    "load_digits",
    "load_digits_m",
    "load_tfds",
    "validate_features",
    "validate_labels",
]
