"""A sub-package's face: the names the shells use, each loaded from its module on first use.

Importing one module of a sub-package runs the sub-package's ``__init__`` first; an ``__init__``
that imported its modules would load torch for a caller that wanted ``families`` (the command
line's ``status``) and into the decoding workers' fork server (which must stay without torch).
So an ``__init__`` imports its names only for type checkers (``if TYPE_CHECKING:``), and
otherwise gets its ``__getattr__`` (PEP 562) and ``__all__`` from :func:`face`;
``tests/test_layering.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def face(package: str, **modules: tuple[str, ...]) -> tuple[Callable[[str], Any], list[str]]:
    """The package's ``__getattr__`` and ``__all__``: each keyword names a module and the names
    it offers (the module's own name offers the whole module, where a shell uses it as a
    namespace)."""
    owner = {name: module for module, names in modules.items() for name in names}

    def load(name: str) -> Any:
        try:
            module = owner[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        loaded = importlib.import_module(f"{package}.{module}")
        value = loaded if name == module else getattr(loaded, name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return load, sorted(owner)
