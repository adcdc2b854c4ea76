"""Who may call what.

- A **token** (``token`` option, or one generated and printed at start) opens every route: as
  ``Authorization: Bearer TOKEN``, or as the page's session credential (HMAC-SHA256 of the token,
  so a new token makes old ones worthless) that the page gets once from ``POST /api/session`` and
  keeps in its origin's ``localStorage``. The page sends it in the same header. No cookie is ever
  set: a cookie is sent to every port of the host, so a page another account serves on
  ``127.0.0.1:OTHER`` would receive it; storage is the origin's alone (scheme, host and port).
- Pictures are loaded by ``<img src>``, which sends no header: the server signs the URLs it hands
  out (:meth:`Security.sign`), each for one photo and a short time (one to two hours; the same URL
  within the hour, so the browser's cache keeps working). A signed URL opens that photo's file and
  thumbnail only, and only until it expires.
- On a **loopback** listener a connection is trusted without the token only when the kernel says
  its socket belongs to the account running the server (:mod:`.peer`): the owner's browser needs
  nothing, another local account gets 401. Where the kernel cannot tell (no ``/proc``), a token
  is generated and printed, as for a listener on the network.
- Only ``/api/health`` answers everyone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import time
import weakref
from typing import Any

from aiohttp import web

from image_search.config import Config
from image_search.running import is_loopback

from .peer import TABLES, owner

SIGNED_FOR = 3600  # a signed picture URL lasts until the end of the next full hour
# The routes a signed URL opens: one photo's file and its thumbnail, a picture searched with.
SIGNED_ROUTE = re.compile(r"^/api/(?:images|pictures)/([0-9a-f]{32})(/thumbnail)?$")


def _text_bytes(value: str) -> bytes:
    """Header values as bytes, whatever they hold (non-UTF-8 bytes arrive as surrogates)."""
    return value.encode("utf-8", "surrogateescape")


class Security:
    def __init__(self, config: Config, *, kernel_tables: tuple[str, ...] = TABLES) -> None:
        self.host = config.host
        self.token = config.token
        self.loopback = is_loopback(config.host)
        self.tables = kernel_tables
        self.uid = os.getuid()
        self.peer_check = self.loopback and any(os.access(t, os.R_OK) for t in kernel_tables)
        self._owner: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        if not self.token and not self.peer_check:
            self.token = secrets.token_urlsafe(24)
            # Printed once, on purpose: the only way to learn a generated token.
            print(
                f"image-search: access token for http://{config.host}:{config.port}/ is {self.token}\n"
                f"  open http://{config.host}:{config.port}/?token={self.token} once in your browser",
                flush=True,
            )

    @property
    def required(self) -> bool:
        return bool(self.token)

    def session(self) -> str | None:
        """The page's credential: derived from the token, so it changes when the token does."""
        if not self.token:
            return None
        return hmac.new(self.token.encode(), b"image-search session v1", hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and secrets.compare_digest(_text_bytes(given), _text_bytes(self.token or ""))

    async def authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:]
            if self.token_matches(given):
                return True
            session = self.session()
            if session and secrets.compare_digest(_text_bytes(given), session.encode()):
                return True
        if self.signed(request):
            return True
        return self.peer_check and await self.from_owner(request)

    def _signature(self, key: str, expires: int) -> str:
        assert self.token
        secret = hmac.new(self.token.encode(), b"image-search picture urls v1", hashlib.sha256).digest()
        return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, key: str, now: float | None = None) -> str:
        """What a picture URL of ``key`` needs: ``&e=EXPIRES&s=SIGNATURE``, or nothing where no
        token is in use (the owner's connections need none)."""
        if not self.token:
            return ""
        expires = (int(now if now is not None else time.time()) // SIGNED_FOR + 2) * SIGNED_FOR
        return f"&e={expires}&s={self._signature(key, expires)}"

    def signed(self, request: web.Request, now: float | None = None) -> bool:
        """Whether a GET of one photo or its thumbnail carries an unexpired signature for it."""
        if not self.token or request.method not in ("GET", "HEAD"):
            return False
        match = SIGNED_ROUTE.match(request.path)
        expires, signature = request.query.get("e", ""), request.query.get("s", "")
        if match is None or not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
            return False
        if int(expires) < (now if now is not None else time.time()):
            return False
        wanted = self._signature(match.group(1), int(expires))
        return secrets.compare_digest(_text_bytes(signature), wanted.encode())

    async def from_owner(self, request: web.Request) -> bool:
        """Whether this connection's socket belongs to the server's own account (asked of the
        kernel once per connection, for that one socket, on a thread)."""
        transport = request.transport
        if transport is None:
            return False
        known = self._owner.get(transport)
        if known is None:
            peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            uid = None
            if peer and local and is_loopback(str(peer[0])):
                uid = await asyncio.to_thread(owner, (peer[0], peer[1]), (local[0], local[1]), self.tables)
            known = self._owner[transport] = uid == self.uid
        return known

    def host_allowed(self, request: web.Request) -> bool:
        """On loopback only loopback names may be in Host: a DNS-rebinding page gets nothing."""
        if not self.loopback:
            return True
        name = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        return name in {"localhost", "127.0.0.1", "::1"} or is_loopback(name) or name == self.host
