"""A tiny name -> object registry used for every name-based choice.

Architectures, losses, optimizers, schedules, search methods, combination rules,
sampling strategies and adaptation methods are all chosen by name in configs.
Each kind has one ``Registry``; looking up an unknown name raises ``ConfigError``
listing the valid names, so a typo fails when the config is built, not deep
inside a compiled function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ml_adv.errors import ConfigError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(o: T) -> T:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{self.kind} name: expected a non-empty string, got {name!r}")
            if name in self._entries and not overwrite:
                raise ConfigError(f"{self.kind} name: {name!r} is already registered")
            self._entries[name] = o
            return o

        if obj is None:
            return _add
        return _add(obj)

    def get(self, name: str, *, argument: str | None = None) -> T:
        """Return the entry for ``name`` or raise ConfigError listing the valid names."""
        if not isinstance(name, str) or name not in self._entries:
            raise unknown_name(argument or self.kind, name, self.names())
        return self._entries[name]

    def resolve(
        self,
        name_or_obj,
        *,
        argument: str | None = None,
        accept: Callable[[object], bool] = callable,
    ):
        """Look ``name_or_obj`` up if it is a string; pass user objects through if ``accept`` says
        so."""
        if isinstance(name_or_obj, str):
            return self.get(name_or_obj, argument=argument)
        if accept(name_or_obj):
            return name_or_obj
        raise ConfigError(
            f"{argument or self.kind}: expected one of {self.names()} or a custom object, "
            f"got {name_or_obj!r}"
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
