"""The active-learning round as named host steps: train, compute outputs, choose, adapt.

* ``train_round``: the one function that trains. It warm-starts ``ml_adv.fit`` from the
  current parameters (fresh initialisation on the first round or when a retrain is
  asked) and runs a few epochs on the grown labelled set, given as a per-example mask
  over a fixed-capacity pool: shapes never change, so rounds do not recompile.
* ``choose``: the pool keeps its full shape with an ``available`` mask, and model
  outputs are computed in fixed-size host chunks (``scores.stream_map``), so scoring and
  selection compile once per pool, not once per round.
* ``adaptive_choice``: the stated switching rule (below), a pure function of the
  learning curve, so a restarted loop takes the same decisions.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import jax
import numpy as np

from ml_adv.active_learning import scores as S
from ml_adv.active_learning.selection import check_request, k_center_greedy, top_k
from ml_adv.active_learning.strategies import Strategy
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, check_positive, describe
from ml_adv.training.config import TrainConfig
from ml_adv.training.steps import classification_metrics, predict_logits
from ml_adv.training.trained_model import TrainedModel


@dataclasses.dataclass(frozen=True)
class ActiveLearningConfig:
    """How each round trains and scores.

    Attributes:
        train: the ``TrainConfig`` of the first (from-scratch) training; its ``epochs`` are
            also used by a requested full retrain.
        update_epochs: epochs of a warm-started incremental update.
        min_steps: at least this many optimizer steps per round (small labelled sets
            have few steps per epoch; epochs are raised to reach it).
        retrain_every_round: retrain from scratch each round instead of warm-starting.
        mc_samples: MC-dropout samples for BALD.
        chunk: pool rows per scoring / embedding call (bounds memory).
    """

    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=30, batch_size=32))
    update_epochs: int = 5
    min_steps: int = 100
    retrain_every_round: bool = False
    mc_samples: int = 10
    chunk: int = 4096

    def __post_init__(self):
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train: expected a TrainConfig, got {describe(self.train)}")
        for name in ("update_epochs", "min_steps", "mc_samples", "chunk"):
            check_positive(name, getattr(self, name))


def round_config(config: ActiveLearningConfig, n_labelled: int, round_index: int, *, warm: bool,
                 batch_size: int | None = None) -> TrainConfig:
    """The TrainConfig of one round: epochs reach ``min_steps`` live steps, seed per round.

    ``batch_size`` (default: the config's, capped by ``n_labelled``) must stay the same
    from round to round: it is part of the compiled program's shapes.
    """
    batch = batch_size if batch_size is not None else min(config.train.batch_size, n_labelled)
    epochs = config.update_epochs if warm else config.train.epochs
    epochs = max(epochs, math.ceil(config.min_steps / max(1, n_labelled // batch)))
    return config.train.replace(batch_size=batch, epochs=epochs, seed=config.train.seed + round_index)


def evaluate(apply_fn, variables, data: ArrayDataset, chunk: int = 256) -> float:
    """Accuracy of ``variables`` on ``data`` (same compiled prediction every round)."""
    return classification_metrics(predict_logits(apply_fn, variables, data.x, chunk=chunk), data.y)["accuracy"]


def train_round(spec, pool: ArrayDataset, mask: np.ndarray, config: ActiveLearningConfig, round_index: int, *,
                batch_size: int, init_variables: dict[str, Any] | None = None) -> tuple[TrainedModel, dict[str, Any]]:
    """Train one round on the labelled rows (``mask``) of the fixed-capacity ``pool``.

    ``pool`` holds every example the loop will ever train on (the initial labelled data,
    then the whole unlabelled pool with placeholder labels) and keeps its shape from round
    to round; only ``mask`` grows. With a fixed ``batch_size`` each round's epoch program
    has the same shapes, so ``fit``'s compiled-program cache serves every round after the
    first (and every loop of a simulation). Warm start: the parameters of
    ``init_variables`` with a fresh optimizer, so a loop restarted from its saved model
    trains exactly as the uninterrupted one.
    """
    from ml_adv.training.loop import fit

    warm = init_variables is not None
    cfg = round_config(config, int(mask.sum()), round_index, warm=warm, batch_size=batch_size)
    result = fit(spec, pool, cfg, progress=False, example_mask=mask,
                 init_params=init_variables["params"] if warm else None)
    model = TrainedModel(spec, result.state.variables(), mixed_precision=cfg.mixed_precision)
    facts = {"epochs": len(result.history), "warm_start": warm, "compile_seconds": round(result.compile_seconds, 3),
             "train_loss": result.history[-1]["train_loss"] if result.history else float("nan")}
    return model, facts


def choose(strategy: Strategy, apply_fn, variables, pool_x: np.ndarray, available: np.ndarray, n: int,
           key: jax.Array, *, labelled_x: np.ndarray | None, config: ActiveLearningConfig) -> np.ndarray:
    """Pool indices of ``n`` picks, best first, by ``strategy`` (host orchestration of jitted kernels).

    ``apply_fn`` should be the same object every round (one module's ``apply``): it is a
    static argument of the compiled prediction, so a new module would recompile it.
    """
    check_request(n, available)
    mask = jax.numpy.asarray(available)
    if not strategy.uses_model:
        return np.asarray(top_k(S.random_scores(mask, key), mask, n))
    scores = None
    if strategy.score is not None:
        score_fn = S.resolve_score(strategy.score)
        if strategy.samples:
            def outputs(part, i):
                return S.mc_dropout_logits(apply_fn, variables, part, jax.random.fold_in(key, i), config.mc_samples)
        else:
            def outputs(part, i):
                return predict_logits(apply_fn, variables, part)
        scores = S.score_pool(outputs, score_fn, pool_x, chunk=config.chunk, indexed=True)
        if strategy.samples and not np.any(scores[available] > 0):
            warnings.warn("bald: every score is 0; the model has no dropout, so MC samples agree", stacklevel=3)
    if not strategy.diversity:
        return np.asarray(top_k(jax.numpy.asarray(scores), mask, n))

    def embed(part):
        return predict_logits(apply_fn, variables, part, method="features")

    features = S.stream_map(embed, pool_x, chunk=config.chunk)
    centres = [features[~available]] if (~available).any() else []
    if labelled_x is not None:
        centres.append(S.stream_map(embed, labelled_x, chunk=config.chunk))
    centres = np.concatenate(centres) if centres else None
    return np.asarray(k_center_greedy(features, mask, n, centres=centres, weights=scores))


def adaptive_choice(curve: list[dict[str, Any]], primary: str, fallback: str, *, patience: int,
                    min_gain: float) -> tuple[str, str | None]:
    """The strategy for the next round, and why it changed (None when it did not).

    Rule: a strategy is kept while it pays. When the last ``patience`` models trained on
    labels it chose raised validation accuracy by less than ``min_gain`` in total, the
    loop switches to the other strategy (``primary`` <-> ``fallback``, e.g. from
    uncertainty to diversity when uncertainty stagnates), and the same rule then
    judges the fallback.
    """
    current = next((e["strategy"] for e in reversed(curve) if e.get("strategy")), primary)
    run = 0
    for entry in reversed(curve):
        if entry.get("strategy") != current:
            break
        run += 1
    if run < patience or len(curve) < patience + 1 or curve[-1].get("val_accuracy") is None:
        return current, None
    gain = curve[-1]["val_accuracy"] - curve[-1 - patience]["val_accuracy"]
    if gain >= min_gain:
        return current, None
    other = fallback if current == primary else primary
    return other, f"{current} gained {gain:+.4f} val accuracy over {patience} rounds (< {min_gain}); switched to {other}"
