"""Search routes: text and refine rounds, an uploaded picture, "more like this", the timeline,
the folder list and the status the page polls."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import math
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web
from PIL import Image

from image_search.models import switch_costs
from image_search.pictures import CropSpec, ImageError, decode_rgb, open_checked
from image_search.search import Query, parse_query, refine_query, session_vector
from image_search.store import from_bytes, real_path

from . import validate
from .albums import summaries
from .keys import (
    CONFIG,
    COUNTS,
    DEFAULTS,
    IMAGES,
    INDEXING,
    LIBRARY,
    SEARCHER,
    SECURITY,
    STORE,
    TEXTS,
    UPLOAD_EXECUTOR,
    UPLOAD_SLOTS,
)
from .responses import result

DATE_CANDIDATES = 5000
STALE_STATUS = dt.timedelta(seconds=30)  # a running daemon writes its status every 2 s


async def status(request: web.Request) -> web.Response:
    app = request.app
    counts = await app[COUNTS].get(app[STORE])
    indexing = app.get(INDEXING)
    if indexing is not None:
        daemon: dict[str, Any] = dict(indexing.snapshot())
    elif app[STORE].embedded:  # this process holds the database: no daemon can be writing to it
        daemon = {}
    else:  # a daemon in another process writes its snapshot to the store, every few seconds
        daemon = dict(await app[STORE].get_status("daemon") or {})
        daemon.pop("id", None)
        written = daemon.get("updated_at")
        if isinstance(written, dt.datetime) and dt.datetime.now(dt.UTC) - written > STALE_STATUS:
            daemon["state"] = "stopped"  # its last word, from a process that no longer writes
    if isinstance(daemon.get("updated_at"), dt.datetime):
        daemon["updated_at"] = daemon["updated_at"].isoformat()
    album_counts = await summaries(app)
    detail: dict[str, Any] = {}
    if request.query.get("detail") == "1":  # what `image-search status` prints beside the counts
        store = app[STORE]
        detail = {
            "total": counts.total,
            "schema_version": await store.schema_version(),
            "failed_files": [{"path": real_path(f), "error": f["error"]} for f in await store.failures()],
        }
    if request.query.get("switch") == "1":  # the page's model panel
        # A few small report files: read off the event loop all the same.
        detail["switch"] = await asyncio.to_thread(
            switch_costs, app[CONFIG].cache_dir, app[LIBRARY].model_id, counts.indexed
        )
    return web.json_response(
        {
            **detail,
            "indexed": counts.indexed,
            "searchable": len(app[LIBRARY]),
            "failed": counts.failed,
            "offline": counts.offline,
            "queue": int(daemon.get("queue") or 0),
            "rate": daemon.get("rate") or 0.0,
            "eta": daemon.get("eta"),
            "state": daemon.get("state") or ("stopped" if not daemon else "unknown"),
            "errors": daemon.get("errors") or [],
            "model": app[LIBRARY].model_id,
            "roots": [str(root) for root in app[CONFIG].roots],
            "match_threshold": app[DEFAULTS].album_min_score,
            "match_bands": list(app[DEFAULTS].match_bands),
            "text_compile": getattr(app[TEXTS].embedder, "compile_state", "off"),
            "daemon": daemon or None,
            "albums": {"count": len(album_counts), "new": sum(c["new"] for c in album_counts.values())},
        }
    )


async def search(request: web.Request) -> web.Response:
    upload: Image.Image | None = None
    if request.content_type == "multipart/form-data":
        body, upload = await _multipart(request)
    else:
        body = await validate.json_body(request)
    session = validate.session(body)
    picture = validate.optional_hex(body, "picture")
    extra = None if upload is None else (await request.app[IMAGES].embed(upload))[None]
    if picture is not None and extra is None:
        extra = (await picture_vector(request, picture))[None]
    query = await session_vector(request.app[LIBRARY], request.app[TEXTS], session, extra)
    exclude = set(session.liked) | set(session.rejected) | set(validate.ids(body, "exclude"))
    if body.get("timeline"):
        payload = await timeline(request, query, body, exclude)
    else:
        payload = await ranked(request, query, body, exclude)
    payload["terms"] = [{"weight": w, "text": t} for w, t in parse_query(session.text)]
    return web.json_response(payload)


async def similar(request: web.Request) -> web.Response:
    key = request.match_info["id"]
    body = await validate.json_body(request) if request.can_read_body else {}
    vector = request.app[LIBRARY].vectors([key])
    exclude = {key} | set(validate.ids(body, "exclude"))
    return web.json_response(await ranked(request, refine_query(None, vector, None), body, exclude))


async def folders(request: web.Request) -> web.Response:
    return web.json_response({"roots": request.app[LIBRARY].folders()})


async def ranked(
    request: web.Request, query: np.ndarray, body: dict[str, Any], exclude: set[str]
) -> dict[str, Any]:
    """A page of results, by score or by date taken (the best DATE_CANDIDATES, newest first)."""
    library = request.app[LIBRARY]
    limit = validate.whole(body, "limit", 60, 1, validate.MAX_LIMIT)
    offset = validate.whole(body, "offset", 0, 0, validate.MAX_OFFSET)
    by = validate.sort(body)
    min_score = validate.min_score(body)
    allowed = library.mask(validate.filters(body), exclude)
    searcher = request.app[SEARCHER]
    sign = request.app[SECURITY].sign
    if by == "score":
        hits = (await searcher.submit(Query(query, offset + limit, allowed, min_score)))[offset:]
    else:
        candidates = await searcher.submit(Query(query, DATE_CANDIDATES, allowed, min_score))
        candidates.sort(key=lambda hit: -library.meta[hit[0]].taken_or_oldest)
        hits = candidates[offset : offset + limit]
    results = [
        result(key, score, library.meta[key], library.pair(key), sign)
        for key, score in hits
        if key in library.meta
    ]
    return {
        "results": results,
        "offset": offset,
        "limit": limit,
        "more": len(hits) == limit,
        "indexed": len(library),
    }


async def timeline(
    request: web.Request, query: np.ndarray, body: dict[str, Any], exclude: set[str]
) -> dict[str, Any]:
    """The matches above ``min_score`` (the best ``limit`` of them), grouped by the month they
    were taken, newest month first; within a month the newest first. Undated photos come last.
    Without ``min_score``, the model's own "fair match" (:func:`image_search.models.families.match_bands`):
    a timeline of what matches, not of the best 500 whatever they are."""
    library = request.app[LIBRARY]
    limit = validate.whole(body, "limit", 500, 1, validate.MAX_TIMELINE)
    min_score = validate.min_score(body)
    if min_score is None:
        min_score = request.app[DEFAULTS].match_bands[0]
    allowed = library.mask(validate.filters(body), exclude)
    hits = await request.app[SEARCHER].submit(Query(query, limit, allowed, min_score))
    hits = [(key, score) for key, score in hits if key in library.meta]
    hits.sort(key=lambda hit: -library.meta[hit[0]].taken_or_oldest)
    months: list[dict[str, Any]] = []
    for key, score in hits:
        meta = library.meta[key]
        label = (
            None
            if math.isnan(meta.taken_at)
            else dt.datetime.fromtimestamp(meta.taken_at, dt.UTC).strftime("%Y-%m")
        )
        if not months or months[-1]["month"] != label:
            months.append({"month": label, "count": 0, "results": []})
        months[-1]["count"] += 1
        months[-1]["results"].append(result(key, score, meta, library.pair(key), request.app[SECURITY].sign))
    years: dict[str, int] = {}
    for group in months:
        year = group["month"][:4] if group["month"] else "undated"
        years[year] = years.get(year, 0) + group["count"]
    return {
        "months": months,
        "years": [{"year": y, "count": n} for y, n in years.items()],
        "total": len(hits),
        "truncated": len(hits) == limit,
        "min_score": min_score,
        "indexed": len(library),
    }


async def _parts(request: web.Request) -> tuple[dict[str, Any], bytes]:
    """``query`` (a JSON object, optional) and ``image`` (the picture's bytes) of a multipart body."""
    body: dict[str, Any] = {}
    data: bytes | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise validate.BadValue("nested multipart is not supported")
            if part.name == "query":
                try:
                    body = validate.json_object(json.loads(await part.text()), "the query part")
                except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                    raise validate.BadValue("the query part is not valid JSON") from None
            elif part.name == "image":
                data = await part.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    except ValueError as exc:
        if isinstance(exc, validate.BadValue):
            raise
        if "too large" in str(exc).lower():
            raise web.HTTPRequestEntityTooLarge(
                max_size=request.app._client_max_size, actual_size=request.content_length or 0
            ) from None
        raise validate.BadValue(f"cannot read the upload: {exc}") from None
    if not data:
        raise validate.BadValue("no image part in the upload")
    return body, data


async def _decoded(request: web.Request, data: bytes) -> Image.Image:
    """The upload decoded on the uploads' own thread, one at a time: a 100 MP picture takes 300 MB,
    and each thread that has held it keeps its malloc arena's share of that (spread over asyncio's
    default threads, which now also ask the kernel who owns each connection, 20 uploads grew the
    server by 2.5 GB instead of 0.8)."""
    loop = asyncio.get_running_loop()
    try:
        async with request.app[UPLOAD_SLOTS]:
            return await loop.run_in_executor(
                request.app[UPLOAD_EXECUTOR], _decode_upload, data, request.app[CONFIG].max_megapixels
            )
    except ImageError as exc:
        raise web.HTTPUnsupportedMediaType(text=f"the upload is not a usable image: {exc}") from None


async def _multipart(request: web.Request) -> tuple[dict[str, Any], Image.Image]:
    body, data = await _parts(request)
    return body, await _decoded(request, data)


async def read_upload(request: web.Request) -> tuple[bytes, Image.Image]:
    """The picture of a multipart upload, as bytes and decoded (reduced for the model)."""
    if request.content_type != "multipart/form-data":
        raise validate.BadValue("send the picture as multipart/form-data with an image part")
    _, data = await _parts(request)
    return data, await _decoded(request, data)


async def picture_vector(request: web.Request, picture_id: str) -> np.ndarray:
    """The embedding of a picture searched with before (``POST /api/pictures``), by the library's
    model; 404 when it is no longer kept."""
    row = await request.app[STORE].picture(picture_id)
    if row is None or row.get("model") != request.app[LIBRARY].model_id:
        raise web.HTTPNotFound(text="that picture is no longer kept: search with it again")
    return from_bytes(row["vector"]).astype(np.float32)


def _decode_upload(data: bytes, max_megapixels: float) -> Image.Image:
    """Upright RGB, reduced at once to what the model needs (the shortest side at least twice its
    input, as draft mode does for JPEGs): a 100 MP PNG does not stay 300 MB while it is embedded."""
    spec = CropSpec()
    with open_checked(io.BytesIO(data), max_megapixels) as image:  # type: ignore[arg-type]
        rgb = decode_rgb(image, spec)
    factor = min(rgb.size) // (2 * spec.shortest_edge)
    return rgb.reduce(factor) if factor >= 2 else rgb
