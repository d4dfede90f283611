"""A name -> component registry shared by advantage estimators, policy losses, prompt templates
and synthetic tasks.

Every entry of one registry has the same signature (a typed alias declared beside the
registry), so the trainer looks a component up by the name in its config and calls it
without special cases.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named components of one kind.

    ``kind`` is used in error messages ("unknown advantage estimator 'x'; valid: ...").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``fn`` under ``name``; registering a name twice is an error."""

        def decorate(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return decorate

    def get(self, name: str) -> T:
        """The component called ``name``; unknown names raise ``KeyError`` listing valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
