"""The searchable library in memory: the exact vector index plus each image's facts.

Loaded from the store at start and kept in step with it: directly from the indexing service's
notifications under ``serve``, or by polling the store's change counter (:func:`follow_store`)
when the daemon runs in another process. Searches, albums and near-duplicates all read it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gc
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnknownImage
from ..store import ImageRow, ModelIdentity, Store, from_bytes, key_of
from . import snapshot as snapshots
from .facts import Filters, Meta
from .stacks import Stacks, is_raw_format
from .vectors import VectorIndex

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _bulk() -> Iterator[None]:
    """Without the cyclic garbage collector: making a million small objects otherwise sets it off
    again and again over a growing heap (twice the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _matrix(rows: Sequence[ImageRow]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 0), dtype=np.float16)
    blob = b"".join(r["embedding"] for r in rows)  # type: ignore[misc]
    return np.frombuffer(blob, dtype=np.float16).reshape(len(rows), -1)


class Library:
    """What can be searched, and the facts shown with each result."""

    def __init__(self, model_id: str, *, file_times: bool = False) -> None:
        self.model_id = model_id
        self.file_times = file_times  # undated photos dated by their file's time (an option)
        self.index = VectorIndex()
        self.meta: dict[str, Meta] = {}
        self.stacks = Stacks()  # RAW + JPEG pairs: searches show each shot once
        self.version = 0
        self._columns: tuple[int, dict[str, np.ndarray]] | None = None
        self._shown: tuple[int, np.ndarray] | None = None
        # Changes that arrive while load() reads the store are replayed after it.
        self._replay: list[tuple[str, Any, Any]] | None = None
        self.saving: asyncio.Future[None] | None = None  # the snapshot being written after a load

    @property
    def _snapshot_tag(self) -> str:
        """What a snapshot was made for: the model, and whether undated photos took file times."""
        return self.model_id + ("|file-times" if self.file_times else "")

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    async def open(cls, store: Store, model: ModelIdentity | str, snapshot: Path | None = None) -> Library:
        """The library of this model's vectors; :class:`ModelMismatch` if the store holds another's."""
        library = cls(await store.require_model(model))
        await library.load(store, snapshot)
        return library

    async def load(
        self, store: Store, snapshot: Path | None = None, executor: concurrent.futures.Executor | None = None
    ) -> None:
        """Everything searchable, from ``snapshot`` (:mod:`image_search.search.snapshot`) when it was
        written at the store's change counter, else from the store (then written anew, aside).
        The matrix is built on ``executor`` (the web app's compute thread; None: asyncio's)."""
        self._replay = []
        loop = asyncio.get_running_loop()
        try:
            seq = await store.change_seq()
            got = (
                await asyncio.to_thread(snapshots.load, snapshot, seq, self._snapshot_tag)
                if snapshot
                else None
            )
            if got is not None:
                columns, matrix = got
                keys = columns["key"]
                # The matrix's blocks on a thread (torch, without the GIL) while the facts are made.
                building = loop.run_in_executor(executor, VectorIndex.build, keys, matrix)
                with _bulk():
                    self._from_snapshot(columns)
            else:
                rows = await store.searchable_rows(self.model_id)
                keys = [key_of(row) for row in rows]
                matrix = _matrix(rows)
                building = loop.run_in_executor(executor, VectorIndex.build, keys, matrix)
                with _bulk():
                    self.meta = {
                        key: Meta.from_row(row, self.file_times) for key, row in zip(keys, rows, strict=True)
                    }
                if snapshot is not None and len(rows) and await store.change_seq() == seq:
                    metas = list(self.meta.values())  # in the keys' order, as they were loaded
                    self.saving = loop.run_in_executor(None, self._save, snapshot, seq, keys, metas, matrix)
            self.index = await building
            self.stacks.rebuild(self.meta)
            self.version += 1
        finally:
            replay, self._replay = self._replay, None
        for kind, first, second in replay:
            if kind == "upsert":
                self.upsert_rows(first, second)
            else:
                self.remove(first)

    def _from_snapshot(self, columns: dict[str, Any]) -> None:
        keys = columns["key"]
        facts = zip(
            columns["path"],
            columns["root"],
            columns["taken"].tolist(),
            columns["width"],
            columns["height"],
            columns["format"],
            columns["hash"],
            columns["size"],
            columns["fingerprint"],
            strict=True,
        )
        self.meta = dict(zip(keys, map(Meta._make, facts), strict=True))

    def _save(self, folder: Path, seq: int, keys: list[str], metas: list[Meta], matrix: np.ndarray) -> None:
        """On a thread: the snapshot of what was just loaded."""
        try:
            columns: dict[str, Any] = {"key": keys, "taken": [m.taken_at for m in metas]}
            for name in ("path", "root", "format", "hash", "width", "height", "size", "fingerprint"):
                columns[name] = [getattr(m, name) for m in metas]
            snapshots.save(folder, seq, self._snapshot_tag, columns, matrix)
            log.info("library snapshot written: %d photos", len(keys))
        except Exception as exc:  # a full disk: the next start loads from the store again
            log.warning("could not write the library snapshot %s: %s", folder, exc)

    async def refresh(self, store: Store, keys: list[str]) -> None:
        """Re-read these keys from the store: searchable ones are upserted, the others removed."""
        rows = await store.searchable_rows(self.model_id, keys=keys)
        found = {key_of(row): row for row in rows}
        self.remove([k for k in keys if k not in found])
        if found:
            vectors = np.stack([from_bytes(r["embedding"]).astype(np.float32) for r in found.values()])  # type: ignore[arg-type]
            self.index.upsert(list(found), vectors)
            self.meta.update({k: Meta.from_row(r, self.file_times) for k, r in found.items()})
            self.stacks.changed(self.meta, found)
            self.version += 1

    def upsert_rows(self, rows: Sequence[ImageRow], vectors: np.ndarray) -> None:
        """Rows just written (with ``key`` or ``id``, and their facts) and their vectors."""
        if self._replay is not None:
            self._replay.append(("upsert", rows, vectors))
            return
        if rows:
            keys = [str(row["key"]) if "key" in row else key_of(row) for row in rows]
            self.index.upsert(keys, vectors)
            self.meta.update(
                {key: Meta.from_row(row, self.file_times) for key, row in zip(keys, rows, strict=True)}
            )
            self.stacks.changed(self.meta, keys)
            self.version += 1

    def remove(self, keys: Sequence[str]) -> None:
        if self._replay is not None:
            self._replay.append(("remove", keys, None))
            return
        if keys:
            self.index.remove(keys)
            for key in keys:
                self.meta.pop(key, None)
            self.stacks.changed(self.meta, keys)
            self.version += 1

    def vectors(self, ids: Sequence[str], what: str = "id") -> np.ndarray:
        """The vectors of these images; :class:`UnknownImage` names the first the library lacks."""
        unknown = [i for i in ids if i not in self.index]
        if unknown:
            raise UnknownImage(f"unknown image id in {what}: {unknown[0]}")
        return self.index.vectors(ids)

    def columns(self) -> dict[str, np.ndarray]:
        """Facts aligned with the index rows, rebuilt only after a change."""
        if self._columns is None or self._columns[0] != self.version:
            metas = [self.meta[k] for k in self.index.keys]
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

    def shown(self) -> np.ndarray:
        """The index rows that are not the hidden RAW of a pair, rebuilt only after a change."""
        if self._shown is None or self._shown[0] != self.version:
            shown = np.ones(len(self.index), dtype=bool)
            for key in self.stacks.hidden:
                pos = self.index.position(key)
                if pos is not None:
                    shown[pos] = False
            self._shown = (self.version, shown)
        return self._shown[1]

    def pair(self, key: str) -> list[tuple[str, Meta]]:
        """The RAW files of the shot this file shows (a RAW + JPEG pair), if any."""
        return [(k, self.meta[k]) for k in self.stacks.pairs.get(key, ()) if k in self.meta]

    def mask(self, filters: Filters, exclude: set[str]) -> np.ndarray | None:
        """Which index rows a search may return (None: all of them). The RAW file of a RAW + JPEG
        pair is not returned on its own (its JPEG names it), unless the filters ask for RAW."""
        hide = not any(is_raw_format(f) for f in filters.formats) and bool(self.stacks.hidden)
        if filters.empty and not exclude and not hide:
            return None
        n = len(self.index)
        allowed = self.shown().copy() if hide else np.ones(n, dtype=bool)
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

    For a web server with the daemon in another process (a SurrealDB server between them).
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
            changed = await store.changed_since(since - dt.timedelta(seconds=2))
            present = await store.searchable_keys(library.model_id)
            library.remove([k for k in library.meta if k not in present])
            refresh = changed | {k for k in present if k not in library.meta}
            if refresh:
                await library.refresh(store, list(refresh))
            since = started
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a server hiccup: try again next time
            log.warning("following the database failed: %s", exc)
