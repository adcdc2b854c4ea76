"""What needs indexing: file references, the incremental rule ("unchanged since stored"), and
the progress and summary an index run reports."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..store import ImageRow, Store, image_key, path_fields

if TYPE_CHECKING:
    from ..pictures.imaging import Prepared


@dataclass(frozen=True)
class FileRef:
    path: str
    root: str

    @property
    def key(self) -> str:
        return image_key(self.path)


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    embedded: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None


@dataclass
class Summary:
    indexed: int = 0
    reused: int = 0
    unchanged: int = 0
    removed: int = 0
    offline: int = 0  # under folders that could not be read: kept, not searched
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (feeding.Stages)

    def add(self, other: Summary) -> None:
        self.indexed += other.indexed
        self.reused += other.reused
        self.unchanged += other.unchanged
        self.removed += other.removed
        self.offline += other.offline
        self.failed.extend(other.failed)
        for name, seconds in other.stages.items():
            self.stages[name] = round(self.stages.get(name, 0.0) + seconds, 2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "reused": self.reused,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "offline": self.offline,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "seconds": round(self.seconds, 3),
            "stages": self.stages,
        }


def _same_file(row: ImageRow | None, size: int, mtime_ns: int) -> bool:
    return row is not None and row["size"] == size and row["mtime_ns"] == mtime_ns


def unchanged(row: ImageRow | None, size: int, mtime_ns: int, model_id: str) -> bool:
    """Whether a stored row still describes the file: same size and mtime, and either embedded
    by this model (with its fingerprint) or failed (a failed file is retried only when it changes)."""
    if not _same_file(row, size, mtime_ns):
        return False
    assert row is not None
    if row.get("error") is not None:
        return True
    return row.get("model") == model_id and row.get("fingerprint") is not None


def needs_fingerprint_only(row: ImageRow | None, size: int, mtime_ns: int, model_id: str) -> bool:
    """An unchanged, embedded file stored before fingerprints existed: decoded again on the CPU
    for its fingerprint, its embedding reused (found by content hash), the model not run."""
    return (
        _same_file(row, size, mtime_ns)
        and row is not None
        and row.get("model") == model_id
        and row.get("fingerprint") is None
    )


def stat_all(paths: list[str]) -> list[os.stat_result | None]:
    out: list[os.stat_result | None] = []
    for path in paths:
        try:
            out.append(os.stat(path))
        except OSError:
            out.append(None)
    return out


def row_of(ref: FileRef, p: Prepared, stamp: Any) -> dict[str, Any]:
    """The row of one file as decoded, without its embedding (added by the caller)."""
    return {
        "key": ref.key,
        **path_fields(ref.path),
        "root": ref.root,
        "size": p.size,
        "mtime_ns": p.mtime_ns,
        "dev": p.dev,
        "ino": p.ino,
        "hash": p.hash,
        "width": p.width,
        "height": p.height,
        "taken_at": p.taken_at,
        "format": p.format,
        "fingerprint": p.fingerprint,
        "indexed_at": stamp,
        "embedding": None,
        "model": None,
        "error": p.error,
        "offline": False,
    }


PLAN_CHUNK = 2000


async def plan_files(
    store: Store, files: Sequence[FileRef], model_id: str, cpu_only: set[str], *, force: bool = False
) -> tuple[list[FileRef], int]:
    """The files that need work, and how many are unchanged since they were stored. Keys of files
    that need only their fingerprint (stored before fingerprints existed) are added to ``cpu_only``."""
    todo: list[FileRef] = []
    skipped = 0
    for start in range(0, len(files), PLAN_CHUNK):
        chunk = files[start : start + PLAN_CHUNK]
        rows = {} if force else await store.get([f.key for f in chunk])
        # stat() off the event loop: a reconcile plans 100k files, and under `serve` the same
        # loop answers web requests.
        stats = await asyncio.to_thread(stat_all, [ref.path for ref in chunk])
        for ref, st in zip(chunk, stats, strict=True):
            if st is None:
                todo.append(ref)  # prepare() records why it cannot be read
            elif unchanged(rows.get(ref.key), st.st_size, st.st_mtime_ns, model_id):
                skipped += 1
            else:
                if needs_fingerprint_only(rows.get(ref.key), st.st_size, st.st_mtime_ns, model_id):
                    cpu_only.add(ref.key)
                todo.append(ref)
    return todo, skipped
