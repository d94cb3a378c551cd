"""Build the patch codebooks of the ``*_tokens`` views: ``python -m ml_adv.data.codebooks``.

For each of MNIST and Fashion-MNIST: 300,000 4x4 patches drawn (seed 0) from the training
images, k-means with 256 centres (scikit-learn's ``KMeans``, k-means++ init, seed 0), saved
as ``<name>.npy`` (float32 ``[256, 16]``, pixel scale 0..255) beside this file. Prints the
share of patch variance the quantisation keeps on the test images. Needs the IDX files
(``ML_ADV_DATA_DIR`` or a download); the committed files are what it wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SAMPLE = 300_000


def build(name: str) -> tuple[np.ndarray, float]:
    from sklearn.cluster import KMeans

    from ml_adv.data.mnist import CODEBOOK_SIZE, load_mnist, to_patches

    train = load_mnist(name, split="train").x[..., 0]
    patches = to_patches(train).reshape(-1, 16).astype(np.float32)
    rng = np.random.default_rng(0)
    sample = patches[rng.choice(len(patches), SAMPLE, replace=False)]
    km = KMeans(CODEBOOK_SIZE, n_init=1, random_state=0, max_iter=100).fit(sample)
    centres = km.cluster_centers_.astype(np.float32)
    test = to_patches(load_mnist(name, split="test").x[..., 0]).reshape(-1, 16).astype(np.float32)
    nearest = np.argmin((centres**2).sum(1)[None] - 2 * test @ centres.T, axis=1)
    r2 = 1 - ((test - centres[nearest]) ** 2).sum() / ((test - test.mean(0)) ** 2).sum()
    return centres, float(r2)


def main() -> int:
    here = Path(__file__).parent
    for name in ("mnist", "fashion_mnist"):
        centres, r2 = build(name)
        np.save(here / f"{name}.npy", centres)
        print(f"{name}: {centres.shape} codebook, test patch variance kept {r2:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
