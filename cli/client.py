"""The library commands as clients of a running ``serve``/``web`` (see :mod:`image_search.running`).

The connection goes to the service's loopback address as this account, which the service trusts
as its owner (it asks the kernel whose socket it is); where it needs its token, the token comes
from the owner-only service file.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from image_search.errors import UserError
from image_search.running import Service

TIMEOUT = aiohttp.ClientTimeout(total=600, sock_connect=10)


class ServiceClient:
    def __init__(self, service: Service) -> None:
        self.service = service
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ServiceClient:
        headers = {"Authorization": f"Bearer {self.service.token}"} if self.service.token else {}
        self._session = aiohttp.ClientSession(self.service.url, headers=headers, timeout=TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, **params: Any) -> Any:
        return await self._call("GET", path, params=params)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._call("POST", path, json=body)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self._session is not None
        where = f"the running image-search (pid {self.service.pid}, {self.service.url})"
        try:
            async with self._session.request(method, path, **kwargs) as response:
                if response.status >= 400:
                    try:
                        message = (await response.json()).get("error")
                    except (aiohttp.ContentTypeError, ValueError, AttributeError):
                        message = None
                    raise UserError(f"{where} answered {response.status}: {message or response.reason}")
                return await response.json()
        except aiohttp.ClientError as exc:
            raise UserError(
                f"{where} holds the database but does not answer ({exc}); "
                "wait until it has started, or stop it"
            ) from None
