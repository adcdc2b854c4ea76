"""Smart albums: a refine session (text, liked, rejected, weights, filters, minimum score) saved by
name in SurrealDB. Its members are whatever the saved query finds above its minimum score at the
moment it is looked at, so photos indexed later join by themselves.

"New since the last visit" is kept as the album's ``seen`` list: the content hashes (first 16 hex
digits) of the members shown so far. Content, not path: a photo that is moved or renamed is not
new, a photo that arrives (or is edited) is.

The combined query vector is stored with the model that made it; after a model change it is made
again from the text and the liked and rejected photos (see ``webui.albums``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from surrealdb import RecordID

from .errors import UserError
from .store import QueryFailed, Store, now

TABLE = "album"
SEEN_DIGITS = 16
MAX_NAME = 200
WEIGHT_NAMES = ("text", "liked", "rejected")


class AlbumError(UserError):
    """An album request that cannot be done as asked (the message says why)."""


@dataclass
class Album:
    name: str
    text: str = ""
    liked: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    min_score: float = 0.2
    vector: np.ndarray | None = None
    model: str = ""
    seen: set[str] = field(default_factory=set)
    id: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    visited_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Album:
        return cls(
            id=row["id"].id,
            name=row["name"],
            text=row.get("text") or "",
            liked=list(row.get("liked") or []),
            rejected=list(row.get("rejected") or []),
            weights=dict(row.get("weights") or {}),
            filters=dict(row.get("filters") or {}),
            min_score=float(row["min_score"]),
            vector=np.frombuffer(row["vector"], dtype=np.float32).copy() if row.get("vector") else None,
            model=row.get("model") or "",
            seen=set(row.get("seen") or []),
            created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
            visited_at=row.get("visited_at"),
        )

    def content(self) -> dict[str, Any]:
        assert self.vector is not None, "an album is saved with its query vector"
        return {
            "name": self.name,
            "text": self.text,
            "liked": self.liked,
            "rejected": self.rejected,
            "weights": self.weights,
            "filters": self.filters,
            "min_score": float(self.min_score),
            "vector": np.asarray(self.vector, dtype=np.float32).tobytes(),
            "model": self.model,
            "seen": sorted(self.seen),
            "created_at": self.created_at or now(),
            "updated_at": now(),
            "visited_at": self.visited_at,
        }


def seen_key(content_hash: str | None) -> str:
    return (content_hash or "")[:SEEN_DIGITS]


def clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise AlbumError("an album needs a name")
    name = re.sub(r"\s+", " ", name).strip()
    if len(name) > MAX_NAME:
        raise AlbumError(f"an album name has at most {MAX_NAME} characters")
    return name


def _rid(album_id: str) -> RecordID:
    return RecordID(TABLE, album_id)


def _unique(exc: QueryFailed, name: str) -> AlbumError | QueryFailed:
    if "album_name" in str(exc) or "already contains" in str(exc):
        return AlbumError(f"there is already an album called {name!r}")
    return exc


async def list_albums(store: Store) -> list[Album]:
    rows = await store.first("SELECT * FROM album ORDER BY name")
    return [Album.from_row(row) for row in rows]


async def versions(store: Store) -> list[tuple[str, Any, Any]]:
    """Each album's id, last change and last visit: what tells a cache that albums changed,
    without reading their vectors and seen lists."""
    rows = await store.first("SELECT id, updated_at, visited_at FROM album ORDER BY id")
    return [(row["id"].id, row.get("updated_at"), row.get("visited_at")) for row in rows]


async def set_vector(store: Store, album_id: str, vector: np.ndarray, model: str) -> None:
    """Store the query vector made again for another model."""
    await store.transact(
        "UPDATE $id SET vector = $v, model = $m RETURN NONE",
        {"id": _rid(album_id), "v": np.asarray(vector, dtype=np.float32).tobytes(), "m": model},
    )


async def get_album(store: Store, album_id: str) -> Album | None:
    if not re.fullmatch(r"[0-9a-f]{16}", album_id):
        return None
    rows = await store.first("SELECT * FROM $id", {"id": _rid(album_id)})
    return Album.from_row(rows[0]) if rows else None


async def find_album(store: Store, name_or_id: str) -> Album:
    """By id, else by name (for the command line)."""
    album = await get_album(store, name_or_id)
    if album is None:
        rows = await store.first("SELECT * FROM album WHERE name = $n", {"n": name_or_id})
        album = Album.from_row(rows[0]) if rows else None
    if album is None:
        raise AlbumError(f"no album called {name_or_id!r} (see `image-search albums`)")
    return album


async def save_album(store: Store, album: Album) -> Album:
    """Create (no id yet) or replace an album; names are unique."""
    album.name = clean_name(album.name)
    if not album.id:
        album.id = secrets.token_hex(8)
    try:
        await store.transact(
            "UPSERT $id CONTENT $c RETURN NONE", {"id": _rid(album.id), "c": album.content()}
        )
    except QueryFailed as exc:
        raise _unique(exc, album.name) from None
    saved = await get_album(store, album.id)
    assert saved is not None
    return saved


async def rename_album(store: Store, album_id: str, name: str) -> Album:
    name = clean_name(name)
    try:
        rows = (
            await store.transact(
                "UPDATE $id SET name = $n, updated_at = time::now() RETURN AFTER",
                {"id": _rid(album_id), "n": name},
            )
        )[0]
    except QueryFailed as exc:
        raise _unique(exc, name) from None
    if not rows:
        raise AlbumError("no such album")
    return Album.from_row(rows[0])


async def delete_album(store: Store, album_id: str) -> bool:
    rows = (await store.transact("DELETE $id RETURN BEFORE", {"id": _rid(album_id)}))[0]
    return bool(rows)


async def mark_seen(store: Store, album_id: str, content_hashes: list[str | None]) -> None:
    """Add these members to what the album has shown; stamp the visit."""
    keys = sorted({seen_key(h) for h in content_hashes if h})
    await store.transact(
        "UPDATE $id SET seen = array::union(seen, $k), visited_at = time::now() RETURN NONE",
        {"id": _rid(album_id), "k": keys},
    )


def link_folder(folder: Path, paths: Sequence[str], roots: Sequence[str] = ()) -> int:
    """Fill a new (or empty) folder with symbolic links to ``paths``: the album as a folder any
    program can open. Two files with one name become "name.jpg" and "name (2).jpg". Nothing but
    the folder and its links is created; nothing is moved, copied or deleted.

    Refused: a relative path, a folder that holds anything, a folder inside a picture folder (the
    links would be indexed as photos of their own)."""
    if not folder.is_absolute():
        raise AlbumError(f"{folder}: give an absolute path for the export folder")
    real = os.path.realpath(folder)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            raise AlbumError(f"{folder} is inside the picture folder {root}: choose a folder outside it")
    try:
        if folder.exists() and any(folder.iterdir()):
            raise AlbumError(f"{folder} is not empty: choose a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AlbumError(f"cannot create {folder}: {exc.strerror or exc}") from None
    taken: set[str] = set()
    made = 0
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        name, n = stem + ext, 1
        while name.lower() in taken:
            n += 1
            name = f"{stem} ({n}){ext}"
        taken.add(name.lower())
        try:
            os.symlink(path, folder / name)
        except OSError as exc:
            raise AlbumError(f"cannot create a link in {folder}: {exc.strerror or exc}") from None
        made += 1
    return made
