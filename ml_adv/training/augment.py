"""Data augmentation as pure functions of ``(batch, key) -> batch``.

They run inside the compiled train step, so augmentation costs no host work
and is reproducible from the step key. ``default_augmentation(input_kind)``
gives the trainer's choice for each kind of input.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ml_adv.errors import ConfigError

Batch = dict[str, jax.Array]


def random_shift(max_shift: int = 1) -> Callable[[Batch, jax.Array], Batch]:
    """Translate each image by up to ``max_shift`` pixels (zero fill), independently per example."""

    def augment(batch: Batch, key: jax.Array) -> Batch:
        x = batch["x"]
        n, h, w = x.shape[0], x.shape[1], x.shape[2]
        shifts = jax.random.randint(key, (n, 2), -max_shift, max_shift + 1)
        padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))

        def crop(img, s):
            return jax.lax.dynamic_slice(
                img, (max_shift + s[0], max_shift + s[1], 0), (h, w, img.shape[-1])
            )

        return {**batch, "x": jax.vmap(crop)(padded, shifts)}

    augment.__name__ = f"random_shift_{max_shift}"
    return augment


def gaussian_noise(stddev: float = 0.05) -> Callable[[Batch, jax.Array], Batch]:
    """Add N(0, stddev^2) noise to float inputs."""

    def augment(batch: Batch, key: jax.Array) -> Batch:
        x = batch["x"]
        return {**batch, "x": x + stddev * jax.random.normal(key, x.shape, x.dtype)}

    augment.__name__ = f"gaussian_noise_{stddev}"
    return augment


def token_dropout(rate: float = 0.1, replacement_id: int = 3, protect_first: bool = True):
    """Replace a random ``rate`` of tokens by ``replacement_id`` (the [MASK] id of the built-in
    vocabularies)."""

    def augment(batch: Batch, key: jax.Array) -> Batch:
        x = batch["x"]
        drop = jax.random.bernoulli(key, rate, x.shape) & (x != 0)
        if protect_first:
            drop = drop.at[:, 0].set(False)
        return {**batch, "x": jnp.where(drop, replacement_id, x)}

    augment.__name__ = f"token_dropout_{rate}"
    return augment


def default_augmentation(input_kind: str) -> Callable[[Batch, jax.Array], Batch]:
    """The augmentation the trainer uses when asked for one without a function."""
    if input_kind == "image":
        return random_shift(1)
    if input_kind in ("features", "sequence"):
        return gaussian_noise(0.05)
    if input_kind == "tokens":
        return token_dropout(0.1)
    raise ConfigError(f"input_kind: no default augmentation for {input_kind!r}")
