"""Routes that serve files: the page, an indexed photo, its facts and its thumbnail. No path is
ever taken from a request: only records the store holds are served."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiohttp import web

from image_search.pictures import FORMATS, ImageError, Indexed, NotServable, camera, open_indexed, read_at
from image_search.search import Meta
from image_search.store import ImageRow, key_of, real_path

from . import validate
from .keys import CONFIG, LIBRARY, SECURITY, STORE, THUMB_EXECUTOR, THUMBS
from .responses import result

STATIC = Path(__file__).parent / "static"
SEND_CHUNK = 256 * 1024
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
RENDITION = 2560  # the long side of a rendition, in pixels: a screen's
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


async def session(request: web.Request) -> web.Response:
    """The page's credential, for a request the guard let in (with the token): kept in the
    origin's storage and sent as ``Authorization: Bearer``; null where no token is in use."""
    return web.json_response({"session": request.app[SECURITY].session()})


async def index_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


async def _record(request: web.Request) -> ImageRow:
    key = validate.image_id(request)
    row = None if key is None else await request.app[STORE].get_one(key)
    if row is None or row.get("error") or row.get("model") is None:
        raise web.HTTPNotFound(text="unknown image id")
    return row


def _open(request: web.Request, row: ImageRow) -> tuple[int, os.stat_result]:
    """The indexed file, opened once as :mod:`image_search.pictures.opening` says (beneath its folder,
    no link the configuration does not allow, the same device, inode, size and time as indexed);
    404 with the reason otherwise. The caller closes the descriptor."""
    indexed = Indexed(
        real_path(row), row["root"], row.get("size"), row.get("mtime_ns"), row.get("dev"), row.get("ino")
    )
    try:
        return open_indexed(indexed, follow_symlinks=request.app[CONFIG].follow_symlinks)
    except NotServable as exc:
        raise web.HTTPNotFound(text=str(exc)) from None


async def image(request: web.Request) -> web.StreamResponse:
    """The photo for the lightbox: the file itself where every browser can show it and it is no
    larger than a screen needs (long side RENDITION); otherwise (a larger photo; HEIC/HEIF, TIFF,
    camera RAW) a WebP rendition, long side RENDITION, upright, made once and cached by content
    (a 5640x3172 JPEG of 16.4 MB is sent as about 1 MB). The original with its own content type:
    ``?original=1`` (a download for formats browsers lack)."""
    row = await _record(request)
    path = real_path(row)
    fmt = (row.get("format") or "").upper()
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    original = validate.flag(request, "original")
    small = max(row.get("width") or 0, row.get("height") or 0) <= RENDITION
    fd, st = await asyncio.to_thread(_open, request, row)
    try:
        if original or (fmt in BROWSER_FORMATS and small):
            name = Path(path).stem + EXTENSIONS.get(fmt, Path(path).suffix.lower())
            shown = fmt in BROWSER_FORMATS
            disposition = "inline" if shown else f'attachment; filename="{_header_safe(name)}"'
            content_type = CONTENT_TYPES.get(fmt, "application/octet-stream")
            headers |= {"Content-Type": content_type, "Content-Disposition": disposition}
            return await _send(request, fd, st.st_size, headers)
        file = await _cached(request, fd, row, RENDITION, "webp", "cannot show this photo")
    finally:
        os.close(fd)
    return web.FileResponse(
        file, headers={**headers, "Content-Type": "image/webp", "Content-Disposition": "inline"}
    )


async def _send(request: web.Request, fd: int, size: int, headers: dict[str, str]) -> web.StreamResponse:
    """The bytes of the open file, read from its descriptor (never from its path again)."""
    response = web.StreamResponse(headers=headers)
    response.content_length = size
    await response.prepare(request)
    offset = 0
    while request.method != "HEAD" and offset < size:
        chunk = await asyncio.to_thread(read_at, fd, offset, min(SEND_CHUNK, size - offset))
        if not chunk:  # cut short since it was opened: the client sees a short body
            break
        await response.write(chunk)
        offset += len(chunk)
    await response.write_eof()
    return response


def _header_safe(name: str) -> str:
    """A file name for Content-Disposition: printable ASCII without quotes or backslashes."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name) or "photo"


async def image_meta(request: web.Request) -> web.Response:
    """Its facts as JSON, with its file size and the camera that took it (read from the file's
    header, opened as any served file is; None where the file cannot be served now)."""
    row = await _record(request)
    key = key_of(row)
    pair = request.app[LIBRARY].pair(key)
    meta = Meta.from_row(row, request.app[LIBRARY].file_times)
    described = result(key, None, meta, pair, request.app[SECURITY].sign)
    return web.json_response({**described, "size": row.get("size"), "camera": await _camera(request, row)})


async def _camera(request: web.Request, row: ImageRow) -> str | None:
    def read() -> str | None:
        try:
            fd, _ = _open(request, row)
        except web.HTTPNotFound:
            return None
        try:
            return camera(f"/proc/self/fd/{fd}", real_path(row))
        finally:
            os.close(fd)

    return await asyncio.to_thread(read)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    row = await _record(request)
    size, fmt = validate.thumbnail(request)
    etag = f'"{row["hash"]}-{size}-{fmt}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=604800", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    fd, _ = await asyncio.to_thread(_open, request, row)
    try:
        file = await _cached(request, fd, row, size, fmt, "no thumbnail")
    finally:
        os.close(fd)
    return web.FileResponse(file, headers={**headers, "Content-Type": FORMATS[fmt][1]})


async def _cached(request: web.Request, fd: int, row: ImageRow, size: int, fmt: str, failure: str) -> Path:
    """The photo at ``size`` in ``fmt`` from the content-keyed cache, made on the thumbnail
    thread the first time (never on the event loop), from the open descriptor ``fd``: its
    ``/proc/self/fd`` name reaches the very inode opened, whatever happens to the path."""
    app = request.app
    try:
        return await asyncio.get_running_loop().run_in_executor(
            app[THUMB_EXECUTOR],
            app[THUMBS].get,
            f"/proc/self/fd/{fd}",
            str(row["hash"]),
            size,
            fmt,
            app[CONFIG].max_megapixels,
            real_path(row),
        )
    except (ImageError, OSError) as exc:
        raise web.HTTPNotFound(text=f"{failure}: {exc}") from None
