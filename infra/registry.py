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
from typing import Any, Callable, Iterator

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
    """

    def __init__(self, kind: str, allow_import: bool = False):
        self.kind = kind
        self.allow_import = allow_import
        self._items: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Callable[[Any], Any] | Any:
        """``REG.register("x", obj)`` or ``@REG.register("x")`` above a function or class."""
        def add(o):
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def __contains__(self, name: str) -> bool:
        return name in self._items or (self.allow_import and ":" in str(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def get(self, name: str) -> Any:
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
