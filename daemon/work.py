"""The daemon's typed work items: what the intake makes of watchdog events, settled files and
timers, and what the applier carries out, one at a time."""

from __future__ import annotations

from dataclasses import dataclass, field

from image_search.indexing import FileRef


@dataclass
class IndexFiles:
    """New or changed files that have settled (complete on disk)."""

    files: list[FileRef]


@dataclass(frozen=True)
class Delete:
    path: str
    is_dir: bool = False


@dataclass(frozen=True)
class Move:
    src: str
    dest: str
    is_dir: bool = False


@dataclass
class Reconcile:
    """Compare folders with the database (all roots when ``roots`` is empty)."""

    roots: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Calibrate:
    """Measure the near-duplicate threshold once the library has enough photos (after indexing,
    as an item of its own: its failure or its time is not the indexing's)."""


Work = IndexFiles | Delete | Move | Reconcile | Calibrate
