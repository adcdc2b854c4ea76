"""RAW + JPEG pairs of one shot, stacked the way photographers' tools do: a camera set to
RAW+JPEG writes ``DSC_0001.NEF`` and ``DSC_0001.JPG`` side by side. Both stay indexed; searches
show the shot once, as the file every browser shows (the JPEG, or a HEIC/TIFF beside the RAW),
with the RAW named as its pair.

A stack is the files of one folder whose names differ only in the extension (case ignored), of
which at least one is a RAW and one is not. Kept in step with the library incrementally: a change
re-examines only the stacks of the keys it touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Protocol

from ..pictures.raw import NAMES

RAW_FORMATS = frozenset(name[1:].upper() for name in NAMES)
# Which file of a stack is shown: the one a browser shows as it is first.
SHOWN_FIRST = {"JPEG": 0, "MPO": 0, "HEIF": 1, "AVIF": 1, "PNG": 2, "WEBP": 2, "TIFF": 3}


class HasPath(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def format(self) -> str | None: ...


def is_raw_format(format: str | None) -> bool:
    return (format or "").upper() in RAW_FORMATS


class Stacks:
    """``hidden``: the RAW files that a search does not return on their own; ``pairs``: for the
    file shown, the keys of the RAW files of its shot."""

    def __init__(self) -> None:
        self.hidden: set[str] = set()
        self.pairs: dict[str, list[str]] = {}
        self._groups: dict[tuple[str, str], set[str]] = {}
        self._group_of: dict[str, tuple[str, str]] = {}
        # No RAW file in the library: no stack, and nothing grouped until the first RAW comes
        # (grouping a million names costs ~6 s at start on 2 cores).
        self._idle = False

    def rebuild(self, meta: Mapping[str, HasPath]) -> None:
        """From scratch, in one pass (the library's load: 100k photos)."""
        self._idle = not any(is_raw_format(item.format) for item in meta.values())
        if self._idle:
            self.hidden, self.pairs, self._groups, self._group_of = set(), {}, {}, {}
            return
        groups: dict[tuple[str, str], set[str]] = {}
        group_of: dict[str, tuple[str, str]] = {}
        for key, item in meta.items():
            group = _group(item.path)
            group_of[key] = group
            members = groups.get(group)
            if members is None:
                groups[group] = {key}
            else:
                members.add(key)
        self.hidden, self.pairs, self._groups, self._group_of = set(), {}, groups, group_of
        for group, members in groups.items():
            if len(members) > 1:
                self._restack(group, meta)

    def changed(self, meta: Mapping[str, HasPath], keys: Iterable[str]) -> None:
        """These keys were added, updated (perhaps moved) or removed (absent from ``meta``)."""
        if self._idle:
            if any(key in meta and is_raw_format(meta[key].format) for key in keys):
                self.rebuild(meta)  # the first RAW: group everything once
            return
        touched: set[tuple[str, str]] = set()
        for key in keys:
            old = self._group_of.pop(key, None)
            if old is not None:
                self._groups[old].discard(key)
                touched.add(old)
            self.hidden.discard(key)
            self.pairs.pop(key, None)
            item = meta.get(key)
            if item is not None:
                group = _group(item.path)
                self._groups.setdefault(group, set()).add(key)
                self._group_of[key] = group
                touched.add(group)
        for group in touched:
            self._restack(group, meta)

    def _restack(self, group: tuple[str, str], meta: Mapping[str, HasPath]) -> None:
        members = self._groups.get(group, set())
        if not members:
            self._groups.pop(group, None)
            return
        for key in members:
            self.hidden.discard(key)
            self.pairs.pop(key, None)
        raws = sorted(k for k in members if is_raw_format(meta[k].format))
        shown = sorted(
            (k for k in members if not is_raw_format(meta[k].format)),
            key=lambda k: (SHOWN_FIRST.get((meta[k].format or "").upper(), 9), meta[k].path),
        )
        if raws and shown:
            self.hidden.update(raws)
            self.pairs[shown[0]] = raws


def _group(path: str) -> tuple[str, str]:
    """(folder, name without its extension, lower-cased): what the files of one shot share."""
    folder, _, name = path.rpartition(os.sep)
    stem, dot, _ = name.rpartition(".")
    return folder, (stem if dot and stem else name).lower()
