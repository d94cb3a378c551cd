"""Host-side epoch plans: which rows each step gathers, per stream and per member.

Orders are drawn on the host with NumPy (``steps.epoch_order``: XLA:CPU's sort-based
permutation was a fifth of a small epoch) from keys folded with the epoch number, so a
resumed run draws exactly what the uninterrupted run drew.

* One stream, one run: ``epoch_order(fold_in(shuffle_key, epoch), n, batch)``.
* Several named streams (``{"source": n_s, "target": n_t}``): the first stream sets the
  epoch's length; each other stream concatenates fresh permutations of its own until it
  covers as many steps (the shorter one cycles), so every stream is gathered on device.
* K members (``StackedPlan``): a shared order, or one per member (own order, a bootstrap
  sample drawn once per member, or a per-member example mask for folds and growing
  labelled pools). Members with fewer batches than the longest get padded steps marked
  inactive, which change nothing; shapes, and so the compiled program, stay put.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ml_adv.training.steps import epoch_order


def _cycled_order(key: jax.Array, n: int, batch_size: int, steps: int) -> np.ndarray:
    """``[steps, batch_size]`` rows from successive permutations of ``n`` examples."""
    rows, r = [], 0
    while sum(len(o) for o in rows) < steps:
        rows.append(epoch_order(jax.random.fold_in(key, r), n, batch_size))
        r += 1
    return np.concatenate(rows)[:steps]


@dataclasses.dataclass
class EpochPlan:
    """Orders for a single run over one or several named streams.

    Attributes:
        sizes: examples per stream, in order (the first stream defines the epoch).
        batch_size: rows per step in every stream.
        shuffle_key: the run's shuffle key.
        streams: stream names, or None for the plain one-stream ``{"x", "y"}`` batch.
    """

    sizes: tuple[int, ...]
    batch_size: int
    shuffle_key: jax.Array
    streams: tuple[str, ...] | None = None
    mask: np.ndarray | None = None  # [N] bool: train on these rows of a fixed-capacity pool

    @property
    def steps(self) -> int:
        """Steps per epoch: fixed by the pool's capacity when masked, so shapes never change."""
        return self.sizes[0] // self.batch_size

    @property
    def live_steps(self) -> int:
        return (int(self.mask.sum()) if self.mask is not None else self.sizes[0]) // self.batch_size

    def draw(self, epoch: int):
        key = jax.random.fold_in(self.shuffle_key, epoch)
        if self.mask is not None:
            pool = np.flatnonzero(self.mask)
            own = pool[epoch_order(key, len(pool), self.batch_size)]
            order = np.zeros((self.steps, self.batch_size), np.int32)
            active = np.zeros(self.steps, bool)
            order[: len(own)], active[: len(own)] = own, True
            return order, active
        first = epoch_order(key, self.sizes[0], self.batch_size)
        if self.streams is None:
            return first, None
        order = {self.streams[0]: first}
        for j, (name, n) in enumerate(zip(self.streams[1:], self.sizes[1:]), start=1):
            order[name] = _cycled_order(
                jax.random.fold_in(key, 1_000_003 * j), n, self.batch_size, self.steps
            )
        return order, None


@dataclasses.dataclass
class StackedPlan:
    """Orders for K stacked members over one stream of ``size`` examples.

    Attributes:
        member_keys: ``[K, 2]`` per-member shuffle keys (``setup.init_run``).
        shared_key: the key of the shared order (used when members share batches).
        member_orders: each member draws its own order (needed for bootstrap and masks).
        bootstrap: each member trains on a bootstrap sample (n draws with replacement,
            drawn once per member) reshuffled every epoch: bagging.
        masks: ``[K, N]`` bool, member i trains only on its True rows (folds, pools).
    """

    size: int
    batch_size: int
    member_keys: jax.Array
    shared_key: jax.Array
    member_orders: bool = False
    bootstrap: bool = False
    masks: np.ndarray | None = None

    def __post_init__(self):
        self.member_keys = np.asarray(self.member_keys)
        self.member_orders = self.member_orders or self.bootstrap or self.masks is not None
        k = len(self.member_keys)
        if self.masks is not None:
            self.pools = [np.flatnonzero(m) for m in self.masks]
        elif self.bootstrap:
            self.pools = [
                np.random.default_rng(
                    np.asarray(jax.random.fold_in(self.member_keys[i], 0x0B007)).tolist()
                ).integers(0, self.size, self.size)
                for i in range(k)
            ]
        else:
            self.pools = [np.arange(self.size)] * k

    @property
    def steps(self) -> int:
        return max(len(p) for p in self.pools) // self.batch_size

    @property
    def member_batches(self) -> bool:
        return self.member_orders

    def draw(self, epoch: int):
        """``(order, active)``: ``[steps, B]`` and None when shared, else ``[steps, K, B]`` and
        ``[steps, K]``."""
        if not self.member_orders:
            return epoch_order(
                jax.random.fold_in(self.shared_key, epoch), self.size, self.batch_size
            ), None
        steps = self.steps
        order = np.zeros((steps, len(self.pools), self.batch_size), np.int32)
        active = np.zeros((steps, len(self.pools)), bool)
        for i, pool in enumerate(self.pools):
            own = pool[
                epoch_order(
                    jax.random.fold_in(self.member_keys[i], epoch), len(pool), self.batch_size
                )
            ]
            order[: len(own), i] = own
            active[: len(own), i] = True
        return order, active
