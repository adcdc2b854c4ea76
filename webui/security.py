"""Who may call what. Loopback without a token unless one is configured; anywhere else the token
is required on every API and image route (only health answers without it)."""

from __future__ import annotations

import ipaddress
import secrets

from aiohttp import web

from image_search.config import Config

TOKEN_COOKIE = "image_search_token"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Security:
    def __init__(self, config: Config) -> None:
        self.host = config.host
        self.token = config.token
        self.loopback = is_loopback(config.host)
        if not self.loopback and not self.token:
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

    def authorised(self, request: web.Request) -> bool:
        if not self.token:
            return True
        given = request.cookies.get(TOKEN_COOKIE) or ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:]
        return secrets.compare_digest(given.encode(), self.token.encode())

    def host_allowed(self, request: web.Request) -> bool:
        """Without a token only loopback names may be in Host: a DNS-rebinding page gets nothing."""
        if self.token:
            return True
        name = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        return name in {"localhost", "127.0.0.1", "::1"} or is_loopback(name) or name == self.host
