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
import jax.numpy as jnp
import numpy as np

from ml_adv.active_learning import scores as S
from ml_adv.active_learning.selection import check_request, k_center_greedy, top_k
from ml_adv.active_learning.strategies import Strategy
from ml_adv.checkpointing import load_meta, load_pytree, save_pytree
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, check_positive, describe
from ml_adv.rundir import Run
from ml_adv.training.config import TrainConfig
from ml_adv.training.stacked import StackedModel, stacked_logits, unstack_tree
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
        mc_samples: MC-dropout samples for BALD (and for ``mc_predictive``).
        mc_predictive: score-based strategies (entropy, margin, least confidence, the
            hybrid's weights) read the mean predictive distribution of ``mc_samples``
            MC-dropout passes (a committee's members) instead of one deterministic pass, as
            Gal et al. (2017) do for max entropy and variation ratios.
        members: K > 1 trains a committee of K members as one stacked program
            (``fit_stacked``); BALD then uses the members instead of MC dropout, the other
            scores the committee's mean prediction, diversity member 0's embeddings. A
            committee is retrained each round (``fit_stacked`` would start every member from
            the same warm-start parameters, collapsing the committee).
        chunk: pool rows per scoring / embedding call (bounds memory).
    """

    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(epochs=30, batch_size=32)
    )
    update_epochs: int = 5
    min_steps: int = 100
    retrain_every_round: bool = False
    mc_samples: int = 10
    members: int = 1
    chunk: int = 4096
    mc_predictive: bool = False

    def __post_init__(self):
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train: expected a TrainConfig, got {describe(self.train)}")
        if not isinstance(self.mc_predictive, bool):
            raise ConfigError(
                f"mc_predictive: expected True or False, got {describe(self.mc_predictive)}"
            )
        for name in ("update_epochs", "min_steps", "mc_samples", "members", "chunk"):
            check_positive(name, getattr(self, name))


def round_config(
    config: ActiveLearningConfig,
    n_labelled: int,
    round_index: int,
    *,
    warm: bool,
    batch_size: int | None = None,
) -> TrainConfig:
    """The TrainConfig of one round: epochs reach ``min_steps`` live steps, seed per round.

    ``batch_size`` (default: the config's, capped by ``n_labelled``) must stay the same
    from round to round: it is part of the compiled program's shapes.
    """
    batch = batch_size if batch_size is not None else min(config.train.batch_size, n_labelled)
    epochs = config.update_epochs if warm else config.train.epochs
    epochs = max(epochs, math.ceil(config.min_steps / max(1, n_labelled // batch)))
    return config.train.replace(
        batch_size=batch, epochs=epochs, seed=config.train.seed + round_index
    )


@dataclasses.dataclass(frozen=True)
class Predictor:
    """The outputs a strategy reads from the current model: one network or a stacked committee.

    ``apply_fn`` should be the same object every round (one module's ``apply``): it is a
    static argument of the compiled prediction, so a new module would recompile it.
    """

    apply_fn: Any
    variables: Any
    members: int = 1  # > 1: ``variables`` carry a leading member axis

    def logits(self, x) -> jax.Array:
        """``[n, C]``; for a committee the log of the members' mean probability."""
        if self.members == 1:
            return predict_logits(self.apply_fn, self.variables, x)
        log_p = jax.nn.log_softmax(stacked_logits(self.apply_fn, self.variables, x), axis=-1)
        return jax.nn.logsumexp(log_p, axis=0) - jnp.log(self.members)

    def samples(self, x, key: jax.Array, mc_samples: int) -> jax.Array:
        """``[S, n, C]`` posterior samples: the committee's members, else MC-dropout passes."""
        if self.members > 1:
            return stacked_logits(self.apply_fn, self.variables, x)
        return S.mc_dropout_logits(self.apply_fn, self.variables, x, key, mc_samples)

    def predictive_logits(self, x, key: jax.Array, mc_samples: int) -> jax.Array:
        """``[n, C]`` log of the mean probability over the posterior samples (``samples``)."""
        log_p = jax.nn.log_softmax(self.samples(x, key, mc_samples), axis=-1)
        return jax.nn.logsumexp(log_p, axis=0) - jnp.log(log_p.shape[0])

    def features(self, x) -> jax.Array:
        """``[n, F]`` penultimate embeddings (member 0's for a committee)."""
        variables = self.variables if self.members == 1 else unstack_tree(self.variables, 0)
        return predict_logits(self.apply_fn, variables, x, method="features")


def predictor_for(apply_fn, model) -> Predictor | None:
    """The ``Predictor`` of a ``TrainedModel`` or ``StackedModel`` (None for no model)."""
    if model is None:
        return None
    members = model.members if isinstance(model, StackedModel) else 1
    return Predictor(apply_fn, model.variables, members)


def evaluate(predictor: Predictor, data: ArrayDataset) -> float:
    """Accuracy on ``data`` (the same compiled prediction every round)."""
    return classification_metrics(predictor.logits(data.x), data.y)["accuracy"]


def train_round(
    spec,
    pool: ArrayDataset,
    mask: np.ndarray,
    config: ActiveLearningConfig,
    round_index: int,
    *,
    batch_size: int,
    init_variables: dict[str, Any] | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
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

    warm = init_variables is not None and config.members == 1
    cfg = round_config(config, int(mask.sum()), round_index, warm=warm, batch_size=batch_size)
    if config.members > 1:
        from ml_adv.training.stacked import fit_stacked

        masks = np.broadcast_to(mask, (config.members, mask.shape[0])).copy()
        result = fit_stacked(
            spec, pool, cfg, members=config.members, example_masks=masks, run=Run(progress=False)
        )
        model, history = result.model, result.histories[0]
    else:
        result = fit(
            spec,
            pool,
            cfg,
            run=Run(progress=False),
            example_mask=mask,
            init_params=init_variables["params"] if warm else None,
        )
        model, history = (
            TrainedModel(spec, result.state.variables(), mixed_precision=cfg.mixed_precision),
            result.history,
        )
    facts = {
        "epochs": len(history),
        "warm_start": warm,
        "compile_seconds": round(result.compile_seconds, 3),
        "train_loss": history[-1]["train_loss"] if history else float("nan"),
    }
    return model, facts


COMMITTEE_FORMAT = "ml_adv.active_learning.Committee/1"


def save_model(model, path) -> None:
    """Save a round's ``TrainedModel`` or committee (orbax arrays + JSON spec; no pickle)."""
    if isinstance(model, StackedModel):
        save_pytree(
            path,
            model.variables,
            {
                "format": COMMITTEE_FORMAT,
                "spec": model.spec.to_dict(),
                "members": model.members,
                "mixed_precision": model.mixed_precision,
            },
        )
    else:
        model.save(path)


def load_model(path):
    """Load what ``save_model`` wrote."""
    meta = load_meta(path)
    if meta.get("format") != COMMITTEE_FORMAT:
        return TrainedModel.load(path)
    from ml_adv.models.registry import ModelSpec

    spec = ModelSpec.from_dict(meta["spec"])
    module = spec.build()
    keys = jax.random.split(jax.random.PRNGKey(0), int(meta["members"]))
    abstract = jax.eval_shape(
        jax.vmap(lambda k: module.init(k, spec.example_input(), train=False)), keys
    )
    return StackedModel(
        spec, dict(load_pytree(path, dict(abstract))), bool(meta["mixed_precision"])
    )


def choose(
    strategy: Strategy,
    predictor: Predictor | None,
    pool_x: np.ndarray,
    available: np.ndarray,
    n: int,
    key: jax.Array,
    *,
    labelled_x: np.ndarray | None,
    config: ActiveLearningConfig,
) -> np.ndarray:
    """Pool indices of ``n`` picks, best first, by ``strategy`` (host orchestration of
    jitted kernels).
    """
    check_request(n, available)
    mask = jnp.asarray(available)
    if not strategy.uses_model:
        return np.asarray(top_k(S.random_scores(mask, key), mask, n))
    scores = None
    if strategy.score is not None:
        score_fn = S.resolve_score(strategy.score)
        if strategy.samples:

            def outputs(part, i):
                return predictor.samples(part, jax.random.fold_in(key, i), config.mc_samples)
        elif config.mc_predictive:

            def outputs(part, i):
                return predictor.predictive_logits(
                    part, jax.random.fold_in(key, i), config.mc_samples
                )
        else:

            def outputs(part, i):
                return predictor.logits(part)

        scores = S.score_pool(outputs, score_fn, pool_x, chunk=config.chunk, indexed=True)
        if strategy.samples and not np.any(scores[available] > 0):
            warnings.warn(
                "bald: every score is 0; the model has no dropout and no committee, so samples "
                "agree",
                stacklevel=3,
            )
    if not strategy.diversity:
        return np.asarray(top_k(jnp.asarray(scores), mask, n))

    features = S.stream_map(predictor.features, pool_x, chunk=config.chunk)
    centres = [features[~available]] if (~available).any() else []
    if labelled_x is not None:
        centres.append(S.stream_map(predictor.features, labelled_x, chunk=config.chunk))
    centres = np.concatenate(centres) if centres else None
    return np.asarray(k_center_greedy(features, mask, n, centres=centres, weights=scores))


def adaptive_choice(
    curve: list[dict[str, Any]], primary: str, fallback: str, *, patience: int, min_gain: float
) -> tuple[str, str | None]:
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
    return (
        other,
        f"{current} gained {gain:+.4f} val accuracy over {patience} rounds (< {min_gain}); "
        f"switched to {other}",
    )
