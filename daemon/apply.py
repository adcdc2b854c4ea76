"""Work → the database: index settled files, follow deletions and moves, reconcile folders with
the store, mark folders offline and back. Tells its listener (the web server's library) of every
row written or removed."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from image_search.duplicates import Calibration, measure_library
from image_search.indexing import FileRef, Indexer, LibraryListener, Summary, remove_missing, remove_rows
from image_search.pictures import Filter, Thumbnails, walk
from image_search.store import ImageRow, Store, from_bytes, image_key, key_of, now, real_path

from .intake import Intake
from .progress import DaemonStatus
from .work import Calibrate, Delete, IndexFiles, Move, Reconcile, Work

log = logging.getLogger("image_search.daemon")


class Listeners:
    """Fans the store's changes out to every subscriber (each web app under ``serve``)."""

    def __init__(self) -> None:
        self._all: list[LibraryListener] = []

    def subscribe(self, listener: LibraryListener) -> Callable[[], None]:
        self._all.append(listener)
        return lambda: self._all.remove(listener) if listener in self._all else None

    def upsert_rows(self, rows: Sequence[ImageRow], vectors: np.ndarray) -> None:
        for listener in list(self._all):
            listener.upsert_rows(rows, vectors)

    def remove(self, keys: Sequence[str]) -> None:
        for listener in list(self._all):
            listener.remove(keys)


def root_present(root: str) -> bool:
    return os.path.isdir(root) and os.access(root, os.R_OK | os.X_OK)


class Applier:
    def __init__(
        self,
        store: Store,
        indexer: Indexer,
        thumbs: Thumbnails,
        intake: Intake,
        status: DaemonStatus,
        listeners: Listeners,
    ) -> None:
        self.store = store
        self.indexer = indexer
        self.thumbs = thumbs
        self.intake = intake
        self.status = status
        self.listeners = listeners
        self.model_id = indexer.model_id
        self.offline: set[str] = set()
        self.calibration: Calibration | None = None  # the near-duplicate threshold, measured once
        # Folder comings and goings, for the watcher: called with (root, present).
        self.on_root: Callable[[str, bool], None] | None = None

    async def apply(self, item: Work) -> None:
        if isinstance(item, IndexFiles):
            await self.index(item.files)
        elif isinstance(item, Delete):
            await self.delete(item)
        elif isinstance(item, Move):
            await self.move(item)
        elif isinstance(item, Calibrate):
            if self.calibration is None:
                self.calibration = await measure_library(self.store, self.indexer)
        else:
            assert isinstance(item, Reconcile)
            await self.reconcile(item.roots or None)

    async def index(self, files: list[FileRef]) -> Summary:
        self.status.state = "indexing"
        summary = await self.indexer.index(files)
        self.status.count(summary)
        if self.calibration is None and summary.indexed:
            self.intake.put(Calibrate())
        self.status.state = "watching"
        return summary

    async def delete(self, item: Delete) -> None:
        root = self.intake.root_for(item.path)
        if root is None or not root_present(root):
            return  # outside the roots; or the root went away: offline, not deleted (watch_roots)
        if item.is_dir or item.path == root:
            rows = await self.store.rows_under(root, item.path.rstrip("/") + "/")
        else:
            rows = list((await self.store.get([image_key(item.path)])).values())
        gone = await asyncio.to_thread(_vanished, rows)
        await remove_rows(self.store, self.thumbs, gone, self.listeners)

    async def move(self, item: Move) -> None:
        src_root, dest_root = self.intake.root_for(item.src), self.intake.root_for(item.dest)
        if src_root is None and dest_root is None:
            return
        pairs: list[tuple[str, str, str]] = []
        stale: list[ImageRow] = []
        if src_root is not None:
            if item.is_dir:
                rows = await self.store.rows_under(src_root, item.src.rstrip("/") + "/")
            else:
                rows = list((await self.store.get([image_key(item.src)])).values())
            for row in rows:
                old = real_path(row)
                new = item.dest + old[len(item.src) :] if item.is_dir else item.dest
                if dest_root is not None and self.intake.wanted(new):
                    pairs.append((old, new, dest_root))
                else:
                    stale.append(row)  # moved out of the roots, or renamed to an ignored name
        missing = await self.store.move(pairs)
        await remove_rows(self.store, self.thumbs, stale, self.listeners)
        if pairs:  # the same vectors under new keys
            self.listeners.remove([image_key(old) for old, _, _ in pairs])
            self._announce(
                await self.store.searchable_rows(self.model_id, keys=[image_key(n) for _, n, _ in pairs])
            )
        if dest_root is not None:  # what had no row (a finished download, a folder moved in): index it
            news = [new for old, new, _ in pairs if old in missing]
            if item.is_dir and not pairs:
                news += list(walk(item.dest, self.intake.filter))
            elif not item.is_dir and not pairs and self.intake.wanted(item.dest):
                news.append(item.dest)
            for path in news:
                self.intake.touch(path)

    def _announce(self, rows: list[ImageRow]) -> None:
        if rows:
            vectors = np.stack([from_bytes(r["embedding"]).astype(np.float32) for r in rows])  # type: ignore[arg-type]
            self.listeners.upsert_rows(rows, vectors)

    async def reconcile(self, roots: Sequence[str] | None = None) -> Summary:
        """Compare each present root with the database: index new and changed files, remove rows
        of files that are gone. A root that is missing or unreadable is marked offline instead."""
        total = Summary()
        self.status.state = "reconciling"
        for root in roots or self.intake.roots:
            if not root_present(root):
                await self.set_offline(root, True)
                continue
            await self.set_offline(root, False)
            unreadable: list[str] = []
            files = await asyncio.to_thread(_listing, root, self.intake.filter, unreadable)
            missing = await remove_missing(
                self.store, self.thumbs, root, set(files), unreadable=unreadable, listener=self.listeners
            )
            if missing.online:  # back from offline: searchable again, with the same vectors
                self._announce(await self.store.searchable_rows(self.model_id, keys=missing.online))
            total.removed += len(missing.removed)
            total.offline += len(missing.offline)
            refs = [FileRef(f, root) for f in files]
            self.intake.queued.update(files)
            try:
                total.add(await self.index(refs))
            finally:
                self.intake.done(refs)
        self.status.last_reconcile = now().isoformat()
        self.status.state = "watching"
        log.info(
            "reconcile: indexed %d, reused %d, unchanged %d, removed %d, offline %d, failed %d",
            *(total.indexed, total.reused, total.unchanged, total.removed, total.offline, len(total.failed)),
        )
        return total

    async def set_offline(self, root: str, offline: bool) -> None:
        """A folder that is gone or unreadable keeps its rows, marked offline (not searched); when
        it returns they are searchable again, not embedded again."""
        if offline == (root in self.offline):
            return
        changed = await self.store.set_offline(root, offline)
        if offline:
            self.offline.add(root)
            log.warning(
                "picture folder %s is gone or unreadable: %d photos marked offline (not deleted)",
                root,
                changed,
            )
            self.listeners.remove([key_of(r) for r in await self.store.rows_under(root)])
        else:
            self.offline.discard(root)
            log.info("picture folder %s is back: %d photos online", root, changed)
            if changed:
                self._announce(await self.store.searchable_rows(self.model_id, root=root))
        if self.on_root is not None:
            self.on_root(root, not offline)
        self.status.offline_roots = sorted(self.offline)

    async def watch_roots(self) -> None:
        """A root that disappears (an unmounted disk, a NAS that drops) goes offline; when it comes
        back it is reconciled, which finds its files unchanged and embeds nothing."""
        while True:
            await asyncio.sleep(1.0)
            for root in self.intake.roots:
                present = root_present(root)
                if not present and root not in self.offline:
                    await self.set_offline(root, True)
                elif present and root in self.offline:
                    await self.set_offline(root, False)
                    self.intake.reconcile([root])


def _listing(root: str, flt: Filter, unreadable: list[str]) -> list[str]:
    return list(walk(root, flt, unreadable))


def _vanished(rows: list[ImageRow]) -> list[ImageRow]:
    return [row for row in rows if not os.path.lexists(real_path(row))]
