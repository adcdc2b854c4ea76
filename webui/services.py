"""The web server's own helpers with state: uploads to vectors, cached counts, the album summary
cache and the near-duplicate finder. None of them knows about requests or app keys."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from image_search.duplicates import Groups, Settings, group_library
from image_search.indexing import Indexing, NotReady
from image_search.models import ImageEmbedder, ModelSource
from image_search.search import Library
from image_search.store import Counts, Store

T = TypeVar("T")


async def on_own_thread(fn: Callable[..., T], *args: Any, name: str) -> T:
    """``fn(*args)`` on a thread started for it, which ends with it: a thread that runs torch's
    parallel regions keeps an OpenMP team while it lives, and every team beside the compute
    thread's slows the text tower (webui/app.py, ``_compute_ctx``)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


class ImageQueries:
    """Uploaded pictures → vectors: on the indexer's model under ``serve``, else on a CPU image
    tower loaded at first use (on a thread of its own) and run on the compute thread."""

    def __init__(
        self, source: ModelSource, executor: concurrent.futures.Executor, indexing: Indexing | None = None
    ) -> None:
        self.source = source
        self.executor = executor
        self.indexing = indexing
        self._lock = asyncio.Lock()
        self._embedder: ImageEmbedder | None = None

    async def embed(self, image: Image.Image) -> np.ndarray:
        if self.indexing is not None:
            with contextlib.suppress(NotReady):
                return (await self.indexing.embed_images([image]))[0]
        async with self._lock:
            if self._embedder is None:
                self._embedder = await on_own_thread(self._load, name="upload-model")
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self.executor, self._embedder.embed_images, [image])
        return vectors[0]

    def _load(self) -> ImageEmbedder:
        return ImageEmbedder(self.source, "cpu").load()


class CountsCache:
    """Store counts for /api/status, at most every few seconds: every open page polls status
    every 3 s. (The counts are one record the writes keep, not a scan, since schema 3.)"""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._value: Counts | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, store: Store) -> Counts:
        async with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._at > self.ttl:
                self._value, self._at = await store.counts(), now
            return self._value


class AlbumSummaries:
    """Every album's member and new counts, for the album list and /api/status: recomputed when
    the library or an album changed, and at most every few seconds while photos stream in."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.at = 0.0
        self.value: dict[str, dict[str, int]] = {}
        self.best: dict[str, str] = {}  # each album's best match, the cover of one with no liked photo
        self.lock = asyncio.Lock()


class DuplicateFinder:
    """Runs the grouping on a thread of its own each time (it takes seconds at 100k photos) and
    keeps the last result until the library or the settings change. One grouping at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.last: Groups | None = None

    async def groups(self, library: Library, settings: Settings) -> Groups:
        async with self.lock:
            last = self.last
            if last is not None and last.version == library.version and last.settings == settings:
                return last
            self.last = await on_own_thread(group_library, library, settings, name="duplicates")
            return self.last
