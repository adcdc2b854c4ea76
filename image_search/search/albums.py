"""Smart albums: a refine session (text, liked, rejected, weights, filters, minimum score) saved by
name. Its members are whatever the saved query finds above its minimum score at the moment it is
looked at, so photos indexed later join by themselves.

"New since the last visit" is kept as the album's ``seen`` list: the content hashes (first 16 hex
digits) of the members shown so far. Content, not path: a photo that is moved or renamed is not
new, a photo that arrives (or is edited) is.

The combined query vector is stored with the model that made it; after a model change it is made
again from the text and the liked and rejected photos (:func:`album_vector`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnknownImage, UserError
from ..pictures.scan import is_under
from ..store import AlbumConflict, AlbumRow, Store, key_of, now
from .facts import Filters
from .library import Library
from .queries import Session, TextQueries, session_vector
from .refine import EmptyQuery
from .vectors import Query

SEEN_DIGITS = 16
MAX_NAME = 200
MAX_MEMBERS = 10_000
DEFAULT_MIN_SCORE = 0.2

Search = Callable[[Query], Awaitable[list[tuple[str, float]]]]


class AlbumError(UserError):
    """An album request that cannot be done as asked (the message says why)."""


class AlbumNameTaken(AlbumError):
    """Another album has this name (409 on the web)."""


@dataclass
class Album:
    name: str
    text: str = ""
    liked: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    min_score: float = DEFAULT_MIN_SCORE
    vector: np.ndarray | None = None
    model: str = ""
    seen: set[str] = field(default_factory=set)
    id: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    visited_at: dt.datetime | None = None

    @property
    def session(self) -> Session:
        return Session(self.text, list(self.liked), list(self.rejected), dict(self.weights))

    @classmethod
    def from_row(cls, row: AlbumRow) -> Album:
        return cls(
            id=key_of(row),
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


# -- saved albums -------------------------------------------------------------------------------


async def list_albums(store: Store) -> list[Album]:
    return [Album.from_row(row) for row in await store.albums()]


async def get_album(store: Store, album_id: str) -> Album | None:
    if not re.fullmatch(r"[0-9a-f]{16}", album_id):
        return None
    row = await store.album(album_id)
    return Album.from_row(row) if row else None


async def find_album(store: Store, name_or_id: str) -> Album:
    """By id, else by name (for the command line)."""
    album = await get_album(store, name_or_id)
    if album is None:
        row = await store.album_named(name_or_id)
        album = Album.from_row(row) if row else None
    if album is None:
        raise AlbumError(f"no album called {name_or_id!r} (see `image-search albums`)")
    return album


async def save_album(store: Store, album: Album) -> Album:
    """Create (no id yet) or replace an album; names are unique."""
    album.name = clean_name(album.name)
    if not album.id:
        album.id = secrets.token_hex(8)
    try:
        await store.put_album(album.id, album.content())
    except AlbumConflict:
        raise AlbumNameTaken(f"there is already an album called {album.name!r}") from None
    saved = await get_album(store, album.id)
    assert saved is not None
    return saved


async def rename_album(store: Store, album_id: str, name: str) -> Album:
    name = clean_name(name)
    try:
        row = await store.rename_album(album_id, name)
    except AlbumConflict:
        raise AlbumNameTaken(f"there is already an album called {name!r}") from None
    if row is None:
        raise AlbumError("no such album")
    return Album.from_row(row)


async def delete_album(store: Store, album_id: str) -> bool:
    return await store.delete_album(album_id)


async def mark_seen(store: Store, album_id: str, content_hashes: list[str | None]) -> None:
    """Add these members to what the album has shown; stamp the visit."""
    await store.mark_album_seen(album_id, sorted({seen_key(h) for h in content_hashes if h}))


# -- members ------------------------------------------------------------------------------------


async def album_vector(store: Store, library: Library, texts: TextQueries | None, album: Album) -> np.ndarray:
    """The album's query vector for the library's model: stored, or made again after a model
    change from its text and the example photos still present (and stored)."""
    if album.vector is not None and album.model == library.model_id:
        return album.vector
    if texts is None:
        raise AlbumError(
            f"album {album.name!r} was saved with model {album.model!r}: open it once in the web UI "
            "to make its search again with this model"
        )
    session = album.session
    session.liked = [i for i in session.liked if i in library.index]
    session.rejected = [i for i in session.rejected if i in library.index]
    try:
        vector = await session_vector(library, texts, session)
    except (UnknownImage, EmptyQuery):  # nothing of the session is left: it matches nothing
        return np.zeros(library.index.dim or 1, dtype=np.float32)
    album.vector, album.model = vector, library.model_id
    await store.set_album_vector(album.id, np.asarray(vector, dtype=np.float32).tobytes(), album.model)
    return vector


async def members(
    library: Library, album: Album, vector: np.ndarray, search: Search
) -> list[tuple[str, float]]:
    """The album's photos now: every match above its minimum score (within its filters), its
    liked photos whatever their score, never its rejected ones; best first (MAX_MEMBERS at most)."""
    if not len(library):
        return []
    allowed = library.mask(Filters.parse(album.filters), set(album.rejected))
    hits = await search(Query(vector, MAX_MEMBERS, allowed, album.min_score))
    found = {key for key, _ in hits}
    liked = [k for k in album.liked if k in library.index and k not in found]
    if liked:
        scores = library.index.vectors(liked) @ vector
        hits = sorted(hits + list(zip(liked, map(float, scores), strict=True)), key=lambda h: -h[1])
    return [(k, s) for k, s in hits if k in library.meta]


def is_new(library: Library, album: Album, key: str) -> bool:
    return seen_key(library.meta[key].hash) not in album.seen


def direct_search(library: Library) -> Search:
    """A search on the calling thread, for the command line (the web batches its searches)."""

    async def search(query: Query) -> list[tuple[str, float]]:
        return library.index.search_many([query])[0]

    return search


# -- export -------------------------------------------------------------------------------------


def export_target(base: Path, folder: str) -> tuple[Path, list[str]]:
    """Where the web UI may create an album folder: a name (or a relative or absolute path)
    inside ``base``. Returns the folder and its parts below ``base``; :class:`AlbumError` for
    anything that would leave it."""
    given = Path(folder)
    if given.is_absolute():
        if not is_under(os.path.normpath(given), os.path.normpath(base)):
            raise AlbumError(f"album folders are made inside {base}: give a name, or a path inside it")
        given = given.relative_to(base)
    parts = [p for p in given.parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise AlbumError(f"give a folder name inside {base}")
    return base.joinpath(*parts), parts


def link_folder(
    folder: Path, paths: Sequence[str], roots: Sequence[str] = (), base: Path | None = None
) -> int:
    """Fill a new (or empty) folder with symbolic links to ``paths``: the album as a folder any
    program can open. Two files with one name become "name.jpg" and "name (2).jpg". Nothing but
    the folder and its links is created; nothing is moved, copied or deleted.

    With ``base`` (the web UI's export folder) the folder must lie inside it. Each level is made
    and opened without following symbolic links, and the links are made in the opened folder, so
    a link swapped in meanwhile cannot send them elsewhere. Refused: a relative path without a
    base, a folder that holds anything, a folder inside a picture folder (the links would be
    indexed as photos of their own), more than MAX_LINKS photos."""
    if base is None:
        if not folder.is_absolute():
            raise AlbumError(f"{folder}: give an absolute path for the export folder")
        base, parts = folder.parent, [folder.name]
    else:
        folder, parts = export_target(base, str(folder))
    if len(paths) > MAX_LINKS:
        raise AlbumError(f"an export holds at most {MAX_LINKS:,} photos ({len(paths):,} in this album)")
    for root in roots:
        if is_under(str(folder), root, real=True):
            raise AlbumError(f"{folder} is inside the picture folder {root}: choose a folder outside it")
    try:
        fd = _open_folder(base, parts)
    except OSError as exc:
        raise AlbumError(f"cannot create {folder}: {exc.strerror or exc}") from None
    try:
        if os.listdir(fd):
            raise AlbumError(f"{folder} is not empty: choose a new or empty folder")
        return _link_all(fd, folder, paths)
    finally:
        os.close(fd)


MAX_LINKS = MAX_MEMBERS


def _open_folder(base: Path, parts: list[str]) -> int:
    """Make ``base/parts...`` level by level (private to this user) and open the last level,
    never following a symbolic link below ``base``."""
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(os.path.realpath(base), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _link_all(fd: int, folder: Path, paths: Sequence[str]) -> int:
    taken: set[str] = set()
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        name, n = stem + ext, 1
        while name.lower() in taken:
            n += 1
            name = f"{stem} ({n}){ext}"
        taken.add(name.lower())
        try:
            os.symlink(path, name, dir_fd=fd)
        except OSError as exc:
            raise AlbumError(f"cannot create a link in {folder}: {exc.strerror or exc}") from None
    return len(taken)
