"""Routes that serve files: the page, an indexed photo, its facts and its thumbnail. No path is
ever taken from a request: only records the store holds are served."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from aiohttp import web

from image_search.imaging import ImageError
from image_search.library import Meta
from image_search.scan import is_under
from image_search.store import ImageRow, key_of, real_path
from image_search.thumbs import FORMATS

from . import validate
from .keys import CONFIG, LIBRARY, STORE, THUMB_EXECUTOR, THUMBS
from .responses import result

STATIC = Path(__file__).parent / "static"
MAX_SERVED = 1 << 30  # no photo is larger; a link swapped to a disk image is
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "DNG": "image/x-adobe-dng",  # other RAW formats have no registered type: application/octet-stream
    "HEIF": "image/heif",
}
# What every browser shows; other formats (HEIC/HEIF, TIFF, camera RAW) get a rendition (see image()).
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "AVIF"})
RENDITION = 2048  # the long side of a rendition, in pixels
EXTENSIONS = {"HEIF": ".heic", "TIFF": ".tif"}
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def index_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


async def _record(request: web.Request) -> ImageRow:
    key = validate.image_id(request)
    row = None if key is None else await request.app[STORE].get_one(key)
    if row is None or row.get("error") or row.get("model") is None:
        raise web.HTTPNotFound(text="unknown image id")
    return row


def _servable(request: web.Request, row: ImageRow) -> str:
    """The file of an indexed record, checked again as it is now: a regular file, not too large,
    inside its picture folder. A symbolic link swapped in after indexing is refused; with
    follow_symlinks on, a link may lead out of the folder only to the very file that was indexed
    (same size and modification time)."""
    path = real_path(row)
    try:
        st = os.stat(path)
    except OSError:
        raise web.HTTPNotFound(text="the file is gone (moved, deleted, or its disk is offline)") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SERVED:
        raise web.HTTPNotFound(text="the file is not a photo image-search serves")
    if not is_under(path, row["root"], real=True):
        same = (st.st_size, st.st_mtime_ns) == (row.get("size"), row.get("mtime_ns"))
        if not (request.app[CONFIG].follow_symlinks and same):
            raise web.HTTPNotFound(text="the file is outside its picture folder")
    return path


async def image(request: web.Request) -> web.StreamResponse:
    """The photo for the lightbox: the file itself where every browser can show it; for HEIC/HEIF,
    TIFF and camera RAW a WebP rendition (long side 2048, upright), made once and cached by content. The
    original with its own content type: ``?original=1`` (a download for formats browsers lack)."""
    row = await _record(request)
    path = _servable(request, row)
    fmt = (row.get("format") or "").upper()
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    original = validate.flag(request, "original")
    if fmt in BROWSER_FORMATS or original:
        name = Path(path).stem + EXTENSIONS.get(fmt, Path(path).suffix.lower())
        shown = fmt in BROWSER_FORMATS
        disposition = "inline" if shown else f'attachment; filename="{_header_safe(name)}"'
        content_type = CONTENT_TYPES.get(fmt, "application/octet-stream")
        return web.FileResponse(
            path, headers={**headers, "Content-Type": content_type, "Content-Disposition": disposition}
        )
    file = await _cached(request, path, row, RENDITION, "webp", "cannot show this photo")
    return web.FileResponse(
        file, headers={**headers, "Content-Type": "image/webp", "Content-Disposition": "inline"}
    )


def _header_safe(name: str) -> str:
    """A file name for Content-Disposition: printable ASCII without quotes or backslashes."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name) or "photo"


async def image_meta(request: web.Request) -> web.Response:
    row = await _record(request)
    key = key_of(row)
    pair = request.app[LIBRARY].pair(key)
    return web.json_response({**result(key, None, Meta.from_row(row), pair), "size": row.get("size")})


async def thumbnail(request: web.Request) -> web.StreamResponse:
    row = await _record(request)
    size, fmt = validate.thumbnail(request)
    etag = f'"{row["hash"]}-{size}-{fmt}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=604800", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    file = await _cached(request, _servable(request, row), row, size, fmt, "no thumbnail")
    return web.FileResponse(file, headers={**headers, "Content-Type": FORMATS[fmt][1]})


async def _cached(request: web.Request, path: str, row: ImageRow, size: int, fmt: str, failure: str) -> Path:
    """The photo at ``size`` in ``fmt`` from the content-keyed cache, made on the thumbnail
    thread the first time (never on the event loop)."""
    app = request.app
    try:
        return await asyncio.get_running_loop().run_in_executor(
            app[THUMB_EXECUTOR],
            app[THUMBS].get,
            path,
            str(row["hash"]),
            size,
            fmt,
            app[CONFIG].max_megapixels,
        )
    except (ImageError, OSError) as exc:
        raise web.HTTPNotFound(text=f"{failure}: {exc}") from None
