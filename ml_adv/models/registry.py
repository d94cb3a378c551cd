"""Architecture registry and ``ModelSpec``, the serialisable description of a model.

A ``ModelSpec`` is what ``AdvancedModelArchitecture.design_architecture`` returns
and what the trainer, checkpoints and saved models carry: the architecture name,
its config dataclass, and the per-example input shape and kind. ``spec.build()``
turns it into a Flax Linen module; ``spec.to_dict()`` / ``ModelSpec.from_dict``
round-trip it through JSON, so a saved model is rebuilt from the registry and
never from pickled code.

Each model family registers an ``ArchitectureEntry`` with:
  * ``config_cls``: its frozen config dataclass (JSON-friendly fields only);
  * ``module_cls``: the Linen module, constructed as ``module_cls(config)``;
  * ``input_kinds``: the ``ArrayDataset.input_kind`` values it accepts;
  * ``sizes``: named size variants -> dict of config overrides (``"tiny"`` for tests);
  * ``make_config(input_shape, input_kind, num_classes, size, **overrides)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ml_adv.errors import ConfigError, DataError, ShapeError, describe
from ml_adv.registry import Registry


@dataclasses.dataclass(frozen=True)
class ArchitectureEntry:
    name: str
    config_cls: type
    module_cls: type
    input_kinds: tuple[str, ...]
    sizes: dict[str, dict[str, Any]]
    make_config: Callable[..., Any]
    description: str = ""


ARCHITECTURES: Registry[ArchitectureEntry] = Registry("architecture_type")


def register_architecture(entry: ArchitectureEntry) -> ArchitectureEntry:
    return ARCHITECTURES.register(entry.name, entry)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: architecture, config, input shape and kind.

    ``input_shape`` is the shape of one example (no batch axis); for sequence and
    token models the length axis may be ``None`` (any length up to the config's
    maximum).
    """

    architecture: str
    config: Any
    input_shape: tuple[int | None, ...]
    input_kind: str
    num_classes: int

    def build(self):
        """The Flax Linen module for this spec."""
        return ARCHITECTURES.get(self.architecture).module_cls(self.config)

    def example_input(self, batch_size: int = 1, length: int | None = None) -> np.ndarray:
        """A zero input batch with the right shape and dtype (for ``init`` / ``eval_shape``)."""
        shape = tuple((length or 8) if d is None else d for d in self.input_shape)
        dtype = np.int32 if self.input_kind == "tokens" else np.float32
        return np.zeros((batch_size, *shape), dtype)

    def validate_inputs(self, x: Any, *, argument: str = "x") -> None:
        """Raise ShapeError/DataError unless ``x`` is a batch this model accepts."""
        shape = tuple(np.shape(x))
        if len(shape) != len(self.input_shape) + 1:
            raise ShapeError(
                f"{argument}: {self.architecture} expects a batch of shape "
                f"(N, {', '.join('L' if d is None else str(d) for d in self.input_shape)}), "
                f"got {describe(np.asarray(x))}"
            )
        for axis, (want, got) in enumerate(zip(self.input_shape, shape[1:]), start=1):
            if want is not None and want != got:
                raise ShapeError(
                    f"{argument}: {self.architecture} expects size {want} on axis {axis} "
                    "(input shape (N, "
                    f"{', '.join('L' if d is None else str(d) for d in self.input_shape)})), "
                    f"got shape {shape}"
                )
        max_len = getattr(self.config, "max_length", None)
        if self.input_kind in ("tokens", "sequence") and max_len is not None and shape[1] > max_len:
            raise ShapeError(
                f"{argument}: {self.architecture} accepts sequences of length <= {max_len}, "
                f"got {shape[1]}"
            )
        dtype = np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype
        if self.input_kind == "tokens":
            if np.dtype(dtype).kind not in "iu":
                raise DataError(
                    f"{argument}: {self.architecture} expects integer token ids, got dtype {dtype}"
                )
            vocab = getattr(self.config, "vocab_size", None)
            arr = np.asarray(x)
            if vocab is not None and arr.size and (arr.min() < 0 or arr.max() >= vocab):
                raise DataError(
                    f"{argument}: expected token ids in [0, {vocab}), "
                    f"got range [{arr.min()}, {arr.max()}]"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "config": dataclasses.asdict(self.config),
            "input_shape": list(self.input_shape),
            "input_kind": self.input_kind,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        entry = ARCHITECTURES.get(d["architecture"])
        cfg_fields = {f.name for f in dataclasses.fields(entry.config_cls)}
        raw = {k: v for k, v in d["config"].items() if k in cfg_fields}
        # JSON turns tuples into lists; configs are frozen and hashable, so restore tuples.
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(
            architecture=d["architecture"],
            config=entry.config_cls(**raw),
            input_shape=tuple(d["input_shape"]),
            input_kind=d["input_kind"],
            num_classes=int(d["num_classes"]),
        )


def make_spec(
    architecture: str,
    *,
    input_shape: tuple[int | None, ...],
    input_kind: str,
    num_classes: int,
    size: str = "small",
    **overrides: Any,
) -> ModelSpec:
    """Build a validated ``ModelSpec`` from the registry (unknown names raise ConfigError)."""
    entry = ARCHITECTURES.get(architecture, argument="architecture_type")
    if not isinstance(input_kind, str) or input_kind not in entry.input_kinds:
        raise ShapeError(
            f"input_kind: architecture {architecture!r} accepts {list(entry.input_kinds)} inputs, "
            f"got {input_kind!r}"
        )
    if not isinstance(size, str) or size not in entry.sizes:
        raise ConfigError(
            f"size: expected one of {sorted(entry.sizes)} for {architecture!r}, got {size!r}"
        )
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 2
    ):
        raise ConfigError(
            f"output_dim: expected an integer number of classes >= 2, got {describe(num_classes)}"
        )
    config = entry.make_config(
        input_shape=tuple(input_shape),
        input_kind=input_kind,
        num_classes=int(num_classes),
        size=size,
        **overrides,
    )
    return ModelSpec(architecture, config, tuple(input_shape), input_kind, int(num_classes))
