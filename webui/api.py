"""The JSON API and the page. Documented in the README's "Web API" section."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import math
import os
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web
from PIL import Image

from image_search.imaging import ImageError, decode_rgb, open_checked
from image_search.refine import EmptyQuery, parse_query, refine_query
from image_search.thumbs import DEFAULT_SIZE, FORMATS, SIZES
from image_search.vectors import Query

from .app import (
    CONFIG,
    COUNTS,
    DAEMON,
    IMAGES,
    LIBRARY,
    QUERIES,
    SEARCHER,
    STATIC,
    STORE,
    THUMB_EXECUTOR,
    THUMBS,
)
from .library import Filters, Meta

MAX_LIMIT = 500
MAX_IDS = 2000
MAX_TIMELINE = 5000
DATE_CANDIDATES = 5000
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "HEIF": "image/heif",
}


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(text=message)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/status", status)
    app.router.add_post("/api/search", search)
    app.router.add_get("/api/folders", folders)
    app.router.add_get("/api/images/{id}", image)
    app.router.add_get("/api/images/{id}/meta", image_meta)
    app.router.add_get("/api/images/{id}/thumbnail", thumbnail)
    app.router.add_post("/api/images/{id}/similar", similar)
    app.router.add_get("/", index_page)
    app.router.add_static("/static/", STATIC, append_version=True)


# -- small helpers ----------------------------------------------------------------------------


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be a whole number")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _ids(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name} must be a list of image ids")
    if len(value) > MAX_IDS:
        raise BadRequest(f"{name} holds more than {MAX_IDS} ids")
    return list(dict.fromkeys(value))


def _time(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a date like 2024-07-31")
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be a date like 2024-07-31") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def parse_filters(body: dict[str, Any]) -> Filters:
    raw = body.get("filters") or {}
    if not isinstance(raw, dict):
        raise BadRequest("filters must be an object")
    for name in ("root", "folder"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise BadRequest(f"filters.{name} must be text")
    formats = raw.get("formats") or []
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise BadRequest('filters.formats must be a list like ["JPEG", "PNG"]')
    taken_to = _time(raw.get("taken_to"), "filters.taken_to")
    if taken_to is not None and len(raw["taken_to"]) == 10:  # a date: through the end of that day
        taken_to += 86399.999
    return Filters(
        root=raw.get("root") or None,
        folder=raw.get("folder") or None,
        taken_from=_time(raw.get("taken_from"), "filters.taken_from"),
        taken_to=taken_to,
        formats=tuple(formats),
    )


def result(key: str, score: float, meta: Meta) -> dict[str, Any]:
    version = (meta.hash or "")[:12]
    return {
        "id": key,
        "score": round(score, 4),
        "path": meta.rel,
        "root": meta.root,
        "thumbnail": f"/api/images/{key}/thumbnail?v={version}",
        "image": f"/api/images/{key}?v={version}",
        "taken_at": None
        if math.isnan(meta.taken_at)
        else dt.datetime.fromtimestamp(meta.taken_at, dt.UTC).isoformat().replace("+00:00", "Z"),
        "width": meta.width,
        "height": meta.height,
        "format": meta.format,
    }


def _vectors(app: web.Application, ids: list[str], name: str) -> np.ndarray:
    library = app[LIBRARY]
    unknown = [i for i in ids if i not in library.index]
    if unknown:
        raise web.HTTPNotFound(text=f"unknown image id in {name}: {unknown[0]}")
    return library.index.vectors(ids)


async def ranked(
    request: web.Request, query: np.ndarray, body: dict[str, Any], exclude: set[str]
) -> dict[str, Any]:
    library = request.app[LIBRARY]
    limit = _int(body, "limit", 60, 1, MAX_LIMIT)
    offset = _int(body, "offset", 0, 0, 100_000)
    sort = body.get("sort", "score")
    if sort not in ("score", "date"):
        raise BadRequest("sort must be score or date")
    min_score = parse_min_score(body)
    allowed = library.mask(parse_filters(body), exclude)
    searcher = request.app[SEARCHER]
    if sort == "score":
        hits = (await searcher.submit(Query(query, offset + limit, allowed, min_score)))[offset:]
    else:
        candidates = await searcher.submit(Query(query, DATE_CANDIDATES, allowed, min_score))
        candidates.sort(key=lambda hit: -_taken(library.meta[hit[0]]))
        hits = candidates[offset : offset + limit]
    results = [result(key, score, library.meta[key]) for key, score in hits if key in library.meta]
    return {
        "results": results,
        "offset": offset,
        "limit": limit,
        "more": len(hits) == limit,
        "indexed": len(library),
    }


def page_of(request: web.Request, default: int, most: int) -> tuple[int, int]:
    """``limit`` and ``offset`` from the query string of a paged GET."""
    try:
        limit = int(request.query.get("limit", default))
        offset = int(request.query.get("offset", 0))
    except ValueError:
        raise BadRequest("limit and offset must be whole numbers") from None
    if not (1 <= limit <= most and offset >= 0):
        raise BadRequest(f"limit must be from 1 to {most} and offset 0 or more")
    return limit, offset


def path_list(request: web.Request, paths: list[str], name: str) -> web.Response:
    """Paths as a text file to download, one per line (``?sep=nul``: NUL after each, for names
    with newlines). Names that are not UTF-8 keep their bytes."""
    sep = "\0" if request.query.get("sep") == "nul" else "\n"
    filename = "".join(c if c.isalnum() or c in " -_" else "_" for c in name).strip() or "photos"
    return web.Response(
        body="".join(p + sep for p in paths).encode("utf-8", "surrogateescape"),
        content_type="text/plain",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.txt"'},
    )


def parse_min_score(body: dict[str, Any]) -> float | None:
    min_score = body.get("min_score")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int | float) or not -1 <= min_score <= 1
    ):
        raise BadRequest("min_score must be a number from -1 to 1")
    return None if min_score is None else float(min_score)


async def timeline(
    request: web.Request, query: np.ndarray, body: dict[str, Any], exclude: set[str]
) -> dict[str, Any]:
    """The matches above ``min_score`` (the best ``limit`` of them), grouped by the month they
    were taken, newest month first; within a month the newest first. Undated photos come last."""
    library = request.app[LIBRARY]
    limit = _int(body, "limit", 500, 1, MAX_TIMELINE)
    min_score = parse_min_score(body)
    allowed = library.mask(parse_filters(body), exclude)
    hits = await request.app[SEARCHER].submit(Query(query, limit, allowed, min_score))
    hits = [(key, score) for key, score in hits if key in library.meta]
    hits.sort(key=lambda hit: -_taken(library.meta[hit[0]]))
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
        months[-1]["results"].append(result(key, score, meta))
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


def _taken(meta: Meta) -> float:
    return -math.inf if math.isnan(meta.taken_at) else meta.taken_at


# -- routes -----------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    store = request.app[STORE]
    counts = await request.app[COUNTS].get(store)
    daemon_status: dict[str, Any] = {}
    daemon: Any = request.app.get(DAEMON)
    if daemon is not None:
        daemon_status = daemon.status.as_dict()
        daemon_status["queue"] = len(daemon.settler) + len(daemon.queued)
    else:
        daemon_status = dict(await store.get_status("daemon") or {})
        daemon_status.pop("id", None)
    from .albums import summaries

    album_counts = await summaries(request.app)
    updated = daemon_status.get("updated_at")
    if isinstance(updated, dt.datetime):
        daemon_status["updated_at"] = updated.isoformat()
    return web.json_response(
        {
            "indexed": counts.indexed,
            "searchable": len(request.app[LIBRARY]),
            "failed": counts.failed,
            "offline": counts.offline,
            "queue": int(daemon_status.get("queue") or 0),
            "rate": daemon_status.get("rate") or 0.0,
            "eta": daemon_status.get("eta"),
            "state": daemon_status.get("state") or ("stopped" if not daemon_status else "unknown"),
            "errors": daemon_status.get("errors") or [],
            "model": request.app[LIBRARY].model_id,
            "daemon": daemon_status or None,
            "albums": {
                "count": len(album_counts),
                "new": sum(c["new"] for c in album_counts.values()),
            },
        }
    )


async def search(request: web.Request) -> web.Response:
    upload: Image.Image | None = None
    if request.content_type == "multipart/form-data":
        body, upload = await _multipart(request)
    else:
        body = await read_json(request)
    text, liked, rejected, weights = session_parts(body)
    extra = None
    if upload is not None:
        extra = (await request.app[IMAGES].embed(upload))[None]
    query = await query_vector(request.app, text, liked, rejected, weights, extra)
    exclude = set(liked) | set(rejected) | set(_ids(body, "exclude"))
    if body.get("timeline"):
        payload = await timeline(request, query, body, exclude)
    else:
        payload = await ranked(request, query, body, exclude)
    payload["terms"] = [{"weight": w, "text": t} for w, t in parse_query(text)] if text else []
    return web.json_response(payload)


def session_parts(body: dict[str, Any]) -> tuple[str, list[str], list[str], dict[str, float]]:
    """A refine session's text, liked and rejected ids and weights, checked."""
    text = body.get("text") or ""
    if not isinstance(text, str):
        raise BadRequest("text must be a string")
    weights = body.get("weights") or {}
    if not isinstance(weights, dict) or not all(
        k in ("text", "liked", "rejected")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        for k, v in weights.items()
    ):
        raise BadRequest("weights must be an object with numbers for text, liked and rejected")
    return text, _ids(body, "liked"), _ids(body, "rejected"), {k: float(v) for k, v in weights.items()}


async def query_vector(
    app: web.Application,
    text: str,
    liked: list[str],
    rejected: list[str],
    weights: dict[str, float],
    extra_positive: np.ndarray | None = None,
) -> np.ndarray:
    """The unit query vector of a refine session (``refine.refine_query``); 404 for an unknown
    liked or rejected id, 400 when there is nothing to search for."""
    positives = _vectors(app, liked, "liked")
    negatives = _vectors(app, rejected, "rejected")
    text_vec = await app[QUERIES].vector(text) if text.strip() else None
    if extra_positive is not None:
        positives = np.vstack([positives.reshape(-1, extra_positive.shape[1]), extra_positive])
    try:
        kwargs = {f"{name}_weight": value for name, value in weights.items()}
        return refine_query(text_vec, positives, negatives, **kwargs)
    except EmptyQuery as exc:
        raise BadRequest(str(exc)) from None


async def _multipart(request: web.Request) -> tuple[dict[str, Any], Image.Image]:
    """``query`` (a JSON object, optional) and ``image`` (the picture to search with)."""
    config = request.app[CONFIG]
    body: dict[str, Any] = {}
    data: bytes | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart is not supported")
            if part.name == "query":
                try:
                    body = json.loads(await part.text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise BadRequest("the query part is not valid JSON") from None
                if not isinstance(body, dict):
                    raise BadRequest("the query part must be a JSON object")
            elif part.name == "image":
                data = await part.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    except ValueError as exc:
        if "too large" in str(exc).lower():
            raise web.HTTPRequestEntityTooLarge(
                max_size=request.app._client_max_size, actual_size=request.content_length or 0
            ) from None
        raise BadRequest(f"cannot read the upload: {exc}") from None
    if not data:
        raise BadRequest("no image part in the upload")
    try:
        image = await asyncio.to_thread(_decode_upload, data, config.max_megapixels)
    except ImageError as exc:
        raise web.HTTPUnsupportedMediaType(text=f"the upload is not a usable image: {exc}") from None
    return body, image


def _decode_upload(data: bytes, max_megapixels: float) -> Image.Image:
    from image_search.imaging import CropSpec

    with open_checked(io.BytesIO(data), max_megapixels) as image:  # type: ignore[arg-type]
        return decode_rgb(image, CropSpec())


async def similar(request: web.Request) -> web.Response:
    key = request.match_info["id"]
    body = await read_json(request) if request.can_read_body else {}
    vector = _vectors(request.app, [key], "id")
    exclude = {key} | set(_ids(body, "exclude"))
    return web.json_response(await ranked(request, refine_query(None, vector, None), body, exclude))


async def folders(request: web.Request) -> web.Response:
    return web.json_response({"roots": request.app[LIBRARY].folders()})


async def _record(request: web.Request) -> dict[str, Any]:
    key = request.match_info["id"]
    if not (len(key) == 32 and all(c in "0123456789abcdef" for c in key)):
        raise web.HTTPNotFound(text="unknown image id")
    row = await request.app[STORE].get_one(key)
    if row is None or row.get("error") or row.get("model") is None:
        raise web.HTTPNotFound(text="unknown image id")
    return row


def _servable(request: web.Request, row: dict[str, Any]) -> str:
    """The file of an indexed record. With follow_symlinks off, a file whose real path has left its
    root (a symlink swapped in after indexing) is refused."""
    from image_search.store import real_path

    path = real_path(row)
    if not os.path.isfile(path):
        raise web.HTTPNotFound(text="the file is gone (moved, deleted, or its disk is offline)")
    if not request.app[CONFIG].follow_symlinks:
        root = os.path.realpath(row["root"])
        if not os.path.realpath(path).startswith(root.rstrip("/") + "/"):
            raise web.HTTPNotFound(text="the file is outside its picture folder")
    return path


async def image(request: web.Request) -> web.StreamResponse:
    row = await _record(request)
    path = _servable(request, row)
    content_type = CONTENT_TYPES.get((row.get("format") or "").upper(), "application/octet-stream")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "private, max-age=3600",
            "Content-Disposition": "inline",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def image_meta(request: web.Request) -> web.Response:
    row = await _record(request)
    meta = Meta.from_row(row)
    return web.json_response({**result(row["id"].id, 1.0, meta), "score": None, "size": row.get("size")})


async def thumbnail(request: web.Request) -> web.StreamResponse:
    row = await _record(request)
    try:
        wanted = int(request.query.get("size", DEFAULT_SIZE))
    except ValueError:
        raise BadRequest("size must be a number of pixels") from None
    if not 16 <= wanted <= SIZES[-1]:
        raise BadRequest(f"size must be between 16 and {SIZES[-1]}")
    size = next(s for s in SIZES if s >= wanted)
    fmt = request.query.get("format", "webp").lower()
    if fmt not in FORMATS:
        raise BadRequest("format must be webp or jpeg")
    etag = f'"{row["hash"]}-{size}-{fmt}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=604800", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    path = _servable(request, row)
    thumbs = request.app[THUMBS]
    loop = asyncio.get_running_loop()
    try:
        file = await loop.run_in_executor(
            request.app[THUMB_EXECUTOR],
            thumbs.get,
            path,
            row["hash"],
            size,
            fmt,
            request.app[CONFIG].max_megapixels,
        )
    except (ImageError, OSError) as exc:
        raise web.HTTPNotFound(text=f"no thumbnail: {exc}") from None
    return web.FileResponse(file, headers={**headers, "Content-Type": FORMATS[fmt][1]})


async def index_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        STATIC / "index.html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
