"""The watcher daemon: keeps the database equal to the picture folders.

Start: open the store, load and warm the model, reconcile every root, then watch them. Events
become typed work (:mod:`.intake`); one worker applies it in order (:mod:`.apply`), so a deletion
can never race the write of the same file; progress is reported (:mod:`.progress`). The daemon
is also what a web server in the same process sees of indexing (:class:`Indexing`). Every
resource has one owner: this class, entered as an async context manager, closes them in reverse
order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from PIL import Image

from image_search.config import Config
from image_search.errors import DeviceFailed
from image_search.indexing import Indexer, LibraryListener, NotReady, StatusSnapshot
from image_search.models import ImageEmbedder, ModelSource, chosen_source, pick_embedders
from image_search.pictures import Filter, Thumbnails, normalise_root
from image_search.store import Store, Unwritable
from image_search.systemd import Notifier

from .apply import Applier, Listeners, root_present
from .intake import Intake
from .progress import DaemonStatus, RateMeter, Reporter
from .watch import Watcher
from .work import IndexFiles, Work

log = logging.getLogger("image_search.daemon")

TICK = 0.25  # settle checks
BATCH_WAIT = 0.2  # how long a dynamic batch waits for more files
BACKOFF = (1.0, 30.0)  # seconds before work refused by a full or read-only disk is tried again


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
        # The library's model, chosen once the store is open (chosen_source); given embedders' own.
        self.source: ModelSource | None = embedders[0].source if embedders and not config.model else None
        self._own_store = store is None
        self.store = store or Store.from_config(config)
        self.embedders = list(embedders) if embedders else None
        self.notifier = notifier or Notifier()
        self.handle_signals = handle_signals
        self.announce_ready = announce_ready  # `serve` says READY itself, once the web server listens
        self.thumbs = Thumbnails(config.cache_dir)
        self.status = DaemonStatus()
        flt = Filter(config.include, config.exclude, config.follow_symlinks)
        self.intake = Intake([normalise_root(r) for r in roots], flt, config.settle)
        self.listeners = Listeners()
        self.meter = RateMeter()
        self.stop_event = asyncio.Event()
        self._catching = False
        self.interrupted = False  # stopped by SIGINT (Ctrl-C) rather than SIGTERM
        self.busy_since: float | None = None
        self._backoff = BACKOFF[0]
        self.failure: DeviceFailed | None = None
        self._stack = contextlib.AsyncExitStack()
        self.indexer: Indexer | None = None
        self.applier: Applier | None = None
        self.watcher: Watcher | None = None

    @property
    def roots(self) -> list[str]:
        return self.intake.roots

    # -- what the web server sees (image_search.indexing.seam.Indexing) ---------------------------

    def snapshot(self) -> StatusSnapshot:
        self.status.queue = self.intake.pending
        return self.status.snapshot()

    async def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if self.indexer is None:
            raise NotReady("the indexer is still loading its model")
        return await self.indexer.embed_images(images)

    def subscribe(self, listener: LibraryListener) -> Callable[[], None]:
        return self.listeners.subscribe(listener)

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
        if self.handle_signals:
            self.catch_signals()
        if self._own_store:
            await self.store.open()
            self._stack.push_async_callback(self.store.close)
        if self.source is None:
            self.source = chosen_source(self.config.model, await self.store.bound_model())
        self.source.adopt(await self.store.check_model(self.source.identity()))
        if self.embedders is None:
            self.embedders = pick_embedders(
                self.source, self.config.device, self.config.dtype, self.config.compile
            )
        # The decoding workers start while the models load; all are warm before reporting ready.
        self.indexer = await self._stack.enter_async_context(self._make_indexer())
        await self.indexer.warm()
        self.indexer.listener = self.listeners
        self.applier = Applier(
            self.store, self.indexer, self.thumbs, self.intake, self.status, self.listeners
        )
        self._start_watching(loop)
        self._start_scheduler(loop)
        self.intake.reconcile()
        reporter = Reporter(
            self.status,
            self.meter,
            self.notifier,
            self.store,
            lambda: self.intake.pending,
            lambda: self.busy_since,
        )
        for name, coro in (
            ("events", self._events()),
            ("settle", self._settle()),
            ("work", self._work()),
            ("roots", self.applier.watch_roots()),
            ("status", self._report(reporter)),
        ):
            self._stack.push_async_callback(_cancel, asyncio.create_task(coro, name=f"daemon-{name}"))
        self.status.state = "watching"
        if self.announce_ready:
            self.notifier.ready(self.status.line())
        log.info("watching %s", ", ".join(self.roots))

    def _make_indexer(self) -> Indexer:
        assert self.embedders is not None
        return Indexer(
            self.store,
            self.embedders,
            workers=self.config.workers,
            batch_size=self.config.batch_size,
            max_megapixels=self.config.max_megapixels,
            gpu_decode=self.config.gpu_decode,
            on_progress=self.meter,
            thumbnails=self.thumbs,
            gpus=self.config.gpus,
        )

    def _start_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        watcher = self.watcher = Watcher(loop, follow_symlinks=self.config.follow_symlinks)
        self._stack.callback(watcher.close)
        for root in self.roots:
            if root_present(root):
                watcher.start(root)
        assert self.applier is not None
        self.applier.on_root = lambda root, present: watcher.start(root) if present else watcher.stop(root)

    def _start_scheduler(self, loop: asyncio.AbstractEventLoop) -> None:
        scheduler = AsyncIOScheduler(event_loop=loop)
        if self.config.reconcile_interval > 0:
            scheduler.add_job(self.request_reconcile, "interval", hours=self.config.reconcile_interval)
        scheduler.start()
        self._stack.callback(scheduler.shutdown, wait=False)

    def catch_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reconciles; from now until the daemon closes. `serve`
        calls it before its web server listens: a stop request while the model still loads
        must be a clean exit, not death by the default action. Idempotent."""
        if self._catching:
            return
        self._catching = True
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        loop.add_signal_handler(signal.SIGHUP, self.request_reconcile)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._stack.callback(loop.remove_signal_handler, sig)

    def _interrupt(self) -> None:
        """Ctrl-C: stop as SIGTERM does; the command then exits 130, as an interrupted one does."""
        self.interrupted = True
        self.stop_event.set()

    async def run(self) -> None:
        """Until SIGTERM/SIGINT (with handle_signals) or :meth:`stop`; raises the failure that
        stopped it, if one did (:class:`DeviceFailed`)."""
        await self.stop_event.wait()
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        self.stop_event.set()

    def request_reconcile(self) -> None:
        self.intake.reconcile()

    async def reconcile(self, roots: Sequence[str] | None = None) -> Any:
        assert self.applier is not None
        return await self.applier.reconcile(roots)

    async def wait_idle(self, limit: float = 30.0) -> None:
        """Until nothing is settling, queued or running (for tests and one-shot use)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.intake.idle and self.busy_since is None:
                await asyncio.sleep(TICK * 2)
                if self.intake.idle and self.busy_since is None:
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("the daemon did not become idle")

    # -- the loops ---------------------------------------------------------------------------

    async def _events(self) -> None:
        assert self.watcher is not None
        while True:
            change = await self.watcher.queue.get()
            try:
                self.intake.on_change(change)
            except Exception:
                log.exception("handling %s", change)

    async def _settle(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            item = await self.intake.settled()
            if item is not None:
                self.intake.put(item)

    async def _report(self, reporter: Reporter) -> None:
        while True:
            await reporter.report()
            await asyncio.sleep(reporter.interval)

    async def _work(self) -> None:
        assert self.indexer is not None and self.applier is not None
        while True:
            item = await self.intake.next_batch(4 * self.indexer.batch_size, BATCH_WAIT)
            self.busy_since = time.monotonic()
            retry = False
            try:
                await self.applier.apply(item)
                if self.status.paused:
                    log.info("the database takes writes again: indexing resumes")
                    self.status.paused, self._backoff = None, BACKOFF[0]
            except asyncio.CancelledError:
                raise
            except DeviceFailed as exc:
                log.critical("%s: stopping, for the service manager to restart image-search", exc)
                self.failure = exc
                self.stop_event.set()
                return
            except Unwritable as exc:
                retry = True
                self._pause(item, exc)
            except Exception as exc:
                log.exception("%s failed", type(item).__name__)
                self.status.errors.append({"path": "", "error": f"{type(item).__name__}: {exc}"})
            finally:
                self.busy_since = None
                if isinstance(item, IndexFiles) and not retry:
                    self.intake.done(item.files)

    def _pause(self, item: Work, exc: Unwritable) -> None:
        """A full or read-only disk: nothing of this item was lost or half-written, so the same
        work is tried again, less and less often, until the disk takes writes."""
        if str(exc) != self.status.paused:
            log.error("%s; retrying every %d s at most", exc, BACKOFF[1])
            self.status.errors.append({"path": "", "error": str(exc)})
        self.status.paused = str(exc)
        self.status.state = "paused"
        self.notifier.status(f"paused: {exc}")
        asyncio.get_running_loop().call_later(self._backoff, self.intake.put, item)
        self._backoff = min(self._backoff * 2, BACKOFF[1])


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
