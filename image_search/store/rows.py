"""The rows the store hands out, typed, and the small pure helpers that make and read them."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
from surrealdb import RecordID

IMAGE_TABLE = "image"
ALBUM_TABLE = "album"
EMBED_DTYPE = np.float16

# Every column of an image row but the embedding: what listings and the indexer's plan read.
FACTS = (
    "id, path, path_bytes, root, size, mtime_ns, dev, ino, hash, width, height, taken_at, format, model, "
    "error, offline, indexed_at, fingerprint"
)
ROW_FIELDS = (
    "path",
    "path_bytes",
    "root",
    "size",
    "mtime_ns",
    "dev",
    "ino",
    "hash",
    "width",
    "height",
    "taken_at",
    "format",
    "fingerprint",
    "embedding",
    "model",
    "indexed_at",
    "error",
    "offline",
)
# The one definition of "searchable": embedded by the model in use, on a folder that is present.
SEARCHABLE = "model = $m AND embedding != NONE AND offline = false"


class ImageRow(TypedDict, total=False):
    """One photo (or a failed file): ``image:KEY``, KEY = :func:`image_key` of its path.
    Rows being written carry ``key`` instead of ``id``."""

    id: RecordID
    key: str
    path: str
    path_bytes: bytes | None
    root: str
    size: int
    mtime_ns: int
    dev: int | None  # the file's device and inode when it was read (schema 5)
    ino: int | None
    hash: str | None
    width: int | None
    height: int | None
    taken_at: dt.datetime | None
    format: str | None
    fingerprint: bytes | None
    embedding: bytes | None
    model: str | None
    indexed_at: dt.datetime
    error: str | None
    offline: bool


class AlbumRow(TypedDict, total=False):
    """A saved refine session (see :mod:`image_search.search.albums`)."""

    id: RecordID
    name: str
    text: str
    liked: list[str]
    rejected: list[str]
    weights: dict[str, float]
    filters: dict[str, Any]
    min_score: float
    vector: bytes
    model: str
    seen: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    visited_at: dt.datetime | None


@dataclass
class Counts:
    indexed: int
    failed: int
    offline: int
    total: int


def image_key(path: str | os.PathLike[str]) -> str:
    """The record key for a path: BLAKE2b-128 of its bytes, hex (safe in URLs, any file name)."""
    return hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()


def record_id(key: str, table: str = IMAGE_TABLE) -> RecordID:
    return RecordID(table, key)


def key_of(row: ImageRow | AlbumRow) -> str:
    return str(row["id"].id)


def path_fields(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``path`` as text; a name that is not UTF-8 keeps its exact bytes in ``path_bytes``."""
    raw = os.fsencode(path)
    try:
        return {"path": raw.decode("utf-8"), "path_bytes": None}
    except UnicodeDecodeError:
        return {"path": raw.decode("utf-8", "replace"), "path_bytes": raw}


def real_path(row: ImageRow | dict[str, Any]) -> str:
    raw = row.get("path_bytes")
    return os.fsdecode(raw) if raw else str(row["path"])


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=EMBED_DTYPE).tobytes()


def from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=EMBED_DTYPE)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
