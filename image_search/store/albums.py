"""Every query on the ``album`` table. Album logic (names, members, "new") lives in
:mod:`image_search.search.albums`; this only reads and writes rows."""

from __future__ import annotations

from typing import Any

from .connection import Connection, QueryFailed
from .rows import ALBUM_TABLE, AlbumRow, record_id


class AlbumConflict(QueryFailed):
    """Another album already has this name."""


def _rid(album_id: str) -> Any:
    return record_id(album_id, ALBUM_TABLE)


def _conflict(exc: QueryFailed) -> QueryFailed:
    if "album_name" in str(exc) or "already contains" in str(exc):
        return AlbumConflict(str(exc))
    return exc


class AlbumTable(Connection):
    async def albums(self) -> list[AlbumRow]:
        return await self.first("SELECT * FROM album ORDER BY name")

    async def album_count(self) -> int:
        if await self.schema_version() < 2:
            return 0
        rows = await self.first("SELECT count() AS n FROM album GROUP ALL")
        return int(rows[0]["n"]) if rows else 0

    async def album_versions(self) -> list[tuple[str, Any, Any]]:
        """Each album's id, last change and last visit: what tells a cache that albums changed,
        without reading their vectors and seen lists."""
        rows = await self.first("SELECT id, updated_at, visited_at FROM album ORDER BY id")
        return [(str(row["id"].id), row.get("updated_at"), row.get("visited_at")) for row in rows]

    async def album(self, album_id: str) -> AlbumRow | None:
        rows = await self.first("SELECT * FROM $id", {"id": _rid(album_id)})
        return rows[0] if rows else None

    async def album_named(self, name: str) -> AlbumRow | None:
        rows = await self.first("SELECT * FROM album WHERE name = $n", {"n": name})
        return rows[0] if rows else None

    async def put_album(self, album_id: str, content: dict[str, Any]) -> None:
        """Create or replace; :class:`AlbumConflict` when the name is taken."""
        try:
            await self.transact("UPSERT $id CONTENT $c RETURN NONE", {"id": _rid(album_id), "c": content})
        except QueryFailed as exc:
            raise _conflict(exc) from None

    async def rename_album(self, album_id: str, name: str) -> AlbumRow | None:
        try:
            rows = (
                await self.transact(
                    "UPDATE $id SET name = $n, updated_at = time::now() RETURN AFTER",
                    {"id": _rid(album_id), "n": name},
                )
            )[0]
        except QueryFailed as exc:
            raise _conflict(exc) from None
        return rows[0] if rows else None

    async def delete_album(self, album_id: str) -> bool:
        rows = (await self.transact("DELETE $id RETURN BEFORE", {"id": _rid(album_id)}))[0]
        return bool(rows)

    async def set_album_vector(self, album_id: str, vector: bytes, model: str) -> None:
        await self.transact(
            "UPDATE $id SET vector = $v, model = $m RETURN NONE",
            {"id": _rid(album_id), "v": vector, "m": model},
        )

    async def mark_album_seen(self, album_id: str, keys: list[str]) -> None:
        await self.transact(
            "UPDATE $id SET seen = array::union(seen, $k), visited_at = time::now() RETURN NONE",
            {"id": _rid(album_id), "k": keys},
        )
