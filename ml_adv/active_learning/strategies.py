"""Sampling strategies: which model outputs a strategy needs and how it turns them into picks.

A ``Strategy`` is data, not code paths: an optional acquisition score (a name in
``scores.SCORES``, computed on logits ``[N, C]`` or on posterior samples ``[S, N, C]``)
and whether picks are spread out by k-center greedy on the model's embeddings. The loop
computes exactly the outputs a strategy asks for, so "random" never runs the model and
"entropy" never computes embeddings.

==================  =========================  ===========================================
name                score                      rule
==================  =========================  ===========================================
random              uniform from the round key top-k
uncertainty         entropy                    top-k (SEED.md's "uncertainty")
entropy             entropy                    top-k
margin              margin                     top-k
least_confidence    least_confidence           top-k
bald                bald on posterior samples  top-k (Gal et al. 2017): MC dropout, or the
                                               members of a committee
diversity, coreset  none                       k-center greedy on embeddings (Sener & Savarese 2018)
hybrid              entropy                    uncertainty-weighted k-center (selection.py says why)
==================  =========================  ===========================================

Register your own with ``STRATEGIES.register(name, Strategy(...))``.
"""

from __future__ import annotations

import dataclasses

from ml_adv.errors import ConfigError
from ml_adv.registry import Registry


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How a round picks samples.

    Attributes:
        name: the registry name (reported in statistics and the learning curve).
        score: a name in ``scores.SCORES`` (or None: random scores, or pure diversity).
        samples: compute ``score`` on ``[S, N, C]`` posterior samples (BALD) instead of logits.
        diversity: pick by k-center greedy on embeddings; with ``score`` the score weights it.
    """

    name: str
    score: str | None = None
    samples: bool = False
    diversity: bool = False

    def __post_init__(self):
        from ml_adv.active_learning.scores import SCORES

        if self.score is not None:
            SCORES.get(self.score, argument=f"Strategy({self.name!r}).score")
        if self.samples and self.score is None:
            raise ConfigError(
                f"Strategy({self.name!r}).samples: needs a score to compute on samples, got "
                "score=None"
            )

    @property
    def uses_model(self) -> bool:
        return self.score is not None or self.diversity


STRATEGIES: Registry[Strategy] = Registry("sampling_strategy")
for _strategy in (
    Strategy("random"),
    Strategy("uncertainty", score="entropy"),
    Strategy("entropy", score="entropy"),
    Strategy("margin", score="margin"),
    Strategy("least_confidence", score="least_confidence"),
    Strategy("bald", score="bald", samples=True),
    Strategy("diversity", diversity=True),
    Strategy("coreset", diversity=True),
    Strategy("hybrid", score="entropy", diversity=True),
):
    STRATEGIES.register(_strategy.name, _strategy)


def resolve_strategy(name_or_strategy) -> Strategy:
    """A registered strategy by name, or a user ``Strategy``."""
    return STRATEGIES.resolve(
        name_or_strategy, argument="sampling_strategy", accept=lambda s: isinstance(s, Strategy)
    )
