"""Domain-adversarial training (DANN, Ganin et al. 2016) as an objective of the core loop.

``DANNModel(base)`` wraps any model that exposes ``features(x, train)`` and a linear
``head`` (every built-in architecture: MLP, CNN, LSTM, Transformer, BERT) and adds a
small domain discriminator. Its parameters are ``{'base': <the model's own tree>,
'discriminator': ...}``: one tree, so the one optimizer of ``fit`` trains both, and
``base`` is exactly the tree a ``TrainedModel`` of the base spec holds. Its ``__call__``
is the base classifier, so ``fit``'s validation (target labels, when held out) and
``predict_logits`` work on it unchanged.

``dann_objective`` is one step of DANN over the core's multi-stream epoch
(``fit(module, {"source": s, "target": t}, ...)``, the shorter stream cycling): one
forward pass of the features of source and target rows together, the label loss on the
source rows through the model's own head, and the domain loss on all rows through the
gradient reversal layer. With several source streams the domain ids are the stream
positions (sources 0..S-1, target S) and the discriminator is an (S+1)-way softmax;
with one source it is a single sigmoid logit.

Why the schedule's step counter lives in ``model_state`` (collection ``dann_progress``):
the objective receives ``(params, model_state, batch, key, hparams)``, not the
``TrainState``'s step, and lambda must follow the paper's per-step ramp
``lambda_p = 2/(1+exp(-10 p))`` inside the compiled epoch. A counter in the model's
mutable state is carried, checkpointed and resumed with the run, advances only on steps
whose update is applied (the core's guard keeps the old model state otherwise), and
feeds ``gradient_reversal`` as an array, so the whole run is one compiled epoch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ml_adv.data.dataset import ArrayDataset
from ml_adv.domain_adaptation.grl import DEFAULT_GAMMA, gradient_reversal, grl_schedule
from ml_adv.errors import ConfigError, DataError, check_non_negative, check_positive, describe
from ml_adv.rundir import QUIET, Run
from ml_adv.training.loop import Hook
from ml_adv.training.objectives import Objective, accuracy, cast_floats

PROGRESS = "dann_progress"
DEFAULT_DISCRIMINATOR_HIDDEN = (64,)


class DomainDiscriminator(nn.Module):
    """MLP ``features -> domain logits`` (1 logit for two domains, else one per domain)."""

    hidden: tuple[int, ...]
    num_domains: int

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        h = features
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(1 if self.num_domains == 2 else self.num_domains)(h)


class DANNModel(nn.Module):
    """A base classifier plus a domain discriminator behind a gradient reversal layer.

    Attributes:
        base: a Linen module with ``features(x, train)`` and a ``head`` (built-in models).
        num_domains: 2 for one source and one target; S + 1 for S sources.
        discriminator_hidden: hidden widths of the discriminator MLP.
    """

    base: nn.Module
    num_domains: int = 2
    discriminator_hidden: tuple[int, ...] = DEFAULT_DISCRIMINATOR_HIDDEN

    def setup(self):
        self.discriminator = DomainDiscriminator(tuple(self.discriminator_hidden), self.num_domains)
        self.progress = self.variable(PROGRESS, "step", lambda: jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Class logits of the base model (prediction and validation)."""
        if self.is_initializing():  # create the discriminator and counter with the rest
            _ = self.progress.value
            self.discriminator(self.base.features(x, train))
        return self.base(x, train)

    def features(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.base.features(x, train)

    def classify(self, features: jax.Array, train: bool = False) -> jax.Array:
        """The base model's head on its features (BERT's classifier dropout included)."""
        dropout = getattr(self.base, "dropout", None)
        if isinstance(dropout, nn.Dropout):
            features = dropout(features, deterministic=not train)
        return self.base.head(features)

    def discriminate(self, features: jax.Array, lam: jax.Array) -> jax.Array:
        """Domain logits of ``features`` through the gradient reversal layer (scale ``lam``)."""
        return self.discriminator(gradient_reversal(features, lam))

    def adversarial(
        self, x: jax.Array, lam: jax.Array, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """``(class_logits, domain_logits)`` from one feature pass over ``x``."""
        features = self.features(x, train)
        return self.classify(features, train), self.discriminate(features, lam)


def domain_loss(logits: jax.Array, domain_ids: jax.Array) -> jax.Array:
    """Mean domain-classification loss: sigmoid BCE for one logit, softmax CE otherwise."""
    if logits.shape[-1] == 1:
        return jnp.mean(
            optax.sigmoid_binary_cross_entropy(logits[:, 0], domain_ids.astype(logits.dtype))
        )
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, domain_ids))


def domain_accuracy(logits: jax.Array, domain_ids: jax.Array) -> jax.Array:
    if logits.shape[-1] == 1:
        return jnp.mean(((logits[:, 0] > 0).astype(jnp.int32) == domain_ids).astype(jnp.float32))
    return accuracy(logits, domain_ids)


def dann_objective(
    module: DANNModel,
    *,
    streams: Sequence[str],
    total_steps: int,
    domain_weight: float = 1.0,
    gamma: float = DEFAULT_GAMMA,
    compute_dtype=None,
) -> Objective:
    """The DANN loss ``label_loss(source) + domain_weight * domain_loss(all, through the GRL)``.

    Args:
        module: the ``DANNModel`` being trained.
        streams: batch stream names, sources first and the target last; domain id = position.
        total_steps: steps of the whole run: lambda follows ``grl_schedule(step / total_steps)``.
        domain_weight: weight of the domain loss.
        gamma: the schedule's steepness (10 in the paper).
        compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision.
    """
    streams = tuple(streams)
    if len(streams) != module.num_domains:
        raise ConfigError(
            f"streams: the model has {module.num_domains} domains, got {len(streams)} streams "
            f"{streams}"
        )
    total = float(check_positive("total_steps", total_steps))

    def objective(params, model_state, batch, key, hparams):
        del hparams
        step = model_state[PROGRESS]["step"]
        lam = grl_schedule(step.astype(jnp.float32) / total, gamma)
        x, domain_ids, n_source, labels = _stack_streams(batch, streams)
        logits, dom_logits, new_others = _adversarial_forward(
            module, params, model_state, x, lam, key, compute_dtype
        )
        source_logits = logits[:n_source]
        label_loss = jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(source_logits, labels)
        )
        d_loss = domain_loss(dom_logits, domain_ids)
        loss = label_loss + domain_weight * d_loss
        new_state = {**new_others, PROGRESS: {"step": step + 1}}
        metrics = {
            "accuracy": accuracy(source_logits, labels),
            "label_loss": label_loss,
            "domain_loss": d_loss,
            "domain_accuracy": domain_accuracy(dom_logits, domain_ids),
            "grl_lambda": lam,
        }
        return loss, {"model_state": new_state, "metrics": metrics}

    return objective


def _stack_streams(batch, streams: tuple[str, ...]):
    """One batch of every stream's rows, in stream order: ``(x, domain_ids, n_source,
    source_labels)`` (domain id = stream position; the target, last, brings no labels)."""
    x = jnp.concatenate([batch[name]["x"] for name in streams])
    sizes = [batch[name]["x"].shape[0] for name in streams]
    domain_ids = jnp.concatenate([jnp.full((n,), i, jnp.int32) for i, n in enumerate(sizes)])
    n_source = sum(sizes[:-1])
    labels = jnp.concatenate([batch[name]["y"] for name in streams[:-1]])
    return x, domain_ids, n_source, labels


def _adversarial_forward(module: DANNModel, params, model_state, x, lam, key, compute_dtype):
    """One training-mode feature pass over ``x``: ``(class_logits, domain_logits,
    new_model_state)`` in float32, the state without the ``dann_progress`` counter."""
    p, xin = (
        (cast_floats(params, compute_dtype), cast_floats(x, compute_dtype))
        if compute_dtype
        else (params, x)
    )
    others = {c: v for c, v in model_state.items() if c != PROGRESS}
    variables = {"params": p, **model_state}
    rngs = {"dropout": jax.random.split(key)[1]}
    if others:
        (logits, dom_logits), new_others = module.apply(
            variables,
            xin,
            lam,
            train=True,
            rngs=rngs,
            method=DANNModel.adversarial,
            mutable=list(others),
        )
    else:
        (logits, dom_logits), new_others = (
            module.apply(variables, xin, lam, train=True, rngs=rngs, method=DANNModel.adversarial),
            {},
        )
    return logits.astype(jnp.float32), dom_logits.astype(jnp.float32), new_others


@functools.lru_cache(maxsize=32)
def _cached_objective(
    module, streams, total_steps, domain_weight, gamma, mixed_precision
) -> Objective:
    # The same objective object for the same structure: fit's program cache then reuses the
    # compiled epoch across runs that differ only in data, seed or starting parameters.
    return dann_objective(
        module,
        streams=streams,
        total_steps=total_steps,
        domain_weight=domain_weight,
        gamma=gamma,
        compute_dtype=jnp.bfloat16 if mixed_precision else None,
    )


def check_adaptable(base: nn.Module, example_x) -> None:
    """ConfigError unless ``base`` has ``features(x, train)`` and a ``head`` (checked
    abstractly).
    """
    if not callable(getattr(type(base), "features", None)):
        raise ConfigError(
            "model: domain adaptation needs a model that exposes its features (a "
            "`features(x, train)` method and a linear `head`, as every built-in architecture "
            f"has), got {type(base).__name__} without `features`"
        )
    abstract = jax.eval_shape(
        lambda: base.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
            jnp.asarray(example_x),
            train=False,
        )
    )
    if "head" not in abstract["params"]:
        raise ConfigError(
            f"model: domain adaptation needs the classifier's parameters under 'head' "
            f"(the built-in layout {{'encoder', 'head'}}), got {sorted(abstract['params'])}"
        )


def stream_names(num_sources: int) -> tuple[str, ...]:
    """``("source", "target")`` for one source, ``("source_0", ..., "target")`` for several."""
    if num_sources == 1:
        return ("source", "target")
    return tuple(f"source_{i}" for i in range(num_sources)) + ("target",)


def check_domains(spec, sources: Sequence[ArrayDataset], target: ArrayDataset) -> None:
    """Every domain is an ArrayDataset with the source's example shape (and the spec's inputs)."""
    if not sources:
        raise DataError("sources: expected at least one labelled source ArrayDataset, got none")
    for i, data in enumerate([*sources, target]):
        argument = "target" if i == len(sources) else f"sources[{i}]"
        if not isinstance(data, ArrayDataset):
            raise DataError(f"{argument}: expected an ArrayDataset, got {describe(data)}")
        if data.example_shape != sources[0].example_shape:
            raise DataError(
                f"{argument}: expected example shape {sources[0].example_shape} like the source, "
                f"got {data.example_shape}"
            )
        if spec is not None:
            spec.validate_inputs(
                data.x, argument=f"{argument}.x"
            )  # every row: token ids are range-checked
            if i < len(sources) and data.num_classes > spec.num_classes:
                raise DataError(
                    f"{argument}.y: the model has {spec.num_classes} outputs, "
                    f"got labels needing {data.num_classes}"
                )


@dataclasses.dataclass
class DANNResult:
    """``fit_dann``'s result: the core ``FitResult`` and the adapted base model's variables."""

    fit: Any
    module: DANNModel
    variables: dict[str, Any]


def base_variables(params: Any, model_state: dict[str, Any]) -> dict[str, Any]:
    """The base model's ``{'params', **collections}`` inside a ``DANNModel``'s variables."""
    out = {"params": params["base"]}
    for collection, tree in model_state.items():
        if collection != PROGRESS and "base" in tree:
            out[collection] = tree["base"]
    return out


def fit_dann(
    model,
    sources: Sequence[ArrayDataset] | ArrayDataset,
    target: ArrayDataset,
    config,
    *,
    init_params: Any | None = None,
    val: ArrayDataset | None = None,
    domain_weight: float = 1.0,
    gamma: float = DEFAULT_GAMMA,
    discriminator_hidden: Sequence[int] = DEFAULT_DISCRIMINATOR_HIDDEN,
    run: Run = QUIET,
    key=None,
    hooks: Sequence[Hook] = (),
) -> DANNResult:
    """Train ``model`` (a ``ModelSpec`` or Linen module) with DANN through ``ml_adv.fit``.

    Args:
        sources: labelled source domain(s).
        target: target examples (labels unused).
        init_params: the base model's parameters to start from (e.g. a source-trained model).
        val: labelled target examples held out for per-epoch validation / early stopping.
        run: the run folder and its options (``fit``'s ``run``): the same call again resumes
            from the latest checkpoint (the lambda schedule's step counter is in the
            checkpointed model state).
        hooks: ``fit``'s per-epoch hooks (``EpochCallback`` stops the run).
    """
    from ml_adv.models.registry import ModelSpec
    from ml_adv.training.loop import fit

    spec = model if isinstance(model, ModelSpec) else None
    base = spec.build() if spec is not None else model
    sources = [sources] if isinstance(sources, ArrayDataset) else list(sources)
    check_domains(spec, sources, target)
    check_adaptable(base, sources[0].x[:1])
    hidden = tuple(int(check_positive("discriminator_hidden", h)) for h in discriminator_hidden)
    domain_weight = check_non_negative("domain_weight", domain_weight)
    gamma = check_positive("gamma", gamma, kind=float)
    names = stream_names(len(sources))
    module = DANNModel(base, num_domains=len(names), discriminator_hidden=hidden)
    steps_per_epoch = len(sources[0]) // config.batch_size
    # The counter behind lambda advances once per objective call, i.e. per micro-step under
    # gradient accumulation: count the run in micro-steps, or lambda reaches 1 too early.
    objective = _cached_objective(
        module,
        names,
        max(1, config.epochs * steps_per_epoch),
        float(domain_weight),
        float(gamma),
        bool(config.mixed_precision),
    )
    full = None
    if init_params is not None:
        init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)

        def new_parts(key, x):  # jitted, without the base: XLA drops its initialisation
            params = module.init({"params": key, "dropout": key}, x, train=False)["params"]
            return {name: value for name, value in params.items() if name != "base"}

        full = {
            **jax.jit(new_parts)(init_key, jnp.asarray(sources[0].x[:1])),
            "base": init_params,
        }
    result = fit(
        module,
        dict(zip(names, [*sources, target])),
        config,
        val=val,
        objective=objective,
        init_params=full,
        run=run,
        hooks=hooks,
        key=key,
    )
    return DANNResult(result, module, base_variables(result.state.params, result.state.model_state))
