"""Every request passes through here: errors become JSON with a message (bad input is never a
500), and the guard checks Host, token, Origin, content type and size before any handler runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from image_search.errors import BadValue, UnknownImage
from image_search.search import AlbumError, AlbumNameTaken, EmptyQuery

from .keys import SECURITY
from .responses import json_error
from .validate import body_limit

log = logging.getLogger("image_search.webui")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The core's errors a user can act on, and the status each gets (the first match wins).
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (UnknownImage, 404),
    (AlbumNameTaken, 409),
    (AlbumError, 400),
    (BadValue, 400),
    (EmptyQuery, 400),
)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is JSON with a message a person understands; bad input is never a 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return json_error(exc.status, message or exc.reason)
    except asyncio.CancelledError:
        raise
    except tuple(cls for cls, _ in STATUS_OF) as exc:
        status = next(code for cls, code in STATUS_OF if isinstance(exc, cls))
        return json_error(status, str(exc))
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal error: see the server log")


# Sec-Fetch-Site values a browser sends for requests another site's page made.
FOREIGN = ("cross-site", "same-site")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    security = request.app[SECURITY]
    if request.path == "/api/health":
        return await handler(request)
    if not security.host_allowed(request):
        return json_error(403, "this Host is not allowed; open image-search at http://127.0.0.1")
    protected = request.path.startswith("/api/")
    if protected and request.headers.get("Sec-Fetch-Site") in FOREIGN:
        return json_error(403, "cross-site request refused")
    if protected and not await security.authorised(request):
        return json_error(401, "a token is required: open the address the server printed, with ?token=")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1].rstrip("/") != request.host:
            return json_error(403, "cross-site request refused")
        if request.body_exists and request.content_type not in ("application/json", "multipart/form-data"):
            return json_error(415, "send JSON (Content-Type: application/json)")
        limit = body_limit(request)
        if (request.content_length or 0) > limit:  # refused before a byte of it is read
            return json_error(413, f"the body is larger than {limit >> 10:,} KB, the most this route takes")
    return await handler(request)


async def same_origin_only(request: web.Request, response: web.StreamResponse) -> None:
    """No other site may embed what this server answers (an <img src> to a photo, a script)."""
    response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
