"""``Estimator``: the small base of the seven seed classes, after scikit-learn's estimators.

* Settings go in the constructor, which validates them before anything compiles.
* ``get_params()`` returns the constructor's arguments (defaults filled in) as they were given.
* ``repr`` shows the class and the arguments that differ from their defaults.
* ``save(path)`` writes the settings and what the object learned; ``Cls.load(path)`` builds
  it again through the constructor (so a saved file is validated like user input).

The settings are written by one generic codec, so this module imports nothing above the
ground floor: JSON values, tuples, paths, numpy arrays (into one ``params.npz``), the
library's dataclasses (``TrainConfig``, ``ModelSpec``, ``ArrayDataset`` ...) field by field,
and objects with ``save(path)`` / ``load(path)`` (``TrainedModel``) into their own folder.
A setting that cannot be written (a user callable, an executor) fails ``save`` with a
``ConfigError`` naming it, unless the class lists it in ``RUNTIME_PARAMS``: those are
written as None and passed again to ``load(path, name=value)``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ml_adv.errors import CheckpointError, ConfigError, describe

FORMAT = "ml_adv.estimator/1"
MANIFEST = "estimator.json"
_EMPTY = inspect.Parameter.empty


class Estimator:
    """Base of the seed classes: ``get_params``, ``__repr__``, ``save`` and ``load``.

    A subclass keeps what it learned with ``_state(folder) -> dict`` (JSON; may write files
    into ``folder``) and restores it with ``_restore_state(state, folder)``.

    Example:
        >>> class Scaler(Estimator):
        ...     def __init__(self, factor: float = 1.0, *, name: str = "scaler"):
        ...         self.factor = factor
        >>> Scaler(2.0)
        Scaler(factor=2.0)
        >>> Scaler(2.0).get_params()
        {'factor': 2.0, 'name': 'scaler'}
    """

    RUNTIME_PARAMS: tuple[str, ...] = ()  # written as None; given again to ``load``

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _recording(init)

    # ------------------------------------------------------------------ settings
    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, defaults filled in (``**options`` flattened)."""
        return dict(getattr(self, "_params", {}))

    def __repr__(self) -> str:
        defaults = _defaults(type(self))
        shown = [
            f"{k}={v!r}"
            for k, v in self.get_params().items()
            if k not in defaults or not _same(defaults[k], v)
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    # --------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Write the settings and the learned state to the folder ``path``; returns its path.

        Written to a temporary folder and renamed when complete: a crash leaves no half
        folder. An existing non-empty folder is replaced only with ``overwrite=True``.
        """
        folder = Path(path)
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise CheckpointError(
                f"path: {folder} is not a new or empty directory; pass overwrite=True to replace it"
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            codec = _Codec(tmp)
            params = {
                name: codec.encode(name, None if name in self.RUNTIME_PARAMS else value)
                for name, value in self.get_params().items()
            }
            codec.finish()
            manifest = {
                "format": FORMAT,
                "class": _class_path(type(self)),
                "params": params,
                "state": self._state(tmp),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return str(folder)

    @classmethod
    def load(cls, path: str | os.PathLike, **runtime: Any):
        """Rebuild an object written by ``save`` (its constructor validates the settings again).

        ``runtime``: values for the ``RUNTIME_PARAMS`` that ``save`` left out (e.g. ``executor``).
        """
        folder = Path(path)
        manifest = read_manifest(folder)
        if manifest["class"] != _class_path(cls):
            raise CheckpointError(
                f"path: {folder} holds a {manifest['class']}, not a {_class_path(cls)}"
            )
        unknown = set(runtime) - set(cls.RUNTIME_PARAMS)
        if unknown:
            raise ConfigError(
                f"load: expected only runtime settings {list(cls.RUNTIME_PARAMS)}, "
                f"got {sorted(unknown)}"
            )
        codec = _Codec(folder)
        params = {name: codec.decode(value) for name, value in manifest["params"].items()}
        params.update(runtime)
        obj = cls(**params)
        obj._restore_state(manifest["state"], folder)
        return obj

    def _state(self, folder: Path) -> dict[str, Any]:
        """What the object learned, as JSON (may write files into ``folder``)."""
        del folder
        return {}

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        del state, folder


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a saved estimator (CheckpointError when absent or unreadable)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"path: expected a folder written by save(), could not read "
            f"{Path(folder) / MANIFEST}: {exc}"
        ) from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"path: expected format {FORMAT!r}, got {manifest.get('format')!r}")
    return manifest


# ---------------------------------------------------------------------- internals
def _recording(init):
    """Wrap ``__init__`` so the bound arguments are kept (before validation, as given)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self, *args: Any, **kwargs: Any):
        if type(self).__init__ is wrapped or not hasattr(self, "_params"):
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                return init(self, *args, **kwargs)  # Python's own error, unchanged
            bound.apply_defaults()
            params: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    params.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    params[name] = value
            self._params = params
        return init(self, *args, **kwargs)

    return wrapped


def _defaults(cls) -> dict[str, Any]:
    signature = inspect.signature(cls.__init__)
    return {n: p.default for n, p in signature.parameters.items() if p.default is not _EMPTY}


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:  # arrays and other objects without a plain truth value
        return False


def _class_path(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _library_class(path: str):
    module, _, name = path.partition(":")
    if not (module == "ml_adv" or module.startswith("ml_adv.")):
        raise CheckpointError(
            f"path: a saved setting names {path!r}, outside ml_adv; refusing to load it"
        )
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


class _Codec:
    """Settings to JSON and back; arrays into ``params.npz``, saveable objects into folders."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.arrays: dict[str, np.ndarray] = {}
        self._loaded: dict[str, np.ndarray] | None = None
        self._objects = 0

    # ---------------------------------------------------------------- encode
    def encode(self, name: str, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return value.item()
        if isinstance(value, tuple):
            return {"$type": "tuple", "items": [self.encode(name, v) for v in value]}
        if isinstance(value, list):
            return [self.encode(name, v) for v in value]
        if isinstance(value, dict):
            if not all(isinstance(k, str) and not k.startswith("$") for k in value):
                raise ConfigError(
                    f"save: {name}: dictionary keys must be strings not starting with '$'"
                )
            return {k: self.encode(f"{name}.{k}", v) for k, v in value.items()}
        if isinstance(value, Path):
            return {"$type": "path", "value": str(value)}
        if isinstance(value, np.ndarray):
            key = f"a{len(self.arrays)}"
            self.arrays[key] = value
            return {"$type": "array", "key": key}
        library = type(value).__module__.split(".")[0] == "ml_adv"
        if (
            library
            and hasattr(value, "save")
            and hasattr(type(value), "load")
            and not isinstance(value, Estimator)
        ):
            folder, self._objects = f"objects/{self._objects}", self._objects + 1
            value.save(self.folder / folder)
            return {"$type": "saved", "class": _class_path(type(value)), "folder": folder}
        if library and dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {
                f.name: self.encode(f"{name}.{f.name}", getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.init
            }
            return {"$type": "dataclass", "class": _class_path(type(value)), "fields": fields}
        if library and hasattr(value, "to_dict") and hasattr(type(value), "from_dict"):
            return {
                "$type": "dict_form",
                "class": _class_path(type(value)),
                "value": value.to_dict(),
            }
        if isinstance(value, Estimator):
            return {
                "$type": "estimator",
                "class": _class_path(type(value)),
                "params": {k: self.encode(f"{name}.{k}", v) for k, v in value.get_params().items()},
            }
        raise ConfigError(
            f"save: {name}: cannot be written ({describe(value)}); pass a registered name or "
            "a plain value, or set it again after load"
        )

    def finish(self) -> None:
        if self.arrays:
            np.savez(self.folder / "params.npz", **self.arrays)

    # ---------------------------------------------------------------- decode
    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        kind = value.get("$type")
        if kind is None:
            return {k: self.decode(v) for k, v in value.items()}
        if kind == "tuple":
            return tuple(self.decode(v) for v in value["items"])
        if kind == "path":
            return Path(value["value"])
        if kind == "array":
            if self._loaded is None:
                with np.load(self.folder / "params.npz", allow_pickle=False) as f:
                    self._loaded = {k: f[k] for k in f.files}
            return self._loaded[value["key"]]
        if kind == "saved":
            return _library_class(value["class"]).load(self.folder / value["folder"])
        if kind == "dataclass":
            cls = _library_class(value["class"])
            return cls(**{k: self.decode(v) for k, v in value["fields"].items()})
        if kind == "dict_form":
            return _library_class(value["class"]).from_dict(value["value"])
        if kind == "estimator":
            cls = _library_class(value["class"])
            return cls(**{k: self.decode(v) for k, v in value["params"].items()})
        raise CheckpointError(f"path: unknown saved setting type {kind!r}")


__all__ = ["Estimator", "read_manifest"]
