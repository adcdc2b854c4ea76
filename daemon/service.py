"""The watcher daemon: keeps the database equal to the picture folders.

Start: open the store, load and warm the model, reconcile every root, then watch them. Work is
serialised through one queue (index these files, apply these moves or deletions, reconcile), so
a deletion can never race the write of the same file. Every resource has one owner: this
class, entered as an async context manager, closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from image_search.config import Config
from image_search.errors import DeviceFailed
from image_search.indexer import FileRef, Indexer, Progress, Summary
from image_search.model import ImageEmbedder, ModelSource, pick_embedders
from image_search.scan import Filter, normalise_root, root_of, walk
from image_search.store import Store, Unwritable, from_bytes, image_key, now, real_path, record_id
from image_search.thumbs import Thumbnails

from .notify import Notifier
from .watch import Change, Settler, Watcher

log = logging.getLogger(__name__)

TICK = 0.25  # settle checks
BATCH_WAIT = 0.2  # how long a dynamic batch waits for more files
BACKOFF = (1.0, 30.0)  # seconds before work refused by a full or read-only disk is tried again
STATUS_EVERY = 2.0
STUCK_AFTER = 600.0  # a work item without progress for this long stops the watchdog heartbeat


@dataclass
class Work:
    kind: str  # files | moves | deletes | reconcile
    items: list[Any] = field(default_factory=list)


@dataclass
class DaemonStatus:
    state: str = "starting"
    queue: int = 0
    rate: float = 0.0
    indexed_total: int = 0
    embedded_total: int = 0
    reused_total: int = 0
    failed_total: int = 0
    errors: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=20))
    offline_roots: list[str] = field(default_factory=list)
    last_reconcile: str | None = None

    @property
    def eta(self) -> float | None:
        return self.queue / self.rate if self.rate > 0 and self.queue else None

    def line(self) -> str:
        eta = f", ETA {self.eta:.0f} s" if self.eta else ""
        return f"{self.state}: queue {self.queue}, {self.rate:.1f} img/s{eta}, {self.failed_total} failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "queue": self.queue,
            "rate": round(self.rate, 2),
            "eta": self.eta,
            "indexed_total": self.indexed_total,
            "failed_total": self.failed_total,
            "errors": list(self.errors),
            "offline_roots": self.offline_roots,
            "last_reconcile": self.last_reconcile,
            "updated_at": now(),
            "pid": os.getpid(),
        }


class Daemon:
    def __init__(
        self,
        config: Config,
        roots: Sequence[str],
        *,
        store: Store | None = None,
        embedders: Sequence[ImageEmbedder] | None = None,
        notifier: Notifier | None = None,
        handle_signals: bool = False,
        announce_ready: bool = True,
    ) -> None:
        self.config = config
        self.roots = [normalise_root(r) for r in roots]
        self.filter = Filter(config.include, config.exclude, config.follow_symlinks)
        self.source = ModelSource(config.model)
        self._own_store = store is None
        self.store = store or Store.from_config(config)
        self.embedders = list(embedders) if embedders else None
        self.notifier = notifier or Notifier()
        self.handle_signals = handle_signals
        self.announce_ready = announce_ready  # `serve` says READY itself, once the web server listens
        self.thumbs = Thumbnails(config.cache_dir)
        self.status = DaemonStatus()
        self.settler = Settler(config.settle)
        self.work: asyncio.Queue[Work] = asyncio.Queue()
        self.queued: set[str] = set()
        self.offline: set[str] = set()
        self.stop_event = asyncio.Event()
        self.idle = asyncio.Event()
        self.busy_since: float | None = None
        self.unwritable: str | None = None  # why the database refuses writes, while it does
        self._backoff = BACKOFF[0]
        self.failure: DeviceFailed | None = None
        self.last_progress = time.monotonic()
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=64)
        self._stack = contextlib.AsyncExitStack()
        self.indexer: Indexer | None = None
        self.watcher: Watcher | None = None
        # For whoever keeps an in-memory search index in step (the web server under `serve`):
        # rows written with their facts and vectors, and keys removed.
        self.on_written: Callable[[list[dict[str, Any]], np.ndarray], None] | None = None
        self.on_removed: Callable[[list[str]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Daemon:
        try:
            await self.start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.notifier.stopping()
        self.status.state = "stopping"
        await self._stack.aclose()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._own_store:
            await self.store.open()
            self._stack.push_async_callback(self.store.close)
        await self.store.check_model(self.source.model_id)
        if self.embedders is None:
            self.embedders = pick_embedders(
                self.source, self.config.device, self.config.dtype, self.config.compile
            )
            for embedder in self.embedders:  # load and warm before reporting ready
                await loop.run_in_executor(None, _load_and_warm, embedder)
        self.indexer = await self._stack.enter_async_context(
            Indexer(
                self.store,
                self.embedders,
                workers=self.config.workers,
                batch_size=self.config.batch_size,
                max_megapixels=self.config.max_megapixels,
                gpu_decode=self.config.gpu_decode,
                on_progress=self._progress,
            )
        )
        self.indexer.on_written = self._written
        self.watcher = Watcher(loop, follow_symlinks=self.config.follow_symlinks)
        self._stack.callback(self.watcher.close)
        for root in self.roots:
            if self._root_present(root):
                self.watcher.start(root)
        scheduler = AsyncIOScheduler(event_loop=loop)
        if self.config.reconcile_interval > 0:
            scheduler.add_job(self.request_reconcile, "interval", hours=self.config.reconcile_interval)
        scheduler.start()
        self._stack.callback(scheduler.shutdown, wait=False)
        if self.handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
            loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
            loop.add_signal_handler(signal.SIGHUP, self.request_reconcile)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self._stack.callback(loop.remove_signal_handler, sig)
        self.request_reconcile()
        for name, coro in (
            ("events", self._events()),
            ("settle", self._settle()),
            ("work", self._work()),
            ("roots", self._watch_roots()),
            ("status", self._report()),
        ):
            task = asyncio.create_task(coro, name=f"daemon-{name}")
            self._stack.push_async_callback(_cancel, task)
        self.status.state = "watching"
        if self.announce_ready:
            self.notifier.ready(self.status.line())
        log.info("watching %s", ", ".join(self.roots))

    async def run(self) -> None:
        """Until SIGTERM/SIGINT (with handle_signals) or :meth:`stop`; raises the failure that
        stopped it, if one did (:class:`DeviceFailed`)."""
        await self.stop_event.wait()
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        self.stop_event.set()

    def request_reconcile(self) -> None:
        self.work.put_nowait(Work("reconcile"))

    async def wait_idle(self, limit: float = 30.0) -> None:
        """Until nothing is settling, queued or running (for tests and one-shot use)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self.settler.pending and self.work.empty() and self.busy_since is None:
                await asyncio.sleep(TICK * 2)
                if not self.settler.pending and self.work.empty() and self.busy_since is None:
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("the daemon did not become idle")

    # -- events → work ---------------------------------------------------------------------

    def _root_present(self, root: str) -> bool:
        return os.path.isdir(root) and os.access(root, os.R_OK | os.X_OK)

    def _root_for(self, path: str) -> str | None:
        return root_of(path, self.roots)

    def _wanted(self, path: str) -> str | None:
        root = self._root_for(path)
        if root is None:
            return None
        rel = os.path.relpath(path, root)
        return root if self.filter.wants_file(rel) else None

    async def _events(self) -> None:
        assert self.watcher is not None
        while True:
            change = await self.watcher.queue.get()
            try:
                self._on_change(change)
            except Exception:
                log.exception("handling %s", change)

    def _on_change(self, change: Change) -> None:
        if change.kind == "changed":
            if self._wanted(change.path):
                self.settler.touch(change.path)
        elif change.kind == "created_dir":
            root = self._root_for(change.path)
            if root and self.filter.wants_dir(os.path.relpath(change.path, root)):
                for path in walk(change.path, self.filter):
                    self.settler.touch(path)
        elif change.kind == "deleted":
            self.settler.forget_under(change.path + "/") if change.is_dir else self.settler.forget(
                change.path
            )
            self.work.put_nowait(Work("deletes", [(change.path, change.is_dir)]))
        elif change.kind == "moved" and change.dest is not None:
            if change.is_dir:
                self.settler.forget_under(change.path + "/")
            else:
                self.settler.forget(change.path)
            self.work.put_nowait(Work("moves", [(change.path, change.dest, change.is_dir)]))

    async def _settle(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            ready = await asyncio.to_thread(self.settler.ready)
            files = []
            for path in ready:
                root = self._wanted(path)
                if root and path not in self.queued:
                    self.queued.add(path)
                    files.append(FileRef(path, root))
            if files:
                self.work.put_nowait(Work("files", files))

    # -- the one worker ----------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self.work.get()
            if item.kind == "files":  # a dynamic batch: what else arrives within BATCH_WAIT
                limit = 4 * (self.indexer.batch_size if self.indexer else 64)
                deadline = time.monotonic() + BATCH_WAIT
                while len(item.items) < limit:
                    try:
                        more = await asyncio.wait_for(self.work.get(), max(0.0, deadline - time.monotonic()))
                    except TimeoutError:
                        break
                    if more.kind != "files":
                        self.work.put_nowait(more)  # keep its turn after this batch
                        break
                    item.items.extend(more.items)
            self.busy_since = time.monotonic()
            retry = False
            try:
                await self._do(item)
                if self.unwritable:
                    log.info("the database takes writes again: indexing resumes")
                    self.unwritable, self._backoff = None, BACKOFF[0]
            except asyncio.CancelledError:
                raise
            except DeviceFailed as exc:
                log.critical("%s: stopping, for the service manager to restart image-search", exc)
                self.failure = exc
                self.stop_event.set()
                return
            except Unwritable as exc:
                # A full or read-only disk: nothing of this item was lost or half-written, so the
                # same work is tried again, less and less often, until the disk takes writes.
                retry = True
                if str(exc) != self.unwritable:
                    log.error("%s; retrying every %d s at most", exc, BACKOFF[1])
                    self.status.errors.append({"path": "", "error": str(exc)})
                self.unwritable = str(exc)
                self.status.state = "paused"
                self.notifier.status(f"paused: {exc}")
                asyncio.get_running_loop().call_later(self._backoff, self.work.put_nowait, item)
                self._backoff = min(self._backoff * 2, BACKOFF[1])
            except Exception as exc:
                log.exception("%s failed", item.kind)
                self.status.errors.append({"path": "", "error": f"{item.kind}: {exc}"})
            finally:
                self.busy_since = None
                if item.kind == "files" and not retry:
                    self.queued.difference_update(ref.path for ref in item.items)

    async def _do(self, item: Work) -> None:
        if item.kind == "files":
            await self._index(item.items)
        elif item.kind == "deletes":
            await self._apply_deletes(item.items)
        elif item.kind == "moves":
            await self._apply_moves(item.items)
        elif item.kind == "reconcile":
            await self.reconcile(item.items or None)

    async def _index(self, files: list[FileRef]) -> Summary:
        assert self.indexer is not None
        self.status.state = "indexing"
        summary = await self.indexer.index(files)
        self.status.indexed_total += summary.indexed + summary.reused
        self.status.embedded_total += summary.indexed
        self.status.reused_total += summary.reused
        self.status.failed_total += len(summary.failed)
        for path, error in summary.failed:
            self.status.errors.append({"path": path, "error": error})
        self.status.state = "watching"
        return summary

    def _progress(self, progress: Progress) -> None:
        self.last_progress = time.monotonic()
        self._rate_window.append((self.last_progress, progress.done))

    def _written(self, rows: list[dict[str, Any]], vectors: np.ndarray, removed: list[str]) -> None:
        if removed and self.on_removed is not None:
            self.on_removed(removed)
        if rows and self.on_written is not None:
            self.on_written(rows, vectors)

    async def _removed(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        await self.store.delete([row["id"].id for row in rows])
        in_use = await self.store.hashes_in_use(row["hash"] for row in rows)
        await asyncio.to_thread(self.thumbs.forget, [r["hash"] for r in rows if r["hash"] not in in_use])
        if self.on_removed is not None:
            self.on_removed([row["id"].id for row in rows])

    async def _apply_deletes(self, items: list[tuple[str, bool]]) -> None:
        for path, is_dir in items:
            root = self._root_for(path)
            if root is None:
                continue
            if not self._root_present(root):
                continue  # the root went away: offline, not deleted (see _watch_roots)
            if is_dir or path == root:
                rows = await self.store.rows_with_prefix(root, path.rstrip("/") + "/")
            else:
                rows = list((await self.store.get([FileRef(path, root).key])).values())
            gone = await asyncio.to_thread(_vanished, rows)
            await self._removed(gone)

    async def _apply_moves(self, items: list[tuple[str, str, bool]]) -> None:
        for src, dest, is_dir in items:
            src_root, dest_root = self._root_for(src), self._root_for(dest)
            if src_root is None and dest_root is None:
                continue
            pairs: list[tuple[str, str, str]] = []
            stale: list[dict[str, Any]] = []
            if src_root is not None:
                rows = (
                    await self.store.rows_with_prefix(src_root, src.rstrip("/") + "/")
                    if is_dir
                    else list((await self.store.get([FileRef(src, src_root).key])).values())
                )
                for row in rows:
                    old = real_path(row)
                    new = dest + old[len(src) :] if is_dir else dest
                    if dest_root is not None and self._wanted(new):
                        pairs.append((old, new, dest_root))
                    else:
                        stale.append(row)  # moved out of the roots, or renamed to an ignored name
            missing = await self.store.move(pairs)
            await self._removed(stale)
            if pairs and self.on_written is not None:  # new keys for the same vectors
                await self._refresh_index([new for _, new, _ in pairs], [old for old, _, _ in pairs])
            # What had no row (a finished download renamed from .part, a folder moved in): index it.
            if dest_root is not None:
                news = [new for old, new, _ in pairs if old in missing]
                if is_dir:
                    news += list(walk(dest, self.filter)) if not pairs else []
                elif not pairs and self._wanted(dest):
                    news.append(dest)
                for path in news:
                    self.settler.touch(path)

    async def _refresh_index(self, new_paths: list[str], old_paths: list[str]) -> None:
        """Moved rows keep their vectors under new keys: tell the in-memory index."""
        if self.on_removed is not None:
            self.on_removed([image_key(p) for p in old_paths])
        await self._announce(
            "SELECT * FROM $ids WHERE embedding != NONE",
            {"ids": [record_id(image_key(p)) for p in new_paths]},
        )

    async def _announce(self, sql: str, params: dict[str, Any]) -> None:
        if self.on_written is None:
            return
        rows = await self.store.first(sql, params)
        if rows:
            for row in rows:
                row["key"] = row["id"].id
            vectors = np.stack([from_bytes(r["embedding"]).astype(np.float32) for r in rows])
            self.on_written(rows, vectors)

    # -- reconcile and roots -----------------------------------------------------------------

    async def reconcile(self, roots: Sequence[str] | None = None) -> Summary:
        """Compare each present root with the database: index new and changed files, remove rows
        of files that are gone. A root that is missing or unreadable is marked offline instead."""
        assert self.indexer is not None
        total = Summary()
        self.status.state = "reconciling"
        for root in roots or self.roots:
            if not self._root_present(root):
                await self._set_offline(root, True)
                continue
            await self._set_offline(root, False)
            files = await asyncio.to_thread(_listing, root, self.filter)
            seen = set(files)
            gone = [row for row in await self.store.rows_under(root) if real_path(row) not in seen]
            await self._removed(gone)
            total.removed += len(gone)
            self.queued.update(files)
            try:
                summary = await self._index([FileRef(f, root) for f in files])
            finally:
                self.queued.difference_update(files)
            total.add(summary)
        self.status.last_reconcile = now().isoformat()
        self.status.state = "watching"
        log.info(
            "reconcile: indexed %d, reused %d, unchanged %d, removed %d, failed %d",
            total.indexed,
            total.reused,
            total.unchanged,
            total.removed,
            len(total.failed),
        )
        return total

    async def _set_offline(self, root: str, offline: bool) -> None:
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
            if self.watcher:
                self.watcher.stop(root)
            if self.on_removed is not None:
                self.on_removed([r["id"].id for r in await self.store.rows_under(root)])
        else:
            self.offline.discard(root)
            log.info("picture folder %s is back: %d photos online", root, changed)
            if self.watcher:
                self.watcher.start(root)
            if changed:
                await self._announce(
                    "SELECT * FROM image WHERE root = $r AND embedding != NONE AND model = $m",
                    {"r": root, "m": self.source.model_id},
                )
        self.status.offline_roots = sorted(self.offline)

    async def _watch_roots(self) -> None:
        """A root that disappears (an unmounted disk, a NAS that drops) goes offline; when it comes
        back it is reconciled, which finds its files unchanged and embeds nothing."""
        while True:
            await asyncio.sleep(1.0)
            for root in self.roots:
                present = self._root_present(root)
                if not present and root not in self.offline:
                    await self._set_offline(root, True)
                elif present and root in self.offline:
                    await self._set_offline(root, False)
                    self.work.put_nowait(Work("reconcile", [root]))

    async def _report(self) -> None:
        last_log = 0.0
        while True:
            moment = time.monotonic()
            self.status.queue = len(self.settler) + len(self.queued)
            window = [(t, d) for t, d in self._rate_window if moment - t < 30]
            if len(window) >= 2 and window[-1][0] > window[0][0]:
                self.status.rate = max(0.0, (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))
            elif self.busy_since is None:
                self.status.rate = 0.0
            line = self.status.line()
            self.notifier.status(line)
            stuck = (
                self.busy_since is not None
                and moment - self.last_progress > STUCK_AFTER
                and moment - self.busy_since > STUCK_AFTER
            )
            if not stuck:
                self.notifier.watchdog()
            try:
                await self.store.set_status("daemon", self.status.as_dict())
            except Exception as exc:
                log.warning("cannot write the status record: %s", exc)
            if self.status.queue and moment - last_log > 30:
                log.info("%s", line)
                last_log = moment
            await asyncio.sleep(min(STATUS_EVERY, self.notifier.watchdog_interval or STATUS_EVERY))


def _load_and_warm(embedder: ImageEmbedder) -> None:
    embedder.load().warm()


def _vanished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if not os.path.lexists(real_path(row))]


def _listing(root: str, flt: Filter) -> list[str]:
    return list(walk(root, flt))


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
