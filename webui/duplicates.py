"""Near-duplicate groups over HTTP, for the review page and its export. Nothing here touches a
user's files: the export is a list of paths for the user to act on."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from image_search.duplicates import Grouping, Settings, group, keep_first

from .api import BadRequest, page_of, path_list, result
from .app import CONFIG, LIBRARY
from .library import Library

MAX_GROUPS_PAGE = 200


@dataclass
class Groups:
    """A grouping of the library as it was at ``version``: keys per group, best copy first, the
    largest groups first."""

    version: int
    settings: Settings
    groups: list[list[str]]
    grouping: Grouping
    without_fingerprint: int


class Finder:
    """Runs the grouping on its own thread (it takes seconds at 100k photos) and keeps the last
    result until the library or the settings change. One grouping at a time."""

    def __init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="duplicates")
        self.lock = asyncio.Lock()
        self.last: Groups | None = None

    async def groups(self, library: Library, settings: Settings) -> Groups:
        async with self.lock:
            last = self.last
            if last is not None and last.version == library.version and last.settings == settings:
                return last
            loop = asyncio.get_running_loop()
            self.last = await loop.run_in_executor(self.executor, group_library, library, settings)
            return self.last

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def group_library(library: Library, settings: Settings) -> Groups:
    """The library's near-duplicate groups, off the event loop (the web page's finder thread, the
    command line's): from a consistent copy of the index, so searches and the indexer go on."""
    version = library.version
    keys, matrix = library.index.snapshot()
    found = [(i, library.meta.get(k)) for i, k in enumerate(keys)]
    rows = [i for i, meta in found if meta is not None]  # removed since the copy
    metas = {keys[i]: meta for i, meta in found if meta is not None}
    keys = [keys[i] for i in rows]
    grouping = group(
        matrix[rows], [metas[k].fingerprint for k in keys], [metas[k].hash for k in keys], settings
    )
    rank = lambda k: keep_first(metas[k].width, metas[k].height, metas[k].size, metas[k].taken_at)  # noqa: E731
    groups = sorted(
        (sorted((keys[i] for i in g), key=rank) for g in grouping.groups),
        key=lambda g: (-len(g), metas[g[0]].path),
    )
    missing = sum(m.fingerprint is None for m in metas.values())
    return Groups(version, settings, groups, grouping, missing)


FINDER = web.AppKey("duplicate_finder", Finder)


def setup(app: web.Application) -> None:
    async def finder_ctx(app: web.Application) -> AsyncIterator[None]:
        app[FINDER] = Finder()
        yield
        app[FINDER].close()

    app.cleanup_ctx.append(finder_ctx)
    app.router.add_get("/api/duplicates", duplicates)
    app.router.add_get("/api/duplicates/export", export)


def _settings(request: web.Request) -> Settings:
    config = request.app[CONFIG]
    try:
        similarity = float(request.query.get("similarity", config.duplicate_similarity))
        hash_bits = int(request.query.get("hash_bits", config.duplicate_hash_bits))
    except ValueError:
        raise BadRequest("similarity and hash_bits must be numbers") from None
    if not (0.5 <= similarity <= 1.0 and 0 <= hash_bits <= 32):
        raise BadRequest("similarity must be from 0.5 to 1 and hash_bits from 0 to 32")
    return Settings(similarity=similarity, hash_bits=hash_bits)


def _item(library: Library, key: str, keep: bool) -> dict[str, Any]:
    meta = library.meta[key]
    return result(key, 1.0, meta) | {"score": None, "size": meta.size, "keep": keep, "full_path": meta.path}


async def duplicates(request: web.Request) -> web.Response:
    library = request.app[LIBRARY]
    found = await request.app[FINDER].groups(library, _settings(request))
    limit, offset = page_of(request, 50, MAX_GROUPS_PAGE)
    page = [g for g in found.groups[offset : offset + limit] if all(k in library.meta for k in g)]
    extra = sum(len(g) - 1 for g in found.groups)
    extra_bytes = sum(library.meta[k].size or 0 for g in found.groups for k in g[1:] if k in library.meta)
    groups = [{"keep": g[0], "items": [_item(library, k, i == 0) for i, k in enumerate(g)]} for g in page]
    return web.json_response(
        {
            "groups": groups,
            "total_groups": len(found.groups),
            "smaller_copies": extra,
            "smaller_bytes": extra_bytes,
            "offset": offset,
            "more": offset + limit < len(found.groups),
            "images": len(library),
            "without_fingerprint": found.without_fingerprint,
            "compared": found.grouping.compared,
            "seconds": round(found.grouping.seconds, 3),
            "similarity": found.settings.similarity,
            "hash_bits": found.settings.hash_bits,
        }
    )


async def export(request: web.Request) -> web.Response:
    """The paths of every group's smaller copies (all but the first), one per line
    (``?sep=nul`` for NUL-separated): for the user to review, move or delete themselves."""
    library = request.app[LIBRARY]
    found = await request.app[FINDER].groups(library, _settings(request))
    paths = [library.meta[k].path for g in found.groups for k in g[1:] if k in library.meta]
    return path_list(request, paths, "smaller-copies")
