"""Name -> class registries for plug-ins built from keyword parameters (detectors, attacks).

Shared by :mod:`sanitize.detect` and :mod:`sanitize.attacks`: both register classes whose
``__init__`` takes keyword-only parameters and that validate them in ``_check_params``.
"""

from __future__ import annotations

import inspect
from typing import Any, Generic, TypeVar

from sanitize.errors import ConfigError

T = TypeVar("T")


def keyword_params(cls: type) -> list[str]:
    """Names of the keyword-only parameters of ``cls.__init__``, in declaration order."""
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


class Registry(Generic[T]):
    """Classes of one ``kind`` ("detector", "attack") by their ``name`` attribute."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
        known = self._classes.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.kind} name {name!r} is taken by {known.__qualname__}")
        self._classes[name] = cls
        return cls

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._classes))

    def lookup(self, name: str) -> type[T]:
        """The class registered as ``name``; ConfigError listing the known names otherwise."""
        cls = self._classes.get(name)
        if cls is None:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return cls

    def build(self, name: str, **params: Any) -> T:
        """An instance of the class registered as ``name``, its parameters checked at once."""
        cls = self.lookup(name)
        accepted = keyword_params(cls)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ConfigError(
                f"{self.kind} {name!r} has no parameter(s) {unknown}; known: {', '.join(accepted)}"
            )
        instance = cls(**params)
        instance._check_params()
        return instance
