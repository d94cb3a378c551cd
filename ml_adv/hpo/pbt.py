"""Population Based Training (Jaderberg et al. 2017) as one stacked, compiled program.

``P = max_trials`` members of one spec train as the members of one stacked ``TrainState``
(``init_run(members=P)``) through one scanned, vmapped epoch (``EpochRunner``): the
program ``fit_stacked`` runs. Every ``ready`` epochs the host scores each member on the
validation split and, between two calls of that same compiled epoch:

* **exploit** (truncation selection): every member of the bottom ``fraction`` (and any
  member whose loss turned non-finite: it was frozen, and is revived this way) copies the
  params, model state and optimizer state of a member drawn uniformly from the top
  ``fraction``; one jitted gather over the member axis (``exploit``). Each member keeps
  its own step and dropout key, so a copy and its source diverge from there on;
* **explore**: the copied hyper-parameters are perturbed: each is resampled from the
  declared space with probability ``resample_probability``, else a continuous one is
  multiplied by a factor drawn from ``perturb_factors`` (0.8 or 1.2) and clipped to the
  space; a choice is only resampled.

The new values are arrays written into the optimizer state (``optax.inject_hyperparams``)
and ``TrainState.hparams``, so every interval runs the program compiled for the first
(tested by counting backend compilations). Hence the space may hold only traced
hyper-parameters (learning rate, weight decay, label smoothing): anything structural
(batch size, widths, dropout, architecture) would need another program, and is rejected
before anything compiles, as are ``ready < 1``, ``ready >= epochs`` (no exploit would
happen), ``fraction`` outside (0, 0.5] and a space with nothing continuous to perturb.

Records: after each interval an ``interval`` record (scores, the members' values during
the interval, who copied whom, the values for the next one) is appended durably to
``trials.jsonl``, after the state it leads to has been checkpointed (orbax,
``checkpoints/latest/<epoch>``). A killed study started again restores the state of the
last journaled interval and goes on. Interval k's host randomness is
``np.random.default_rng([seed, k])`` and data orders depend on the epoch only, so a
resumed study ends with exactly the uninterrupted one's result (tested). At the end each
member is journaled as a trial: its final values (``config``), its score, its per-interval
scores, its ``lineage`` (copies it received) and its ``schedule``: the hyper-parameter
segments that trained the weights it ends with, followed through the members it copied.
The schedule, not the final ``config`` alone, is what PBT found.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.errors import ConfigError, describe
from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace

RECORD = "interval"


@dataclasses.dataclass(frozen=True)
class PBTOptions:
    """PBT's knobs (``method_options`` of the ``pbt`` method).

    Attributes:
        ready: epochs between two exploit/explore steps.
        fraction: the bottom ``fraction`` copies members of the top ``fraction`` (0 < f <= 0.5).
        resample_probability: chance that explore resamples a value from the space.
        perturb_factors: multipliers explore draws from for continuous values.
    """

    ready: int = 2
    fraction: float = 0.25
    resample_probability: float = 0.25
    perturb_factors: tuple[float, ...] = (0.8, 1.2)

    def __post_init__(self):
        if (
            isinstance(self.ready, bool)
            or not isinstance(self.ready, (int, np.integer))
            or self.ready < 1
        ):
            raise ConfigError(
                "ready: expected an integer >= 1 (epochs between exploit steps), got "
                f"{describe(self.ready)}"
            )
        if not _number(self.fraction) or not 0 < self.fraction <= 0.5:
            raise ConfigError(
                f"fraction: expected a number in (0, 0.5], got {describe(self.fraction)}"
            )
        if not _number(self.resample_probability) or not 0 <= self.resample_probability <= 1:
            raise ConfigError(
                "resample_probability: expected a number in [0, 1], got "
                f"{describe(self.resample_probability)}"
            )
        factors = self.perturb_factors
        if (
            isinstance(factors, (str, bytes))
            or not isinstance(factors, (list, tuple))
            or not factors
            or not all(_number(f) and f > 0 for f in factors)
        ):
            raise ConfigError(
                f"perturb_factors: expected a list of positive numbers, got {describe(factors)}"
            )
        object.__setattr__(self, "perturb_factors", tuple(float(f) for f in factors))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PBTOptions:
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(
                f"method options: unknown option(s) {unknown} for 'pbt'; expected some of "
                f"{[f.name for f in dataclasses.fields(cls)]}"
            )
        return cls(**options)


def _number(v: Any) -> bool:
    return (
        not isinstance(v, bool)
        and isinstance(v, (int, float, np.integer, np.floating))
        and math.isfinite(v)
    )


def check_study(study) -> PBTOptions:
    """Everything PBT needs, checked before anything compiles; returns the options."""
    from ml_adv.hpo.population import check_stackable, member_fields

    options = PBTOptions.from_options(study.method_options)
    check_stackable(study.objective)
    if study.max_trials < 2:
        raise ConfigError(
            f"max_trials: PBT's population size, expected at least 2, got {study.max_trials}"
        )
    traced = member_fields(study.objective)
    structural = [n for n in study.space.names if n not in traced]
    if structural:
        raise ConfigError(
            f"space: PBT members share one compiled program, so only traced hyper-parameters "
            f"{sorted(traced)} may vary; got structural parameter(s) {structural}"
        )
    if not any(isinstance(p, (Float, Int)) for p in study.space.params):
        raise ConfigError(
            f"space: PBT needs at least one continuous hyper-parameter to perturb, got only "
            f"choices {study.space.names}"
        )
    base = study.objective.base_config
    if options.ready >= base.epochs:
        raise ConfigError(
            f"ready: expected fewer than the {base.epochs} training epochs (else no member is ever "
            f"exploited), got {options.ready}"
        )
    if study.objective.metric != "val_accuracy":
        raise ConfigError(
            f"metric: PBT ranks members by 'val_accuracy', got {study.objective.metric!r}"
        )
    if base.data_parallel is True or not base.scan_epochs:
        raise ConfigError(
            "base_config: PBT runs one scanned stacked program on one device; expected "
            f"data_parallel False or 'auto' and scan_epochs=True, got {base.data_parallel}, "
            f"{base.scan_epochs}"
        )
    return options


# ------------------------------------------------------------------ the device side
@jax.jit
def _take(tree, sources):
    return jax.tree.map(lambda a: jnp.take(a, sources, axis=0), tree)


def exploit(state, sources) -> Any:
    """Member i takes the params, model state, optimizer state (its hyper-parameters included)
    and frozen flag of member ``sources[i]``; it keeps its own step and dropout key."""
    moved = _take(
        {
            "params": state.params,
            "opt_state": state.opt_state,
            "model_state": state.model_state,
            "hparams": state.hparams,
            "frozen": state.frozen,
        },
        jnp.asarray(sources, jnp.int32),
    )
    return state.replace(**moved)


def set_member_values(state, configs: list[dict[str, Any]]) -> Any:
    """Write each member's hyper-parameters (``configs[i]``) into the stacked state; no
    recompile.
    """
    from ml_adv.training.setup import apply_member_hparams

    names = list(configs[0])
    return apply_member_hparams(
        state, {n: np.asarray([float(c[n]) for c in configs], np.float32) for n in names}
    )


# ------------------------------------------------------------------ the host side
def rank(scores, tiebreak) -> np.ndarray:
    """Member indices best first: higher score, then lower ``tiebreak`` (validation loss),
    then index.
    """
    scores = np.asarray(scores, float)
    key = np.where(np.isfinite(scores), scores, -np.inf)
    tie = np.where(np.isfinite(np.asarray(tiebreak, float)), tiebreak, np.inf)
    return np.lexsort((np.arange(len(scores)), tie, -key))


def select(scores, tiebreak, fraction: float, rng: np.random.Generator) -> np.ndarray | None:
    """Truncation selection: ``sources[i]`` is the member i copies (itself when it is kept).

    The bottom ``floor(P * fraction)`` (at least one) and every non-finite member copy a
    member drawn uniformly from the top as many. None when no member has a finite score.
    """
    scores = np.asarray(scores, float)
    p, finite = len(scores), np.isfinite(np.asarray(scores, float))
    n = max(1, int(math.floor(p * fraction + 1e-9)))
    order = rank(scores, tiebreak)
    top = [int(i) for i in order[:n] if finite[i]]
    if not top:
        return None
    recipients = sorted(
        (set(order[p - n :].tolist()) | set(np.flatnonzero(~finite).tolist())) - set(top)
    )
    sources = np.arange(p)
    for i in recipients:
        sources[i] = top[int(rng.integers(len(top)))]
    return sources


def sample(param, rng: np.random.Generator):
    """One value of ``param`` drawn uniformly (log-uniformly on a log scale)."""
    if isinstance(param, Categorical):
        return param.choices[int(rng.integers(len(param.choices)))]
    low, high = float(param.low), float(param.high)
    value = (
        math.exp(rng.uniform(math.log(low), math.log(high)))
        if param.log
        else rng.uniform(low, high)
    )
    return param.cast(value)


def explore(
    config: dict[str, Any], space: SearchSpace, options: PBTOptions, rng: np.random.Generator
) -> dict[str, Any]:
    """A perturbed copy of ``config``: resample with ``resample_probability``, else multiply a
    continuous value by one of ``perturb_factors`` (clipped to the space); choices stay."""
    out = {}
    for p in space.params:
        if rng.random() < options.resample_probability:
            out[p.name] = sample(p, rng)
        elif isinstance(p, Categorical):
            out[p.name] = config[p.name]
        else:
            factor = options.perturb_factors[int(rng.integers(len(options.perturb_factors)))]
            out[p.name] = p.cast(config[p.name] * factor)
    return out


def next_generation(
    scores,
    tiebreak,
    configs: list[dict[str, Any]],
    space: SearchSpace,
    options: PBTOptions,
    seed: int,
    interval: int,
) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """``(sources, next configs)`` after ``interval``: exploit then explore, seeded by
    ``(seed, interval)``.
    """
    rng = np.random.default_rng([int(seed), int(interval)])
    sources = select(scores, tiebreak, options.fraction, rng)
    if sources is None:
        return None, [dict(c) for c in configs]
    return sources, [
        explore(configs[j], space, options, rng) if j != i else dict(configs[i])
        for i, j in enumerate(sources.tolist())
    ]


def interval_bounds(epochs: int, ready: int) -> list[tuple[int, int]]:
    """``[(start, end))`` epochs of each interval; the last one may be shorter."""
    return [(s, min(s + ready, epochs)) for s in range(0, epochs, ready)]
