"""Smart albums over HTTP: save a refine session by name, look at its current members (the new
ones first, marked), edit, rename, delete, export. Documented in the README's "Web API"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from image_search import albums as store_albums
from image_search.albums import Album, AlbumError, seen_key
from image_search.refine import EmptyQuery
from image_search.vectors import Query

from .api import (
    BadRequest,
    _ids,
    page_of,
    parse_filters,
    parse_min_score,
    path_list,
    query_vector,
    read_json,
    result,
    session_parts,
)
from .app import CONFIG, LIBRARY, SEARCHER, STORE
from .library import Library

MAX_MEMBERS = 10_000
DEFAULT_MIN_SCORE = 0.2
SUMMARY_TTL = 10.0


class Summaries:
    """Every album's member and new counts, for the album list and /api/status: recomputed when
    the library or an album changed, and at most every few seconds while photos stream in."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.at = 0.0
        self.value: dict[str, dict[str, int]] = {}
        self.lock = asyncio.Lock()


SUMMARIES = web.AppKey("album_summaries", Summaries)


def setup(app: web.Application) -> None:
    app[SUMMARIES] = Summaries()
    app.router.add_get("/api/albums", list_albums)
    app.router.add_post("/api/albums", create_album)
    app.router.add_get("/api/albums/{id}", get_album)
    app.router.add_put("/api/albums/{id}", update_album)
    app.router.add_patch("/api/albums/{id}", rename_album)
    app.router.add_delete("/api/albums/{id}", delete_album)
    app.router.add_post("/api/albums/{id}/seen", mark_seen)
    app.router.add_get("/api/albums/{id}/export", export_paths)
    app.router.add_post("/api/albums/{id}/export", export_links)


# -- members ----------------------------------------------------------------------------------


async def _vector(app: web.Application, album: Album) -> np.ndarray:
    """The album's query vector for the library's model: stored, or made again (model change)."""
    library = app[LIBRARY]
    if album.vector is not None and album.model == library.model_id:
        return album.vector
    present = lambda ids: [i for i in ids if i in library.index]  # noqa: E731
    try:
        vector = await query_vector(
            app, album.text, present(album.liked), present(album.rejected), album.weights
        )
    except (BadRequest, EmptyQuery):  # nothing of the session is left: it matches nothing
        return np.zeros(library.index.dim or 1, dtype=np.float32)
    album.vector, album.model = vector, library.model_id
    await store_albums.set_vector(app[STORE], album.id, vector, album.model)
    return vector


async def members(app: web.Application, album: Album) -> list[tuple[str, float]]:
    library = app[LIBRARY]
    if not len(library):
        return []
    return await members_of(library, album, await _vector(app, album), app[SEARCHER].submit)


async def members_of(
    library: Library,
    album: Album,
    vector: np.ndarray,
    search: Callable[[Query], Awaitable[list[tuple[str, float]]]],
) -> list[tuple[str, float]]:
    """The album's photos now: every match above its minimum score (within its filters), its
    liked photos whatever their score, never its rejected ones; best first."""
    allowed = library.mask(parse_filters({"filters": album.filters}), set(album.rejected))
    hits = await search(Query(vector, MAX_MEMBERS, allowed, album.min_score))
    found = {key for key, _ in hits}
    liked = [k for k in album.liked if k in library.index and k not in found]
    if liked:
        scores = library.index.vectors(liked) @ vector
        hits = sorted(hits + list(zip(liked, map(float, scores), strict=True)), key=lambda h: -h[1])
    return [(k, s) for k, s in hits if k in library.meta]


def _is_new(library: Library, album: Album, key: str) -> bool:
    return seen_key(library.meta[key].hash) not in album.seen


async def summaries(app: web.Application) -> dict[str, dict[str, int]]:
    cache = app[SUMMARIES]
    async with cache.lock:
        library = app[LIBRARY]
        key = (library.version, tuple(await store_albums.versions(app[STORE])))
        changed_albums = cache.key is None or key[1] != cache.key[1]
        if key != cache.key and (changed_albums or time.monotonic() - cache.at > SUMMARY_TTL):
            value = {}
            for album in await store_albums.list_albums(app[STORE]):
                hits = await members(app, album)
                value[album.id] = {
                    "count": len(hits),
                    "new": sum(_is_new(library, album, k) for k, _ in hits),
                }
            cache.key, cache.at, cache.value = key, time.monotonic(), value
        return cache.value


def _describe(app: web.Application, album: Album, counts: dict[str, int] | None = None) -> dict[str, Any]:
    library = app[LIBRARY]

    def pictures(ids: list[str]) -> list[dict[str, Any]]:
        return [result(k, 1.0, library.meta[k]) | {"score": None} for k in ids if k in library.meta]

    return {
        "id": album.id,
        "name": album.name,
        "text": album.text,
        "liked": pictures(album.liked),
        "rejected": pictures(album.rejected),
        "missing": sum(k not in library.meta for k in album.liked + album.rejected),
        "weights": album.weights,
        "filters": album.filters,
        "min_score": album.min_score,
        "created_at": album.created_at.isoformat() if album.created_at else None,
        "updated_at": album.updated_at.isoformat() if album.updated_at else None,
        "visited_at": album.visited_at.isoformat() if album.visited_at else None,
        **(counts or {}),
    }


# -- routes -----------------------------------------------------------------------------------


async def _album(request: web.Request) -> Album:
    album = await store_albums.get_album(request.app[STORE], request.match_info["id"])
    if album is None:
        raise web.HTTPNotFound(text="no such album")
    return album


async def _from_body(request: web.Request, body: dict[str, Any], album: Album) -> Album:
    """Fill an album from a request body: the same fields as /api/search, plus name."""
    text, liked, rejected, weights = session_parts(body)
    filters = body.get("filters") or {}
    parse_filters({"filters": filters})  # checked like a search's
    min_score = parse_min_score(body)
    album.text, album.liked, album.rejected, album.weights = text, liked, rejected, weights
    album.filters = filters
    album.min_score = DEFAULT_MIN_SCORE if min_score is None else min_score
    album.vector = await query_vector(request.app, text, liked, rejected, weights)
    album.model = request.app[LIBRARY].model_id
    return album


async def list_albums(request: web.Request) -> web.Response:
    counts = await summaries(request.app)
    albums = await store_albums.list_albums(request.app[STORE])
    out = []
    for album in albums:
        described = _describe(request.app, album, counts.get(album.id, {"count": 0, "new": 0}))
        described["cover"] = described["liked"][0]["thumbnail"] if described["liked"] else None
        out.append(described)
    return web.json_response({"albums": out})


async def create_album(request: web.Request) -> web.Response:
    body = await read_json(request)
    try:
        album = await _from_body(request, body, Album(name=store_albums.clean_name(body.get("name"))))
        # What matches at creation was just seen in the refine session: nothing is new yet.
        hits = await members(request.app, album)
        album.seen = {seen_key(request.app[LIBRARY].meta[k].hash) for k, _ in hits}
        album = await store_albums.save_album(request.app[STORE], album)
    except AlbumError as exc:
        raise _conflict_or_bad(exc) from None
    return web.json_response(_describe(request.app, album, {"count": len(hits), "new": 0}), status=201)


def _conflict_or_bad(exc: AlbumError) -> web.HTTPException:
    if "already an album" in str(exc):
        return web.HTTPConflict(text=str(exc))
    return BadRequest(str(exc))


async def get_album(request: web.Request) -> web.Response:
    """The album and a page of its members, new ones first (each marked ``new``)."""
    album = await _album(request)
    library = request.app[LIBRARY]
    limit, offset = page_of(request, 60, 500)
    hits = await members(request.app, album)
    fresh = {k for k, _ in hits if _is_new(library, album, k)}
    new = [(k, s) for k, s in hits if k in fresh]
    ordered = new + [(k, s) for k, s in hits if k not in fresh]
    page = ordered[offset : offset + limit]
    results = [
        result(k, s, library.meta[k]) | {"new": i + offset < len(new)} for i, (k, s) in enumerate(page)
    ]
    described = _describe(request.app, album, {"count": len(hits), "new": len(new)})
    return web.json_response(
        {
            **described,
            "results": results,
            "offset": offset,
            "limit": limit,
            "more": offset + limit < len(hits),
        }
    )


async def update_album(request: web.Request) -> web.Response:
    """Replace the saved session (an edit from the refine page); the name may change too."""
    album = await _album(request)
    body = await read_json(request)
    try:
        if "name" in body:
            album.name = store_albums.clean_name(body["name"])
        album = await _from_body(request, body, album)
        hits = await members(request.app, album)
        # The edit was made looking at these: they are not news.
        album.seen |= {seen_key(request.app[LIBRARY].meta[k].hash) for k, _ in hits}
        album = await store_albums.save_album(request.app[STORE], album)
    except AlbumError as exc:
        raise _conflict_or_bad(exc) from None
    return web.json_response(_describe(request.app, album, {"count": len(hits), "new": 0}))


async def rename_album(request: web.Request) -> web.Response:
    album = await _album(request)
    body = await read_json(request)
    try:
        album = await store_albums.rename_album(request.app[STORE], album.id, str(body.get("name") or ""))
    except AlbumError as exc:
        raise _conflict_or_bad(exc) from None
    return web.json_response(_describe(request.app, album))


async def delete_album(request: web.Request) -> web.Response:
    await _album(request)
    await store_albums.delete_album(request.app[STORE], request.match_info["id"])
    return web.Response(status=204)


async def mark_seen(request: web.Request) -> web.Response:
    """The page showed these members as new: they are not new at the next visit."""
    album = await _album(request)
    ids = _ids(await read_json(request), "ids")
    library = request.app[LIBRARY]
    await store_albums.mark_seen(
        request.app[STORE], album.id, [library.meta[k].hash for k in ids if k in library.meta]
    )
    return web.json_response({"seen": len(ids)})


async def _member_paths(request: web.Request) -> tuple[Album, list[str]]:
    album = await _album(request)
    library = request.app[LIBRARY]
    return album, [library.meta[k].path for k, _ in await members(request.app, album)]


async def export_paths(request: web.Request) -> web.Response:
    """The members' paths as a text file, one per line (``?sep=nul`` for NUL-separated)."""
    album, paths = await _member_paths(request)
    return path_list(request, paths, album.name)


async def export_links(request: web.Request) -> web.Response:
    """A folder of symbolic links to the members: ``{"folder": "/absolute/new/or/empty/folder"}``.
    Only links are created; the folder must be outside the picture folders."""
    body = await read_json(request)
    folder = body.get("folder")
    if not isinstance(folder, str) or not folder.strip():
        raise BadRequest("folder must be an absolute path")
    _, paths = await _member_paths(request)
    # The configured picture folders and those the library holds (a daemon elsewhere may watch them).
    roots = sorted({str(r) for r in request.app[CONFIG].roots} | set(request.app[LIBRARY].folders()))
    target = folder.replace("~", str(Path.home()), 1) if folder.startswith("~/") else folder
    try:
        made = await asyncio.to_thread(store_albums.link_folder, Path(target), paths, roots)
    except AlbumError as exc:
        raise BadRequest(str(exc)) from None
    return web.json_response({"folder": target, "links": made})
