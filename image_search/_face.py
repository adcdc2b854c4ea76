"""A sub-package's face: the names the shells use, each loaded from its module on first use.

Importing one module of a sub-package runs the sub-package's ``__init__`` first; an ``__init__``
that imported its modules would load torch for a caller that wanted ``families`` (the command
line's ``status``) and into the decoding workers' fork server (which must stay without torch).
So an ``__init__`` names its modules in a table and :func:`lazy` loads them when asked (PEP 562);
the same names are imported under ``TYPE_CHECKING`` for readers and type checkers, and
``tests/test_layering.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """The package's ``__getattr__``: ``names`` maps each name to the module that defines it, or
    a module's name to itself where a shell uses the whole module as a namespace."""

    def load(name: str) -> Any:
        try:
            module = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        loaded = importlib.import_module(f"{package}.{module}")
        value = loaded if name == module else getattr(loaded, name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return load
