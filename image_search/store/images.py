"""Every query on the ``image`` table: reads for planning, listing and searching; writes in one
transaction each, each bumping the change counter."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .connection import Connection
from .rows import (
    EMBED_DTYPE,
    FACTS,
    ROW_FIELDS,
    SEARCHABLE,
    Counts,
    ImageRow,
    image_key,
    key_of,
    now,
    path_fields,
    record_id,
)

_REPLACE = ", ".join(f"{name} = $input.{name}" for name in ROW_FIELDS)
# `status`'s counts are kept by every write transaction on its lane (``lane:N``, see
# connection.LANES): the affected rows' state before ($b) and after ($a) as [total, indexed,
# failed, offline], the difference added, and the change counter bumped in the same statement.
# A scan took 1.25 s at 100k rows; a table view that kept them cost a quarter of the write rate,
# these ~3% (docs/scale.md).
_STATE = (
    "[1, IF embedding != NONE AND offline = false { 1 } ELSE { 0 }, "
    "IF error != NONE { 1 } ELSE { 0 }, IF offline { 1 } ELSE { 0 }]"
)


def _state(name: str, ids: str) -> str:
    """``LET $name`` = the summed state of the rows ``ids`` names (an empty list sums to zeros)."""
    sums = ", ".join(f"math::sum($s{name}.map(|$x| $x[{i}]))" for i in range(4))
    return f"LET $s{name} = (SELECT VALUE {_STATE} FROM {ids}); LET ${name} = [{sums}];"


_KEEP = (
    "UPSERT $lane SET seq += 1, total += $a[0] - $b[0], indexed += $a[1] - $b[1], "
    "failed += $a[2] - $b[2], offline += $a[3] - $b[3] RETURN NONE;"
)
# What the in-memory library keeps of a searchable row.
LIBRARY_FIELDS = (
    "id, path, path_bytes, root, taken_at, mtime_ns, width, height, format, hash, size, fingerprint, "
    "embedding"
)


class ImageTable(Connection):
    # -- reads -----------------------------------------------------------------------------

    async def get(self, keys: Sequence[str]) -> dict[str, ImageRow]:
        """Rows (without embedding) for these keys; absent keys are left out."""
        if not keys:
            return {}
        rows = await self.first(f"SELECT {FACTS} FROM $ids", {"ids": [record_id(k) for k in keys]})
        return {key_of(row): row for row in rows}

    async def get_one(self, key: str, *, embedding: bool = False) -> ImageRow | None:
        fields = FACTS + (", embedding" if embedding else "")
        rows = await self.first(f"SELECT {fields} FROM $id", {"id": record_id(key)})
        return rows[0] if rows else None

    async def embeddings_by_hash(
        self, hashes: Iterable[str], model_id: str
    ) -> dict[str, tuple[bytes, bytes | None]]:
        """An existing embedding of the same model, and its fingerprint, for each content hash
        that has one (a fingerprint where any row of that content has one)."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        rows = await self.first(
            "SELECT hash, embedding, fingerprint FROM image "
            "WHERE hash IN $h AND model = $m AND embedding != NONE",
            {"h": wanted, "m": model_id},
        )
        found: dict[str, tuple[bytes, bytes | None]] = {}
        for row in rows:
            if row["hash"] not in found or found[row["hash"]][1] is None:
                found[row["hash"]] = (row["embedding"], row.get("fingerprint"))
        return found

    async def rows_under(self, root: str, prefix: str | None = None) -> list[ImageRow]:
        """Every row of one picture root (no embeddings), or those whose path starts with
        ``prefix`` (a folder, with its trailing slash): what a reconcile compares with the disk."""
        if prefix is None:
            return await self.first(f"SELECT {FACTS} FROM image WHERE root = $r", {"r": root})
        return await self.first(
            f"SELECT {FACTS} FROM image WHERE root = $r AND string::starts_with(path, $p)",
            {"r": root, "p": prefix},
        )

    async def searchable_rows(
        self, model_id: str, *, keys: Sequence[str] | None = None, root: str | None = None
    ) -> list[ImageRow]:
        """Searchable rows with their embeddings and the facts the library keeps: all of them, or
        those of some keys, or of one root."""
        if keys is not None:
            source, params = "$ids", {"ids": [record_id(k) for k in keys]}
        else:
            source, params = "image", {}
        where = SEARCHABLE + (" AND root = $r" if root is not None else "")
        return await self.first(
            f"SELECT {LIBRARY_FIELDS} FROM {source} WHERE {where}", {**params, "m": model_id, "r": root}
        )

    async def searchable_keys(self, model_id: str) -> set[str]:
        ids = await self.first(f"SELECT VALUE id FROM image WHERE {SEARCHABLE}", {"m": model_id})
        return {str(rid.id) for rid in ids}

    async def some_searchable_paths(self, model_id: str, limit: int) -> list[str]:
        """Paths of up to ``limit`` searchable rows, in key order (a spread over the folders)."""
        return [
            str(p)
            for p in await self.first(
                f"SELECT VALUE path FROM image WHERE {SEARCHABLE} LIMIT $n", {"m": model_id, "n": limit}
            )
        ]

    async def changed_since(self, moment: dt.datetime) -> set[str]:
        """Keys of rows written at or after ``moment``."""
        ids = await self.first("SELECT VALUE id FROM image WHERE indexed_at >= $t", {"t": moment})
        return {str(rid.id) for rid in ids}

    async def load_embeddings(self, model_id: str) -> tuple[list[str], np.ndarray]:
        """Keys and a float16 (n, d) matrix of every searchable embedding of ``model_id``."""
        rows = await self.first(f"SELECT id, embedding FROM image WHERE {SEARCHABLE}", {"m": model_id})
        if not rows:
            return [], np.zeros((0, 0), dtype=EMBED_DTYPE)
        matrix = np.frombuffer(b"".join(row["embedding"] for row in rows), dtype=EMBED_DTYPE)
        return [key_of(row) for row in rows], matrix.reshape(len(rows), -1)

    async def counts(self) -> Counts:
        """What ``status`` shows, from the counters every write keeps (the lanes', not a scan)."""
        rows = await self.first(
            "SELECT math::sum(indexed) AS indexed, math::sum(failed) AS failed, "
            "math::sum(offline) AS offline, math::sum(total) AS total FROM lane GROUP ALL"
        )
        return Counts(**{name: int(rows[0][name]) if rows else 0 for name in Counts.__annotations__})

    async def counted(self) -> Counts:
        """The same counts by a scan of every row (the check on the counters)."""
        rows = await self.first(
            "SELECT count() AS n, embedding != NONE AS ok, error != NONE AS bad, offline "
            "FROM image GROUP BY ok, bad, offline"
        )
        indexed = sum(r["n"] for r in rows if r["ok"] and not r["offline"])
        failed = sum(r["n"] for r in rows if r["bad"])
        offline = sum(r["n"] for r in rows if r["offline"])
        return Counts(indexed=indexed, failed=failed, offline=offline, total=sum(r["n"] for r in rows))

    async def failures(self, limit: int = 1000) -> list[ImageRow]:
        return await self.first(
            "SELECT path, path_bytes, error, indexed_at FROM image WHERE error != NONE "
            "ORDER BY indexed_at DESC LIMIT $n",
            {"n": limit},
        )

    async def hashes_in_use(self, hashes: Iterable[str | None]) -> set[str]:
        wanted = sorted({h for h in hashes if h})
        if not wanted:
            return set()
        rows = await self.first("SELECT VALUE hash FROM image WHERE hash IN $h", {"h": wanted})
        return set(rows)

    # -- writes ----------------------------------------------------------------------------

    async def write(self, rows: Sequence[ImageRow | dict[str, Any]]) -> None:
        """Insert or replace whole rows, in one transaction: all of them or none.

        Each row needs ``key`` and the schema's fields; its id is ``image:key``.
        """
        if not rows:
            return
        content = [
            {**{k: v for k, v in row.items() if k != "key"}, "id": record_id(str(row["key"]))} for row in rows
        ]
        after = [0, 0, 0, 0]  # total, indexed, failed, offline of the rows as written
        for row in rows:
            after[0] += 1
            after[1] += row.get("embedding") is not None and not row.get("offline")
            after[2] += row.get("error") is not None
            after[3] += bool(row.get("offline"))
        await self.transact(
            f"BEGIN TRANSACTION; {_state('b', '$rows.id')} "
            f"INSERT INTO image $rows ON DUPLICATE KEY UPDATE {_REPLACE} RETURN NONE; "
            f"LET $a = $after; {_KEEP} COMMIT TRANSACTION;",
            {"rows": content, "after": after},
        )

    async def move(self, moves: Sequence[tuple[str, str, str]]) -> list[str]:
        """Rename rows (old path → new path, new root) keeping their embeddings, in one transaction.

        Returns the old paths that had no row (the caller indexes their new paths as new files).
        """
        if not moves:
            return []
        old_ids = [record_id(image_key(old)) for old, _, _ in moves]
        rows = await self.first(f"SELECT {FACTS}, embedding FROM $ids", {"ids": old_ids})
        by_key = {key_of(row): row for row in rows}
        fresh, missing = [], []
        for old, new, root in moves:
            row = by_key.get(image_key(old))
            if row is None:
                missing.append(old)
                continue
            moved = {name: row.get(name) for name in ROW_FIELDS}
            moved.update(
                path_fields(new), root=root, id=record_id(image_key(new)), offline=False, indexed_at=now()
            )
            fresh.append(moved)
        old_ids = [record_id(key_of(row)) for row in rows]
        await self.transact(
            f"BEGIN TRANSACTION; LET $ids = array::union($old, $rows.id); {_state('b', '$ids')} "
            "DELETE $old RETURN NONE; "
            f"INSERT INTO image $rows ON DUPLICATE KEY UPDATE {_REPLACE} RETURN NONE; "
            f"{_state('a', '$ids')} {_KEEP} COMMIT TRANSACTION;",
            {"old": old_ids, "rows": fresh},
        )
        return missing

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self.transact(
                f"BEGIN TRANSACTION; {_state('b', '$ids')} DELETE $ids RETURN NONE; "
                f"LET $a = [0, 0, 0, 0]; {_KEEP} COMMIT TRANSACTION;",
                {"ids": [record_id(k) for k in keys]},
            )

    async def set_offline_keys(self, keys: Sequence[str], offline: bool) -> None:
        """Mark these rows offline (kept, not searched) or online again."""
        if keys:
            await self.transact(
                f"BEGIN TRANSACTION; {_state('b', '$ids')} UPDATE $ids SET offline = $o RETURN NONE; "
                f"{_state('a', '$ids')} {_KEEP} COMMIT TRANSACTION;",
                {"ids": [record_id(k) for k in keys], "o": offline},
            )

    async def set_offline(self, root: str, offline: bool) -> int:
        rows = (
            await self.transact(
                "BEGIN TRANSACTION; "
                "LET $ids = (SELECT VALUE id FROM image WHERE root = $r AND offline != $o); "
                f"{_state('b', '$ids')} UPDATE $ids SET offline = $o RETURN VALUE id; "
                f"{_state('a', '$ids')} {_KEEP} COMMIT TRANSACTION;",
                {"r": root, "o": offline},
            )
        )[4]  # BEGIN, LET $ids, LET $sb, LET $b, then the UPDATE
        return len(rows)
