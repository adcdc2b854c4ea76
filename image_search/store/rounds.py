"""Every query on the ``rounds`` and ``picture`` tables: the refine page's searches in progress
(each round's query, view and judgements, so that a URL, a reload or a second tab shows the same
round) and the pictures searched with (their embedding and a small preview, so that a round that
searched with a picture is replayed without the upload). Both are kept bounded: the most recently
used ``keep`` of each."""

from __future__ import annotations

from typing import Any

from .connection import Connection
from .rows import record_id

ROUNDS_TABLE = "rounds"
PICTURE_TABLE = "picture"


class RoundTable(Connection):
    async def rounds(self, search_id: str) -> list[dict[str, Any]] | None:
        rows = await self.first("SELECT rounds FROM $id", {"id": record_id(search_id, ROUNDS_TABLE)})
        return list(rows[0]["rounds"]) if rows else None

    async def put_rounds(self, search_id: str, rounds: list[dict[str, Any]], keep: int) -> None:
        """Create or replace a search's rounds; the oldest searches past ``keep`` go."""
        await self.transact(
            "UPSERT $id SET rounds = $r, updated_at = time::now() RETURN NONE;"
            "LET $old = (SELECT VALUE id FROM rounds ORDER BY updated_at DESC START $keep LIMIT 1000);"
            "DELETE $old RETURN NONE;",
            {"id": record_id(search_id, ROUNDS_TABLE), "r": rounds, "keep": keep},
        )

    async def picture(self, picture_id: str) -> dict[str, Any] | None:
        rows = await self.first(
            "SELECT vector, preview, model FROM $id", {"id": record_id(picture_id, PICTURE_TABLE)}
        )
        return rows[0] if rows else None

    async def put_picture(
        self, picture_id: str, vector: bytes, preview: bytes, model: str, keep: int
    ) -> None:
        """Keep a picture searched with (its embedding by ``model`` and a WebP preview); the
        oldest past ``keep`` go."""
        await self.transact(
            "UPSERT $id SET vector = $v, preview = $p, model = $m, used_at = time::now() RETURN NONE;"
            "LET $old = (SELECT VALUE id FROM picture ORDER BY used_at DESC START $keep LIMIT 1000);"
            "DELETE $old RETURN NONE;",
            {"id": record_id(picture_id, PICTURE_TABLE), "v": vector, "p": preview, "m": model, "keep": keep},
        )
