"""Ensemble inference: members that share a spec run as ONE compiled forward program.

Members are grouped by ``(spec, mixed_precision)``. A group's variables are stacked
along a new leading axis (``jax.tree.map(np.stack)``), and ``stacked_logits`` maps the
forward pass over that axis (``lax.map`` with ``batch_size=member_batch``: that many
members ``vmap``-ped together), each member over fixed-size input chunks: K
same-architecture members cost one dispatch and one compiled program, not K. Groups
with different architectures (a CNN, an LSTM, ...) run one after another, each on its
own input view, and the results are scattered back into member order.

Why the member batch depends on the backend: on accelerators all K members are vmapped
(one wide kernel per layer). On XLA:CPU, vmapping members turns a conv into a grouped
conv and a dense layer into a batched matmul, both slower than K plain ones: K=8 members,
2 CPU cores, 2,048-4,096 rows, medians: digits CNN 918 ms vmapped vs 169 ms one member
after another (K separate calls: 195 ms); MLP 784-512-256-10 785 vs 368 ms (separate:
369 ms). So on CPU the default runs members one after another inside the one program
(``member_batch=1``); ``benchmarks/ensemble_inference.py`` measures both.

The module itself is the static argument of the jitted function (Linen modules
compare and hash by their configuration), so every call with the same spec and input
shape reuses one compiled program.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.training.steps import cast_floats, probabilities

DEFAULT_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class MemberGroup:
    """Members with one spec: their positions in the ensemble and their stacked variables."""

    spec: Any
    mixed_precision: bool
    indices: tuple[int, ...]
    variables: Any  # every leaf has a leading member axis of len(indices)

    @property
    def module(self):
        return self.spec.build()


def group_members(members) -> list[MemberGroup]:
    """Group ``TrainedModel`` s by ``(spec, mixed_precision)``, keeping first-seen order."""
    order: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        order.setdefault((m.spec, bool(m.mixed_precision)), []).append(i)
    groups = []
    for (spec, mp), idx in order.items():
        stacked = jax.tree.map(
            lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]),
            *[members[i].variables for i in idx],
        )
        groups.append(MemberGroup(spec, mp, tuple(idx), stacked))
    return groups


def default_member_batch(members: int) -> int:
    """Members vmapped together by default: all of them on accelerators, one at a time on CPU."""
    return 1 if jax.default_backend() == "cpu" else members


@partial(jax.jit, static_argnames=("module", "chunk", "mixed_precision", "member_batch"))
def stacked_logits(
    module,
    variables,
    x: jax.Array,
    *,
    chunk: int,
    mixed_precision: bool = False,
    member_batch: int | None = None,
) -> jax.Array:
    """Float32 logits ``[K, N, C]`` of K stacked members on the same inputs ``x`` ``[N, ...]``.

    ``member_batch`` members are vmapped together (``None``: all K); the groups of members
    run one after another inside the same program.
    """
    n = x.shape[0]
    k = jax.tree.leaves(variables)[0].shape[0]
    pad = (-n) % chunk
    x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    if mixed_precision:
        variables, x = cast_floats(variables, jnp.bfloat16), cast_floats(x, jnp.bfloat16)
    chunks = x.reshape(-1, chunk, *x.shape[1:])

    def one_member(v):
        out = jax.lax.map(lambda xc: module.apply(v, xc, train=False).astype(jnp.float32), chunks)
        return out.reshape(-1, out.shape[-1])[:n]

    return jax.lax.map(one_member, variables, batch_size=min(member_batch or k, k))


def group_probs(
    group: MemberGroup,
    x: np.ndarray,
    *,
    chunk: int = DEFAULT_CHUNK,
    member_batch: int | None = None,
) -> jax.Array:
    """Softmax probabilities ``[len(group.indices), N, C]`` of one group."""
    k = len(group.indices)
    logits = stacked_logits(
        group.module,
        group.variables,
        jnp.asarray(x),
        chunk=min(chunk, int(x.shape[0])),
        mixed_precision=group.mixed_precision,
        member_batch=default_member_batch(k) if member_batch is None else member_batch,
    )
    return probabilities(logits)


def ensemble_probs(
    groups: list[MemberGroup],
    member_views: list[str],
    views: dict[str, np.ndarray],
    *,
    chunk: int = DEFAULT_CHUNK,
) -> jax.Array:
    """``[K, N, C]`` member probabilities in member order.

    ``member_views[i]`` names member i's input in ``views``. Each group runs as one stacked
    pass per distinct view (normally exactly one: members sharing a spec share a view).
    """
    parts, positions = [], []
    for group in groups:
        by_view: dict[str, list[int]] = {}
        for row, i in enumerate(group.indices):
            by_view.setdefault(member_views[i], []).append(row)
        for view, rows in by_view.items():
            take = np.asarray(rows)
            sub = (
                group
                if len(rows) == len(group.indices)
                else dataclasses.replace(
                    group,
                    indices=tuple(group.indices[r] for r in rows),
                    variables=jax.tree.map(lambda a, take=take: a[take], group.variables),
                )
            )
            parts.append(group_probs(sub, views[view], chunk=chunk))
            positions.extend(sub.indices)
    stacked = jnp.concatenate(parts, axis=0)
    inverse = np.argsort(np.asarray(positions))  # stacked row of member i
    return stacked[inverse]


@partial(jax.jit, static_argnums=0)
def combined_output(
    rule, probs: jax.Array, weights: jax.Array, meta: Any | None, temperature: jax.Array | None
):
    """Ensemble ``(probabilities [N, C], class ids [N])`` from member probabilities ``[K, N, C]``.

    The rule combines (stacking: the meta-learner); a fitted temperature then rescales
    the combined log-probabilities; ``rule.predict`` (voting's tie rule) decides the class
    when the rule has one, else the argmax. ``rule`` (a frozen ``CombinationRule``) is static.
    ``temperature``: None or a scalar; a scalar <= 0 also means "not calibrated", so the
    facade compiles one program for before and after calibration, not two.
    """
    from ml_adv.ensembles.calibration import apply_temperature
    from ml_adv.ensembles.stacking import meta_proba_jit

    combined = (
        meta_proba_jit(meta, probs) if rule.needs_meta_learner else rule.proba(probs, weights)
    )
    if temperature is not None:
        t = jnp.asarray(temperature, jnp.float32)
        combined = jax.lax.cond(
            t > 0, lambda c: apply_temperature(c, jnp.maximum(t, 1e-6)), lambda c: c, combined
        )
    classes = (
        rule.predict(probs, weights) if rule.predict is not None else jnp.argmax(combined, axis=-1)
    )
    return combined, classes.astype(jnp.int32)


def evaluate_ensemble(rule, probs, weights, labels, meta, temperature) -> dict[str, Any]:
    """Ensemble and per-member metrics plus diversity.

    Two compiled programs: the rule's combination (one per rule), then the scores, which
    do not depend on the rule and so compile once for every rule.
    """
    combined, classes = combined_output(rule, probs, weights, meta, temperature)
    return _scores(combined, classes, probs, weights, labels)


@jax.jit
def _scores(combined, classes, probs, weights, labels) -> dict[str, Any]:
    from ml_adv.ensembles.diversity import diversity_report
    from ml_adv.ensembles.metrics import member_metrics, probability_metrics

    return {
        "ensemble": probability_metrics(combined, labels, classes),
        "members": member_metrics(probs, labels),
        "diversity": diversity_report(probs, weights),
    }
