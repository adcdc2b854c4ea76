"""What the web server searches: the exact vector index plus each image's facts, in memory.

Loaded from the store at start and kept in step with it: directly from the daemon's hooks under
``serve``, or by polling the store's change counter under ``web`` (daemon elsewhere).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from image_search.store import Store, from_bytes, real_path
from image_search.vectors import VectorIndex

log = logging.getLogger(__name__)

META_FIELDS = (
    "id, path, path_bytes, root, taken_at, width, height, format, hash, size, fingerprint, embedding"
)


@dataclass(frozen=True)
class Meta:
    path: str
    root: str
    taken_at: float  # epoch seconds, NaN when unknown
    width: int | None
    height: int | None
    format: str | None
    hash: str | None
    size: int | None = None
    fingerprint: bytes | None = None

    @property
    def rel(self) -> str:
        return os.path.relpath(self.path, self.root)

    @property
    def folder(self) -> str:
        return os.path.dirname(self.rel)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Meta:
        taken = row.get("taken_at")
        return cls(
            path=real_path(row),
            root=row["root"],
            taken_at=taken.timestamp() if isinstance(taken, dt.datetime) else float("nan"),
            width=row.get("width"),
            height=row.get("height"),
            format=row.get("format"),
            hash=row.get("hash"),
            size=row.get("size"),
            fingerprint=row.get("fingerprint"),
        )


@dataclass(frozen=True)
class Filters:
    root: str | None = None
    folder: str | None = None  # relative to its root; matches the folder and everything below
    taken_from: float | None = None
    taken_to: float | None = None
    formats: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.root
            or self.folder
            or self.taken_from is not None
            or self.taken_to is not None
            or self.formats
        )


class Library:
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.index = VectorIndex()
        self.meta: dict[str, Meta] = {}
        self.version = 0
        self._columns: tuple[int, dict[str, np.ndarray]] | None = None
        # Changes that arrive while load() reads the store are replayed after it.
        self._replay: list[tuple[str, Any, Any]] | None = None

    def __len__(self) -> int:
        return len(self.index)

    async def load(self, store: Store) -> None:
        self._replay = []
        try:
            await self._load(store)
        finally:
            replay, self._replay = self._replay, None
        for kind, first, second in replay:
            if kind == "upsert":
                self.upsert_rows(first, second)
            else:
                self.remove(first)

    async def _load(self, store: Store) -> None:
        rows = await store.first(
            f"SELECT {META_FIELDS} FROM image WHERE model = $m AND embedding != NONE AND offline = false",
            {"m": self.model_id},
        )
        keys = [row["id"].id for row in rows]
        matrix = (
            np.frombuffer(b"".join(row["embedding"] for row in rows), dtype=np.float16).reshape(len(rows), -1)
            if rows
            else np.zeros((0, 0), dtype=np.float16)
        )
        self.index = VectorIndex.build(keys, matrix)
        self.meta = {row["id"].id: Meta.from_row(row) for row in rows}
        self.version += 1

    async def refresh(self, store: Store, keys: list[str]) -> None:
        """Re-read these keys from the store: present ones are upserted, absent ones removed."""
        from image_search.store import record_id

        rows = await store.first(
            f"SELECT {META_FIELDS} FROM $ids WHERE model = $m AND embedding != NONE AND offline = false",
            {"ids": [record_id(k) for k in keys], "m": self.model_id},
        )
        found = {row["id"].id: row for row in rows}
        self.remove([k for k in keys if k not in found])
        if found:
            vectors = np.stack([from_bytes(r["embedding"]).astype(np.float32) for r in found.values()])
            self.index.upsert(list(found), vectors)
            self.meta.update({k: Meta.from_row(r) for k, r in found.items()})
            self.version += 1

    def upsert_rows(self, rows: list[dict[str, Any]], vectors: np.ndarray) -> None:
        """Rows just written (with ``key`` and their facts) and their vectors."""
        if self._replay is not None:
            self._replay.append(("upsert", rows, vectors))
            return
        if rows:
            keys = [row["key"] for row in rows]
            self.index.upsert(keys, vectors)
            self.meta.update({key: Meta.from_row(row) for key, row in zip(keys, rows, strict=True)})
            self.version += 1

    def remove(self, keys: list[str]) -> None:
        if self._replay is not None:
            self._replay.append(("remove", keys, None))
            return
        if keys:
            self.index.remove(keys)
            for key in keys:
                self.meta.pop(key, None)
            self.version += 1

    def columns(self) -> dict[str, np.ndarray]:
        """Facts aligned with the index rows, rebuilt only after a change."""
        if self._columns is None or self._columns[0] != self.version:
            keys = self.index.keys
            metas = [self.meta[k] for k in keys]
            self._columns = (
                self.version,
                {
                    "taken": np.array([m.taken_at for m in metas], dtype=np.float64),
                    "root": np.array([m.root for m in metas], dtype=object),
                    "format": np.array([(m.format or "").upper() for m in metas], dtype=object),
                    "folder": np.array([m.folder for m in metas], dtype=object),
                },
            )
        return self._columns[1]

    def mask(self, filters: Filters, exclude: set[str]) -> np.ndarray | None:
        if filters.empty and not exclude:
            return None
        n = len(self.index)
        allowed = np.ones(n, dtype=bool)
        if not filters.empty:
            cols = self.columns()
            if filters.root:
                allowed &= cols["root"] == filters.root
            if filters.folder:
                folder = filters.folder.strip("/")
                allowed &= np.fromiter(
                    (f == folder or f.startswith(folder + "/") for f in cols["folder"]), bool, count=n
                )
            with np.errstate(invalid="ignore"):
                if filters.taken_from is not None:
                    allowed &= cols["taken"] >= filters.taken_from
                if filters.taken_to is not None:
                    allowed &= cols["taken"] <= filters.taken_to
            if filters.formats:
                allowed &= np.isin(cols["format"], [f.upper() for f in filters.formats])
        for key in exclude:
            pos = self.index.position(key)
            if pos is not None:
                allowed[pos] = False
        return allowed

    def folders(self) -> dict[str, list[str]]:
        tree: dict[str, set[str]] = {}
        for meta in self.meta.values():
            tree.setdefault(meta.root, set()).add(meta.folder)
        return {root: sorted(f for f in folders if f) for root, folders in sorted(tree.items())}


async def follow_store(library: Library, store: Store, interval: float = 1.0) -> None:
    """Poll the store's change counter; on a change, re-read what changed since the last look.

    For ``image-search web`` against a SurrealDB server with the daemon in another process.
    New and changed rows are found by ``indexed_at``; deletions and moves by comparing ids.
    """
    seen = await store.change_seq()
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    while True:
        await asyncio.sleep(interval)
        try:
            seq = await store.change_seq()
            if seq == seen:
                continue
            seen = seq
            started = dt.datetime.now(dt.UTC)
            changed = await store.first(
                "SELECT VALUE id FROM image WHERE indexed_at >= $t", {"t": since - dt.timedelta(seconds=2)}
            )
            present = set(
                await store.first(
                    "SELECT VALUE id FROM image WHERE model = $m AND embedding != NONE AND offline = false",
                    {"m": library.model_id},
                )
            )
            present_keys = {rid.id for rid in present}
            gone = [k for k in library.meta if k not in present_keys]
            appeared = [k for k in present_keys if k not in library.meta]
            library.remove(gone)
            refresh = list({rid.id for rid in changed} | set(appeared))
            if refresh:
                await library.refresh(store, refresh)
            since = started
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a server hiccup: try again next time
            log.warning("following the database failed: %s", exc)
