"""Acquisition scores: pure, jitted ``(outputs[, key]) -> scores`` functions.

Every score is "higher = more worth labelling", so one selection rule (top-k over the
available pool) serves them all. Inputs are logits, not probabilities: ``log_softmax``
gives exact log-probabilities, so entropies stay finite for confident predictions
where ``log(softmax(z))`` underflows to ``-inf``.

* ``entropy``          H[p] = -sum_c p_c log p_c                         (logits ``[N, C]``)
* ``margin``           -(p_(1) - p_(2)), top-two probability gap, negated (``[N, C]``)
* ``least_confidence`` 1 - max_c p_c                                     (``[N, C]``)
* ``bald``             I[y; w] = H[mean_s p_s] - mean_s H[p_s]           (samples ``[S, N, C]``)
* ``random_scores``    i.i.d. uniform scores from ``key``                (any ``[N, ...]``)

BALD's samples are MC-dropout forward passes (``mc_dropout_logits``: ``predict_logits``
with ``dropout_key``, vmapped over keys) or the members of a stacked ensemble
(``[K, N, C]`` from ``StackedModel.logits``); the formula is the same.

``score_pool`` scores a pool of any size in fixed-size host chunks, so device memory
holds one chunk of outputs at a time and one compiled program serves every chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ml_adv.errors import ConfigError, DataError, check_positive, describe
from ml_adv.registry import Registry


def _entropy_from_log_probs(log_p: jax.Array) -> jax.Array:
    # 0 * log 0 is 0: exp(log_p) is exactly 0 there, and log_p is finite (log_softmax).
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


@jax.jit
def entropy(logits: Float[Array, "N C"]) -> Float[Array, " N"]:
    """Predictive entropy (nats) of ``softmax(logits)``; maximal, log C, for a uniform
    prediction.
    """
    return _entropy_from_log_probs(jax.nn.log_softmax(logits, axis=-1))


@jax.jit
def margin(logits: Float[Array, "N C"]) -> Float[Array, " N"]:
    """Negated gap between the two most probable classes (0 is the most uncertain)."""
    top2 = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), 2)[0]
    return top2[:, 1] - top2[:, 0]


@jax.jit
def least_confidence(logits: Float[Array, "N C"]) -> Float[Array, " N"]:
    """One minus the top class probability."""
    return 1.0 - jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)


@jax.jit
def bald(sample_logits: Float[Array, "S N C"]) -> Float[Array, " N"]:
    """BALD mutual information H[mean_s p_s] - mean_s H[p_s] over S posterior samples.

    Zero when all samples agree; large when each sample is confident but they disagree.
    """
    log_p = jax.nn.log_softmax(sample_logits, axis=-1)
    num_samples = sample_logits.shape[0]
    # log of the mean probability, computed stably in log space.
    log_mean = jax.nn.logsumexp(log_p, axis=0) - jnp.log(num_samples)
    expected_entropy = jnp.mean(_entropy_from_log_probs(log_p), axis=0)
    # Clamp tiny negative round-off: mutual information is non-negative.
    return jnp.maximum(_entropy_from_log_probs(log_mean) - expected_entropy, 0.0)


@jax.jit
def random_scores(outputs: jax.Array, key: jax.Array) -> Float[Array, " N"]:
    """Uniform scores: top-k of them is a uniform random subset of the available pool."""
    return jax.random.uniform(key, (outputs.shape[0],))


SCORES: Registry[Callable] = Registry("score")
SCORES.register("entropy", entropy)
SCORES.register("margin", margin)
SCORES.register("least_confidence", least_confidence)
SCORES.register("bald", bald)


def mc_dropout_logits(
    apply_fn, variables, x, key: jax.Array, num_samples: int, *, chunk: int = 256
) -> jax.Array:
    """``[S, N, C]`` MC-dropout logits: ``num_samples`` training-mode passes, vmapped over keys.

    A model without dropout gives S identical samples, so BALD is 0 everywhere;
    the caller (``loop.pool_outputs``) warns about that case.
    """
    from ml_adv.training.steps import predict_logits

    check_positive("mc_samples", num_samples)
    keys = jax.random.split(key, num_samples)
    return jax.vmap(lambda k: predict_logits(apply_fn, variables, x, chunk=chunk, dropout_key=k))(
        keys
    )


def stream_map(
    fn: Callable[..., jax.Array], x: np.ndarray, *, chunk: int = 4096, indexed: bool = False
) -> np.ndarray:
    """``fn`` applied to ``x`` in ``chunk``-row pieces, results concatenated on the host.

    With ``indexed``, ``fn(piece, i)`` also gets the piece number (to fold into a key, so
    that pieces draw different dropout masks).

    The last piece is zero-padded to ``chunk`` rows so that every call has the same
    shape (one compilation per pool, whatever its size), and only one piece's outputs
    are on the device at a time.
    """
    check_positive("chunk", chunk)
    n = int(np.shape(x)[0])
    if n == 0:
        raise DataError(f"x: expected a non-empty array, got {describe(x)}")
    size = min(chunk, n)
    out = None
    for i, start in enumerate(range(0, n, size)):
        part = np.asarray(x[start : start + size])
        rows = part.shape[0]
        if rows < size:
            part = np.concatenate([part, np.zeros((size - rows, *part.shape[1:]), part.dtype)])
        result = np.asarray(fn(part, i) if indexed else fn(part))[:rows]
        if out is None:
            out = np.empty((n, *result.shape[1:]), result.dtype)
        out[start : start + rows] = result
    return out


def score_pool(
    outputs_fn: Callable[[np.ndarray], jax.Array],
    score_fn: Callable[[jax.Array], jax.Array],
    x: np.ndarray,
    *,
    chunk: int = 4096,
    indexed: bool = False,
) -> np.ndarray:
    """``[N]`` float32 scores for every row of ``x``, streamed ``chunk`` rows at a time.

    ``outputs_fn(x_chunk)`` (``outputs_fn(x_chunk, i)`` with ``indexed``) gives the model
    outputs of one chunk (``[n, C]`` logits, or ``[S, n, C]`` samples) and ``score_fn``
    maps them to ``[n]`` scores; only the scores of the whole pool are kept, so memory is
    bounded by one chunk of outputs.
    """

    def one(part, *i):
        return score_fn(outputs_fn(part, *i))

    return stream_map(one, x, chunk=chunk, indexed=indexed).astype(np.float32)


def check_logits(name: str, logits, *, samples: bool = False) -> None:
    """DataError unless ``logits`` is ``[N, C]`` (or ``[S, N, C]`` when ``samples``) with C >= 2."""
    rank = 3 if samples else 2
    shape = np.shape(logits)
    if len(shape) != rank or shape[-1] < 2:
        expected = "[S, N, C]" if samples else "[N, C]"
        raise DataError(
            f"{name}: expected logits of shape {expected} with C >= 2, got {describe(logits)}"
        )


def resolve_score(name_or_fn) -> Callable:
    """A registered score by name, or a user callable ``outputs -> scores``."""
    if not isinstance(name_or_fn, str) and not callable(name_or_fn):
        raise ConfigError(
            f"score: expected one of {SCORES.names()} or a callable, got {describe(name_or_fn)}"
        )
    return SCORES.resolve(name_or_fn, argument="score")
