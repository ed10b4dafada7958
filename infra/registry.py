"""Registries: the one place an extension point (filter, suite, judge, cluster profile...) is listed.

```python
FILTERS = Registry("datagen filter")

@FILTERS.register("gopher_quality")
def _gopher(**kwargs): ...

FILTERS.get("gopher_quality")        # the registered object
FILTERS.get("my_pkg.filters:MyOne")  # a user's own class, imported by "module:attribute"
```

Names are unique; registering a name twice is an error (two modules would silently fight over it).
``module:attribute`` lookups import the module; they only run code the user's own config names,
never code from a data or model folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Registry", "RegistryError"]


class RegistryError(KeyError):
    """An unknown name; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""


class Registry:
    """Named objects of one kind.

    Args:
        kind: what the entries are, for messages ("evalkit suite").
        allow_import: accept ``"module:attribute"`` names for objects outside the registry.
        builtins: modules whose import registers the built-in entries, in registration order. They
            are imported at the registry's first read (a lookup, ``in``, iteration), not when the
            registry is created: a config module can then check names against a registry whose
            entries import that config module, without an import cycle.
    """

    def __init__(self, kind: str, allow_import: bool = False, builtins: tuple[str, ...] = ()):
        self.kind = kind
        self.allow_import = allow_import
        self.builtins = tuple(builtins)
        self._items: dict[str, Any] = {}
        self._loaded = not self.builtins
        self._loading = False

    def _load(self) -> None:
        # _loading: a built-in module that reads the registry while it is being imported gets the
        # entries so far instead of importing itself again
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for module in self.builtins:
                importlib.import_module(module)
            self._loaded = True  # only after success: a failed import is raised again on the next read
        finally:
            self._loading = False

    def register(self, name: str, obj: Any = None) -> Callable[[Any], Any] | Any:
        """``REG.register("x", obj)`` or ``@REG.register("x")`` above a function or class."""

        def add(o):
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items or (self.allow_import and ":" in str(name))

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def names(self) -> list[str]:
        self._load()
        return list(self._items)

    def get(self, name: str) -> Any:
        self._load()
        if name in self._items:
            return self._items[name]
        if self.allow_import and ":" in name:
            module, _, attr = name.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as e:
                raise RegistryError(f"{self.kind} {name!r}: cannot import it ({e})") from None
            return obj
        hint = " or 'module:Class'" if self.allow_import else ""
        raise RegistryError(f"unknown {self.kind} {name!r} (known: {', '.join(self._items)}{hint})")
