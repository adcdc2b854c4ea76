"""What needs indexing: file references, the incremental rule ("unchanged since stored"), and
the progress and summary an index run reports."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .store import ImageRow, image_key, path_fields

if TYPE_CHECKING:
    from .imaging import Prepared


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

    def add(self, other: Summary) -> None:
        self.indexed += other.indexed
        self.reused += other.reused
        self.unchanged += other.unchanged
        self.removed += other.removed
        self.offline += other.offline
        self.failed.extend(other.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "reused": self.reused,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "offline": self.offline,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "seconds": round(self.seconds, 3),
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
