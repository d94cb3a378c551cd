"""``AdvancedModelArchitecture``: the SEED facade that designs a model from two numbers.

It holds an architecture name, a size variant and config overrides, all checked when it is
constructed, and turns ``(input_dim, output_dim)`` into a validated ``ModelSpec`` through
``make_spec``. No numerics live here; ``spec.build()`` gives the Flax module.

Example:
    >>> arch = AdvancedModelArchitecture(architecture_type="cnn")
    >>> spec = arch.design_architecture(input_dim=8, output_dim=10)
    >>> spec.input_shape
    (8, 8, 1)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from ml_adv.errors import ConfigError, ShapeError, describe
from ml_adv.estimator import Estimator
from ml_adv.models.layers import check_override_names
from ml_adv.models.registry import ARCHITECTURES, ModelSpec, make_spec

# What ``input_dim`` means for each architecture, and the input kind it implies.
_DEFAULT_KIND = {
    "mlp": "features",
    "cnn": "image",
    "lstm": "sequence",
    "transformer": "sequence",
    "bert": "tokens",
}


def _check_dim(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {describe(value)}")
    return int(value)


def _infer_kind(architecture: str, input_shape: tuple | None) -> str:
    if architecture in ("mlp", "transformer") and input_shape is not None:
        rank = len(input_shape)
        if architecture == "transformer":
            return "tokens" if rank == 1 else "sequence"
        return {1: "features", 2: "sequence"}.get(rank, "image")
    if architecture in _DEFAULT_KIND:
        return _DEFAULT_KIND[architecture]
    return ARCHITECTURES.get(architecture).input_kinds[0]


def _mismatch(input_dim: int, input_shape: tuple, meaning: str) -> ShapeError:
    return ShapeError(
        f"input_shape: expected {meaning} equal to input_dim={input_dim}, "
        f"got input_shape {input_shape}"
    )


def _shape_for(
    architecture: str, input_dim: int, input_shape: tuple | None, input_kind: str
) -> tuple:
    """Per-example input shape implied by ``input_dim``, checked against ``input_shape`` if
    given."""
    if (
        architecture not in _DEFAULT_KIND
    ):  # a user-registered family: input_dim has no known meaning
        if input_shape is None:
            raise ShapeError(
                f"input_shape: required for the custom architecture {architecture!r}, got None"
            )
        return input_shape
    if architecture == "cnn":
        if input_shape is None:
            return (input_dim, input_dim, 1)
        if len(input_shape) != 3 or input_dim not in tuple(input_shape[:2]):
            raise _mismatch(input_dim, input_shape, "an (H, W, C) image with a side")
        return input_shape
    if architecture == "mlp":
        if input_shape is None:
            return (input_dim,)
        if None in input_shape or math.prod(input_shape) != input_dim:
            raise _mismatch(input_dim, input_shape, "a fixed shape whose number of features is")
        return input_shape
    if input_kind == "tokens":  # transformer on tokens, bert: input_dim is the vocabulary size
        return (None,) if input_shape is None else input_shape
    # lstm, transformer on float sequences: input_dim is the number of features per step
    if input_shape is None:
        return (None, input_dim)
    if len(input_shape) != 2 or input_shape[-1] != input_dim:
        raise _mismatch(input_dim, input_shape, "an (L, D) sequence with D")
    return input_shape


class AdvancedModelArchitecture(Estimator):
    """Designs a model (a ``ModelSpec``) of one architecture family.

    Args:
        architecture_type: one of ``ARCHITECTURES.names()``: ``"mlp"``, ``"cnn"``, ``"lstm"``,
            ``"transformer"``, ``"bert"`` (plus any registered later).
        size: a size variant of that family: ``"tiny"``, ``"small"`` (default) or ``"base"``.
        **config_overrides: fields of the family's config dataclass (e.g. ``dropout=0.2``,
            ``num_layers=4``); names are checked here, values when a model is designed.

    Raises:
        ConfigError: unknown architecture, size or override name.
    """

    def __init__(self, architecture_type: str, size: str = "small", **config_overrides: Any):
        entry = ARCHITECTURES.get(architecture_type, argument="architecture_type")
        if not isinstance(size, str) or size not in entry.sizes:
            raise ConfigError(
                f"size: expected one of {sorted(entry.sizes)} for {architecture_type!r}, "
                f"got {size!r}"
            )
        check_override_names(entry.config_cls, architecture_type, config_overrides)
        self.architecture_type = architecture_type
        self.size = size
        self.config_overrides = dict(config_overrides)
        self.spec: ModelSpec | None = None

    def design_architecture(
        self,
        input_dim: int,
        output_dim: int,
        *,
        input_shape: tuple[int | None, ...] | None = None,
        input_kind: str | None = None,
    ) -> ModelSpec:
        """A validated ``ModelSpec`` for ``input_dim`` inputs and ``output_dim`` classes.

        ``input_dim`` means, per architecture:
          * ``mlp``: the number of input features (``input_shape`` defaults to ``(input_dim,)``;
            a given image/sequence shape must have ``input_dim`` elements in total);
          * ``cnn``: the image side; the image is square with 1 channel,
            ``(input_dim, input_dim, 1)``, unless ``input_shape`` says otherwise (then its height
            or width must equal ``input_dim``);
          * ``lstm``: features per time step, ``(None, input_dim)`` (any length);
          * ``transformer``: features per token for float sequences ``(None, input_dim)``, or the
            vocabulary size when ``input_kind='tokens'`` (``input_shape`` ``(None,)``);
          * ``bert``: the vocabulary size (token inputs ``(None,)``).

        Args:
            input_dim: see above; a positive integer.
            output_dim: number of classes, an integer >= 2.
            input_shape: the per-example shape of the real data, if known; checked against
                ``input_dim``.
            input_kind: ``'features'``, ``'image'``, ``'sequence'`` or ``'tokens'``; inferred from
                the architecture (and ``input_shape``) when omitted.

        Raises:
            ConfigError: non-positive ``input_dim``, ``output_dim`` < 2, invalid config values.
            ShapeError: ``input_shape`` disagrees with ``input_dim`` or the architecture.
        """
        arch = self.architecture_type
        input_dim = _check_dim("input_dim", input_dim, 1)
        output_dim = _check_dim("output_dim", output_dim, 2)
        if input_shape is not None:
            if isinstance(input_shape, (int, np.integer)) or not hasattr(input_shape, "__len__"):
                raise ShapeError(
                    f"input_shape: expected a tuple of sizes, got {describe(input_shape)}"
                )
            input_shape = tuple(None if d is None else int(d) for d in input_shape)
        kind = input_kind or _infer_kind(arch, input_shape)
        overrides = dict(self.config_overrides)
        if kind == "tokens":
            given = overrides.get("vocab_size", input_dim)
            if given != input_dim:
                raise ConfigError(
                    f"vocab_size: input_dim is the vocabulary size for token inputs ({input_dim}), "
                    f"but config_overrides gives vocab_size={given!r}"
                )
            overrides["vocab_size"] = input_dim
        shape = _shape_for(arch, input_dim, input_shape, kind)
        self.spec = make_spec(
            arch,
            input_shape=shape,
            input_kind=kind,
            num_classes=output_dim,
            size=self.size,
            **overrides,
        )
        return self.spec

    def _state(self, folder) -> dict[str, Any]:
        return {"spec": self.spec.to_dict() if self.spec is not None else None}

    def _restore_state(self, state: dict[str, Any], folder) -> None:
        self.spec = ModelSpec.from_dict(state["spec"]) if state.get("spec") else None


def abstract_variables(spec: ModelSpec, batch_size: int = 1) -> Any:
    """Shapes and dtypes of ``spec.build().init(...)`` (``jax.ShapeDtypeStruct`` leaves), no
    allocation."""
    module = spec.build()
    x = spec.example_input(batch_size)
    return jax.eval_shape(lambda key: module.init(key, x), jax.random.key(0))


def count_params(spec: ModelSpec) -> int:
    """Number of trainable parameters (the ``'params'`` collection), computed without allocating."""
    params = abstract_variables(spec)["params"]
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
