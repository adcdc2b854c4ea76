"""watchdog observers per picture root, handing events to the asyncio loop, and the settle rule.

One observer per root, so a root that hits the inotify watch limit falls back to polling on
its own, and a root that disappears can be stopped and started again when it returns.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

INOTIFY_LIMIT_HINT = (
    "the inotify watch limit is reached: watching {root} by polling instead (slower to notice "
    "changes). Raise the limit with `sysctl fs.inotify.max_user_watches=524288` (and "
    "fs.inotify.max_user_instances), persisted in /etc/sysctl.d/."
)


@dataclass(frozen=True)
class Change:
    """What happened to a path: ``kind`` is changed, created_dir, deleted or moved."""

    kind: str
    path: str
    dest: str | None = None
    is_dir: bool = False


class _Handler(FileSystemEventHandler):
    def __init__(self, emit: Callable[[Change], None]) -> None:
        self.emit = emit

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        kind = event.event_type
        if kind == "moved":
            self.emit(Change("moved", src, os.fsdecode(event.dest_path), event.is_directory))
        elif kind == "deleted":
            self.emit(Change("deleted", src, is_dir=event.is_directory))
        elif kind == "created" and event.is_directory:
            self.emit(Change("created_dir", src, is_dir=True))
        elif kind in ("created", "modified", "closed") and not event.is_directory:
            self.emit(Change("changed", src))


class Watcher:
    """Owns the observers; events arrive in ``queue`` on the loop that created it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, follow_symlinks: bool = False) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Change] = asyncio.Queue()
        self.follow_symlinks = follow_symlinks
        self.observers: dict[str, BaseObserver] = {}
        self.polling: set[str] = set()

    def _emit(self, change: Change) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, change)

    def start(self, root: str, *, force_polling: bool = False) -> None:
        """Watch ``root`` recursively; inotify, or polling where the watch limit is reached."""
        self.stop(root)
        handler = _Handler(self._emit)
        if not force_polling:
            observer: BaseObserver = Observer()
            try:
                with warnings.catch_warnings():
                    # watchdog warns when a followed symlink leads back into the tree; the
                    # loop is harmless to it, and our own walk visits each folder once.
                    warnings.simplefilter("ignore", RuntimeWarning)
                    observer.schedule(handler, root, recursive=True, follow_symlink=self.follow_symlinks)
                    observer.start()
                self.observers[root] = observer
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                observer.stop()
        log.warning(INOTIFY_LIMIT_HINT.format(root=root))
        observer = PollingObserver(timeout=2)
        observer.schedule(handler, root, recursive=True, follow_symlink=self.follow_symlinks)
        observer.start()
        self.observers[root] = observer
        self.polling.add(root)

    def stop(self, root: str) -> None:
        observer = self.observers.pop(root, None)
        self.polling.discard(root)
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def close(self) -> None:
        for root in list(self.observers):
            self.stop(root)


class Settler:
    """A file is ready when its size and mtime have not changed for ``settle`` seconds and it
    opens. Paths are touched by events; :meth:`ready` returns those that have settled."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.pending: dict[str, tuple[int, int, float]] = {}  # path → (size, mtime_ns, since)

    def __len__(self) -> int:
        return len(self.pending)

    def touch(self, path: str) -> None:
        self.pending.setdefault(path, (-1, -1, time.monotonic()))

    def forget(self, path: str) -> None:
        self.pending.pop(path, None)

    def forget_under(self, prefix: str) -> None:
        for path in [p for p in self.pending if p.startswith(prefix)]:
            del self.pending[path]

    def ready(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        done = []
        for path, (size, mtime, since) in list(self.pending.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self.pending[path]  # gone before it settled: a temporary file
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self.pending[path] = (st.st_size, st.st_mtime_ns, now)
                continue
            if now - since < self.settle:
                continue
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
            except OSError:
                self.pending[path] = (size, mtime, now)  # locked or unreadable for now: wait
                continue
            del self.pending[path]
            done.append(path)
        return done
