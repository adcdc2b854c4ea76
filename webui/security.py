"""Who may call what.

- A **token** (``token`` option, or one generated and printed at start) opens every route: as
  ``Authorization: Bearer TOKEN``, or the session cookie that ``/?token=TOKEN`` sets once. The
  cookie holds a value derived from the token (HMAC-SHA256), never the token: a new token makes
  old cookies worthless.
- On a **loopback** listener a connection is trusted without the token only when the kernel says
  its socket belongs to the account running the server (:mod:`.peer`): the owner's browser needs
  nothing, another local account gets 401. Where the kernel cannot tell (no ``/proc``), a token
  is generated and printed, as for a listener on the network.
- Only ``/api/health`` answers everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import weakref
from typing import Any

from aiohttp import web

from image_search.config import Config
from image_search.running import is_loopback

from .peer import TABLES, peer_uid

TOKEN_COOKIE = "image_search_session"
COOKIE_DAYS = 30


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

    def session(self) -> str:
        """The cookie's value: derived from the token, so it changes when the token does."""
        assert self.token
        return hmac.new(self.token.encode(), b"image-search session v1", hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and secrets.compare_digest(_text_bytes(given), _text_bytes(self.token or ""))

    def authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and self.token_matches(header[7:]):
            return True
        cookie = request.cookies.get(TOKEN_COOKIE)
        if cookie and self.token and secrets.compare_digest(_text_bytes(cookie), self.session().encode()):
            return True
        return self.peer_check and self.from_owner(request)

    def from_owner(self, request: web.Request) -> bool:
        """Whether this connection's socket belongs to the server's own account (asked of the
        kernel once per connection)."""
        transport = request.transport
        if transport is None:
            return False
        known = self._owner.get(transport)
        if known is None:
            peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            uid = None
            if peer and local and is_loopback(str(peer[0])):
                uid = peer_uid((peer[0], peer[1]), (local[0], local[1]), self.tables)
            known = self._owner[transport] = uid == self.uid
        return known

    def host_allowed(self, request: web.Request) -> bool:
        """On loopback only loopback names may be in Host: a DNS-rebinding page gets nothing."""
        if not self.loopback:
            return True
        name = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        return name in {"localhost", "127.0.0.1", "::1"} or is_loopback(name) or name == self.host

    def set_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        response.set_cookie(
            TOKEN_COOKIE,
            self.session(),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            max_age=COOKIE_DAYS * 86400,
        )
