"""Name -> class registries. An unknown name raises an error listing the valid ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to classes (or factories) of one kind.

    >>> PRIORS = Registry("noise prior")
    >>> @PRIORS.register("independent")
    ... class Independent: ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name`."""

        def wrap(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return wrap

    def unregister(self, name: str) -> T:
        """Remove the entry called `name` and return it (e.g. a kind a test registered)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry called `name`; a ValueError that lists the valid names if there is none."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(repr(n) for n in sorted(self._entries))
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
