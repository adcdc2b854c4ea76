"""Smart albums over HTTP: save a refine session by name, look at its current members (the new
ones first, marked), edit, rename, delete, export. Documented in the README's "Web API"."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from image_search.search import Album, Filters, albums, session_vector

from . import validate
from .keys import CONFIG, DEFAULTS, LIBRARY, SEARCHER, SECURITY, STORE, SUMMARIES, TEXTS
from .responses import path_list, result

SUMMARY_TTL = 10.0


async def members(app: web.Application, album: Album) -> list[tuple[str, float]]:
    library = app[LIBRARY]
    vector = await albums.album_vector(app[STORE], library, app[TEXTS], album)
    return await albums.members(library, album, vector, app[SEARCHER].submit)


async def summaries(app: web.Application) -> dict[str, dict[str, int]]:
    """Every album's member and new counts (cached, see :class:`AlbumSummaries`)."""
    cache = app[SUMMARIES]
    async with cache.lock:
        library = app[LIBRARY]
        key = (library.version, tuple(await app[STORE].album_versions()))
        changed_albums = cache.key is None or key[1] != cache.key[1]
        if key != cache.key and (changed_albums or time.monotonic() - cache.at > SUMMARY_TTL):
            value, best = {}, {}
            for album in await albums.list_albums(app[STORE]):
                hits = await members(app, album)
                value[album.id] = {
                    "count": len(hits),
                    "new": sum(albums.is_new(library, album, k) for k, _ in hits),
                }
                if hits:
                    best[album.id] = hits[0][0]
            cache.key, cache.at, cache.value, cache.best = key, time.monotonic(), value, best
        return cache.value


def _describe(app: web.Application, album: Album, counts: dict[str, int] | None = None) -> dict[str, Any]:
    library = app[LIBRARY]

    def pictures(ids: list[str]) -> list[dict[str, Any]]:
        return [result(k, None, library.meta[k], sign=app[SECURITY].sign) for k in ids if k in library.meta]

    stamp = lambda t: t.isoformat() if t else None  # noqa: E731
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
        "created_at": stamp(album.created_at),
        "updated_at": stamp(album.updated_at),
        "visited_at": stamp(album.visited_at),
        **(counts or {}),
    }


async def _album(request: web.Request) -> Album:
    album = await albums.get_album(request.app[STORE], request.match_info["id"])
    if album is None:
        raise web.HTTPNotFound(text="no such album")
    return album


async def _from_body(request: web.Request, body: dict[str, Any], album: Album) -> Album:
    """Fill an album from a request body: the same fields as /api/search, plus name."""
    session = validate.session(body)
    filters = Filters.clean(body.get("filters"))  # checked like a search's, unknown keys dropped
    min_score = validate.min_score(body)
    album.text, album.liked, album.rejected, album.weights = (
        session.text,
        session.liked,
        session.rejected,
        session.weights,
    )
    album.filters = filters
    album.min_score = request.app[DEFAULTS].album_min_score if min_score is None else min_score
    album.vector = await session_vector(request.app[LIBRARY], request.app[TEXTS], session)
    album.model = request.app[LIBRARY].model_id
    return album


async def _save_seen(request: web.Request, album: Album) -> web.Response:
    """Save an album made or edited in the refine page: what matches now was just looked at, so
    none of it is new."""
    hits = await members(request.app, album)
    library = request.app[LIBRARY]
    album.seen |= {albums.seen_key(library.meta[k].hash) for k, _ in hits}
    album = await albums.save_album(request.app[STORE], album)
    created = request.method == "POST"
    return web.json_response(
        _describe(request.app, album, {"count": len(hits), "new": 0}), status=201 if created else 200
    )


async def list_albums(request: web.Request) -> web.Response:
    counts = await summaries(request.app)
    out = []
    for album in await albums.list_albums(request.app[STORE]):
        described = _describe(request.app, album, counts.get(album.id, {"count": 0, "new": 0}))
        described["cover"] = described["liked"][0]["thumbnail"] if described["liked"] else None
        best = request.app[SUMMARIES].best.get(album.id)  # counted with its members, not searched again
        if described["cover"] is None and best in request.app[LIBRARY].meta:  # no liked photo
            meta = request.app[LIBRARY].meta[best]
            described["cover"] = result(best, None, meta, sign=request.app[SECURITY].sign)["thumbnail"]
        out.append(described)
    return web.json_response({"albums": out})


async def create_album(request: web.Request) -> web.Response:
    body = await validate.json_body(request)
    album = await _from_body(request, body, Album(name=albums.clean_name(body.get("name"))))
    return await _save_seen(request, album)


async def update_album(request: web.Request) -> web.Response:
    """Replace the saved session (an edit from the refine page); the name may change too."""
    album = await _album(request)
    body = await validate.json_body(request)
    if "name" in body:
        album.name = albums.clean_name(body["name"])
    return await _save_seen(request, await _from_body(request, body, album))


async def get_album(request: web.Request) -> web.Response:
    """The album and a page of its members, new ones first (each marked ``new``); with
    ``?order=score`` best first, as the command line lists them."""
    album = await _album(request)
    library = request.app[LIBRARY]
    limit, offset = validate.page(request, 60, 500)
    by_score = validate.choice(request, "order", ("new", "score")) == "score"
    hits = await members(request.app, album)
    fresh = {k for k, _ in hits if albums.is_new(library, album, k)}
    new = [(k, s) for k, s in hits if k in fresh]
    ordered = hits if by_score else new + [(k, s) for k, s in hits if k not in fresh]
    results = [
        result(k, s, library.meta[k], library.pair(k), request.app[SECURITY].sign) | {"new": k in fresh}
        for k, s in ordered[offset : offset + limit]
    ]
    described = _describe(request.app, album, {"count": len(hits), "new": len(new)})
    more = offset + limit < len(hits)
    return web.json_response(
        {**described, "results": results, "offset": offset, "limit": limit, "more": more}
    )


async def rename_album(request: web.Request) -> web.Response:
    album = await _album(request)
    body = await validate.json_body(request)
    album = await albums.rename_album(request.app[STORE], album.id, str(body.get("name") or ""))
    return web.json_response(_describe(request.app, album))


async def delete_album(request: web.Request) -> web.Response:
    await _album(request)
    await albums.delete_album(request.app[STORE], request.match_info["id"])
    return web.Response(status=204)


async def mark_seen(request: web.Request) -> web.Response:
    """The page showed these members as new: they are not new at the next visit."""
    album = await _album(request)
    ids = validate.ids(await validate.json_body(request), "ids")
    library = request.app[LIBRARY]
    await albums.mark_seen(
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
    """A folder of symbolic links to the members: ``{"folder": "name"}``, made inside the export
    folder (``export_dir``). Only links are created; never inside a picture folder."""
    folder = validate.folder(await validate.json_body(request))
    _, paths = await _member_paths(request)
    # The configured picture folders and those the library holds (a daemon elsewhere may watch them).
    roots = sorted({str(r) for r in request.app[CONFIG].roots} | set(request.app[LIBRARY].folders()))
    base = request.app[CONFIG].export_dir
    target, _ = albums.export_target(base, folder)
    made = await asyncio.to_thread(albums.link_folder, Path(folder), paths, roots, base)
    return web.json_response({"folder": str(target), "links": made})
