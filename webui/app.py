"""``create_app(config)``: the aiohttp application. No module globals: every shared object lives
under a typed ``web.AppKey`` and is created and closed by a cleanup context."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from aiohttp import web

from image_search.config import Config
from image_search.model import ImageEmbedder, ModelSource, TextEmbedder
from image_search.refine import combine_terms, parse_query
from image_search.store import Counts, Store
from image_search.thumbs import Thumbnails
from image_search.vectors import Query

from .library import Library, follow_store

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "image_search_token"
MAX_UPLOAD = 20 * 1024 * 1024
TEXT_CACHE = 512


T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs ``fn(items) -> results`` in an executor. Requests that arrive while a batch runs go
    together into the next one: no added wait when idle, one model pass or one matrix product
    for many requests under load. Its worker task is owned by the app's cleanup context."""

    def __init__(
        self, fn: Callable[[list[T]], list[R]], executor: concurrent.futures.Executor, max_batch: int = 16
    ) -> None:
        self.fn = fn
        self.executor = executor
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            batch = [(item, future) for item, future in batch if not future.cancelled()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), value in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(value)


class Queries:
    """Text → unit vector on the CPU, batched across concurrent requests, with an LRU cache."""

    def __init__(self, embedder: TextEmbedder, executor: concurrent.futures.Executor) -> None:
        self.embedder = embedder
        self.batcher: Batcher[str, np.ndarray] = Batcher(self._embed, executor)
        self.cache: OrderedDict[str, np.ndarray | None] = OrderedDict()

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.embedder.embed_texts(texts))

    async def vector(self, text: str) -> np.ndarray | None:
        key = " ".join(text.split())
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        terms = parse_query(key)
        vector = None
        if terms:
            vectors = await asyncio.gather(*(self.batcher.submit(term) for _, term in terms))
            vector = combine_terms(terms, np.stack(vectors))
        self.cache[key] = vector
        if len(self.cache) > TEXT_CACHE:
            self.cache.popitem(last=False)
        return vector


class ImageQueries:
    """Uploaded pictures → vectors: on the daemon's model thread under ``serve`` (once it runs),
    else on a CPU image tower loaded at first use."""

    def __init__(self, source: ModelSource, daemon: Any = None) -> None:
        self.source = source
        self.daemon = daemon
        self._lock = asyncio.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._embedder: ImageEmbedder | None = None

    async def embed(self, image: Any) -> np.ndarray:
        loop = asyncio.get_running_loop()
        indexer = getattr(self.daemon, "indexer", None)
        if indexer is not None:
            embedder = indexer.embedder
            vectors = await loop.run_in_executor(
                indexer.model_threads[id(embedder)], embedder.embed_images, [image]
            )
            return vectors[0]
        async with self._lock:
            if self._embedder is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="upload-model")
                self._embedder = await loop.run_in_executor(self._executor, self._load)
        vectors = await loop.run_in_executor(self._executor, self._embedder.embed_images, [image])
        return vectors[0]

    def _load(self) -> ImageEmbedder:
        return ImageEmbedder(self.source, "cpu").load()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class CountsCache:
    """Store counts for /api/status, at most every few seconds: counting is a scan of the whole
    image table, and every open page polls status every 3 s."""

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


class Security:
    """Who may call what. Loopback without a token unless one is configured; anywhere else the
    token is required on every API and image route (only health answers without it)."""

    def __init__(self, config: Config) -> None:
        self.host = config.host
        self.token = config.token
        self.loopback = _is_loopback(config.host)
        if not self.loopback and not self.token:
            self.token = secrets.token_urlsafe(24)
            # Printed once, on purpose: the only way to learn a generated token.
            print(
                f"image-search: access token for http://{config.host}:{config.port}/ is {self.token}\n"
                f"  open http://{config.host}:{config.port}/?token={self.token} once in your browser",
                flush=True,
            )

    @property
    def required(self) -> bool:
        return bool(self.token)

    def authorised(self, request: web.Request) -> bool:
        if not self.token:
            return True
        given = request.cookies.get(TOKEN_COOKIE) or ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:]
        return secrets.compare_digest(given.encode(), self.token.encode())

    def host_allowed(self, request: web.Request) -> bool:
        """Without a token only loopback names may be in Host: a DNS-rebinding page gets nothing."""
        if self.token:
            return True
        name = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        return name in {"localhost", "127.0.0.1", "::1"} or _is_loopback(name) or name == self.host


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
LIBRARY = web.AppKey("library", Library)
QUERIES = web.AppKey("queries", Queries)
IMAGES = web.AppKey("image_queries", ImageQueries)
THUMBS = web.AppKey("thumbs", Thumbnails)
THUMB_EXECUTOR = web.AppKey("thumb_executor", concurrent.futures.ThreadPoolExecutor)
SEARCHER = web.AppKey("searcher", Batcher)
COUNTS = web.AppKey("counts", CountsCache)
SECURITY = web.AppKey("security", Security)
DAEMON = web.AppKey("daemon", object)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure is JSON with a message a person understands; bad input is never a 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return json_error(exc.status, message or exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal error: see the server log")


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    security = request.app[SECURITY]
    if request.path == "/api/health":
        return await handler(request)
    if not security.host_allowed(request):
        return json_error(403, "this Host is not allowed; open image-search at http://127.0.0.1")
    if request.path == "/" and "token" in request.query and security.token:
        if not secrets.compare_digest(request.query["token"].encode(), security.token.encode()):
            return json_error(401, "wrong token")
        response = web.HTTPFound("/")
        response.set_cookie(
            TOKEN_COOKIE, security.token, httponly=True, samesite="Strict", max_age=400 * 86400
        )
        raise response
    protected = request.path.startswith("/api/")
    if protected and not security.authorised(request):
        return json_error(401, "a token is required: open the address the server printed, with ?token=")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1].rstrip("/") != request.host:
            return json_error(403, "cross-site request refused")
        if request.body_exists and request.content_type not in ("application/json", "multipart/form-data"):
            return json_error(415, "send JSON (Content-Type: application/json)")
        if (request.content_length or 0) > MAX_UPLOAD:  # refused before a byte of it is read
            return json_error(413, f"the upload is larger than {MAX_UPLOAD >> 20} MB")
    return await handler(request)


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    text_embedder: TextEmbedder | None = None,
    daemon: Any = None,
    follow_interval: float = 1.0,
) -> web.Application:
    """The web application. ``store`` and ``text_embedder`` may be given (shared or prebuilt);
    ``daemon`` (under ``serve``) keeps the library in step directly, otherwise the app polls the
    store for changes."""
    from . import albums, api, duplicates

    app = web.Application(middlewares=[errors, guard], client_max_size=MAX_UPLOAD)
    app[CONFIG] = config
    app[SECURITY] = Security(config)
    app[THUMBS] = Thumbnails(config.cache_dir)
    app[COUNTS] = CountsCache()
    source = text_embedder.source if text_embedder is not None else ModelSource(config.model)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if store is not None:
            app[STORE] = store
            yield
            return
        own = Store.from_config(config)
        await own.open()
        app[STORE] = own
        yield
        await own.close()

    async def model_ctx(app: web.Application) -> AsyncIterator[None]:
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="text-model")
        loop = asyncio.get_running_loop()
        embedder = text_embedder
        if embedder is None:
            embedder = await loop.run_in_executor(executor, TextEmbedder(source, config.text_dtype).load)
        await loop.run_in_executor(executor, embedder.embed_texts, ["warm up"])
        app[QUERIES] = Queries(embedder, executor)
        app[IMAGES] = ImageQueries(source, daemon)
        worker = asyncio.create_task(app[QUERIES].batcher.run(), name="text-batcher")
        yield
        await _stop(worker)
        app[IMAGES].close()
        executor.shutdown(wait=False, cancel_futures=True)

    async def library_ctx(app: web.Application) -> AsyncIterator[None]:
        the_store = app[STORE]
        stored = await the_store.stored_model()
        if stored is not None and stored != source.model_id:
            raise RuntimeError(
                f"the database was indexed with model {stored!r}, not {source.model_id!r}: use --model "
                f"{stored!r}, or re-index with `image-search index --reembed`"
            )
        library = Library(source.model_id)
        await library.load(the_store)
        app[LIBRARY] = library
        log.info("%d images ready to search", len(library))
        # Searches run off the event loop, several per matrix product when they arrive together.
        search_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="search")
        searcher: Batcher[Query, list[tuple[str, float]]] = Batcher(
            lambda queries: library.index.search_many(queries), search_executor
        )
        app[SEARCHER] = searcher
        search_worker = asyncio.create_task(searcher.run(), name="search-batcher")
        task = None
        if daemon is not None:
            daemon.on_written = library.upsert_rows
            daemon.on_removed = library.remove
        else:
            task = asyncio.create_task(follow_store(library, the_store, follow_interval), name="follow-store")
        yield
        await _stop(search_worker)
        search_executor.shutdown(wait=False, cancel_futures=True)
        if task is not None:
            await _stop(task)
        if daemon is not None:
            daemon.on_written = daemon.on_removed = None

    async def thumbs_ctx(app: web.Application) -> AsyncIterator[None]:
        executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="thumbs")
        app[THUMB_EXECUTOR] = executor
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    if daemon is not None:
        app[DAEMON] = daemon
    app.cleanup_ctx.extend([store_ctx, model_ctx, library_ctx, thumbs_ctx])
    api.setup_routes(app)
    albums.setup(app)
    duplicates.setup(app)
    return app


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
