"""``create_app(config)``: the aiohttp application. No module globals: every shared object lives
under a typed key (:mod:`.keys`) and is created and closed by a cleanup context here."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from image_search.config import Config
from image_search.indexing import Indexing
from image_search.models import TextEmbedder, chosen_source
from image_search.pictures import Thumbnails, configure_pillow
from image_search.search import Batcher, Library, Query, TextQueries, follow_store
from image_search.search import folder_for as snapshot_folder
from image_search.store import Store

from .keys import (
    COMPUTE,
    CONFIG,
    COUNTS,
    DEFAULTS,
    FINDER,
    IMAGES,
    INDEXING,
    LIBRARY,
    SEARCHER,
    SECURITY,
    SOURCE,
    STORE,
    SUMMARIES,
    TEXTS,
    THUMB_EXECUTOR,
    THUMBS,
    UPLOAD_EXECUTOR,
    UPLOAD_SLOTS,
)
from .middleware import errors, guard, same_origin_only
from .routes import ROUTES
from .security import Security
from .services import AlbumSummaries, CountsCache, DuplicateFinder, ImageQueries, on_own_thread
from .validate import MAX_UPLOAD

log = logging.getLogger("image_search.webui")

UPLOAD_DECODES = 1


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    text_embedder: TextEmbedder | None = None,
    indexing: Indexing | None = None,
    follow_interval: float = 1.0,
) -> web.Application:
    """The web application. ``store`` and ``text_embedder`` may be given (shared, or prebuilt;
    a text embedder given unloaded is loaded on the app's compute thread);
    ``indexing`` (under ``serve``) keeps the library in step directly, otherwise the app polls the
    store for changes."""
    configure_pillow()  # uploads and thumbnails decode in this process
    app = web.Application(middlewares=[errors, guard], client_max_size=MAX_UPLOAD)
    app.on_response_prepare.append(same_origin_only)
    app[CONFIG] = config
    app[SECURITY] = Security(config)
    app[THUMBS] = Thumbnails(config.cache_dir)
    app[COUNTS] = CountsCache()
    app[SUMMARIES] = AlbumSummaries()
    # A 100 MP upload decodes to 300 MB and more: one at a time, so a few cannot take gigabytes.
    app[UPLOAD_SLOTS] = asyncio.Semaphore(UPLOAD_DECODES)
    if indexing is not None:
        app[INDEXING] = indexing
    app.cleanup_ctx.extend(
        [
            _store_ctx(store),
            _source_ctx(text_embedder),
            _compute_ctx,
            _model_ctx(text_embedder, indexing),
            _library_ctx(indexing, follow_interval),
            _executors_ctx,
        ]
    )
    app.add_routes(ROUTES)
    return app


def _store_ctx(store: Store | None) -> Any:
    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if store is not None:
            app[STORE] = store
            yield
            return
        async with Store.from_config(app[CONFIG]) as own:
            app[STORE] = own
            yield

    return store_ctx


def _source_ctx(text_embedder: TextEmbedder | None) -> Any:
    async def source_ctx(app: web.Application) -> AsyncIterator[None]:
        """The model: a text embedder's given, else the configured one, else the library's own."""
        if text_embedder is not None:
            app[SOURCE] = text_embedder.source
        else:
            app[SOURCE] = chosen_source(app[CONFIG].model, await app[STORE].bound_model())
        yield

    return source_ctx


async def _compute_ctx(app: web.Application) -> AsyncIterator[None]:
    """One thread for the CPU's tensor work: the text tower, the searches, the library's matrix
    and an upload's image tower. torch's OpenMP (libgomp) gives every thread that runs a parallel
    region a team of its own, and once its teams hold more threads than there are CPUs it lets an
    idle worker spin only briefly, so each of the text tower's ~900 small regions waits for its
    workers to wake: a SigLIP 2 query took 22.8 ms on the only team and 27.1 ms once a second
    thread had run one region (two Xeon cores); CLIP's int8 query 17 against 29-36 ms on the
    EPYC. On two cores the tower and a search each take every core anyway."""
    app[COMPUTE] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compute")
    yield
    app[COMPUTE].shutdown(wait=False, cancel_futures=True)


def _model_ctx(text_embedder: TextEmbedder | None, indexing: Indexing | None) -> Any:
    async def model_ctx(app: web.Application) -> AsyncIterator[None]:
        """The text model on the compute thread, warmed before the server answers."""
        source = app[SOURCE]
        executor = app[COMPUTE]
        loop = asyncio.get_running_loop()
        config = app[CONFIG]
        embedder = text_embedder or TextEmbedder(source, config.text_dtype, compile=config.text_compile)
        if embedder.model is None:  # given unloaded, or made here: loaded on the compute thread
            await loop.run_in_executor(executor, embedder.load)
        await loop.run_in_executor(executor, embedder.embed_texts, ["warm up"])
        app[DEFAULTS] = await loop.run_in_executor(executor, embedder.source.defaults)
        app[TEXTS] = TextQueries(embedder, executor)
        app[IMAGES] = ImageQueries(source, executor, indexing)
        tasks = [asyncio.create_task(app[TEXTS].batcher.run(), name="text-batcher")]
        if embedder.compile_state == "pending":
            tasks.append(asyncio.create_task(_compile_text(embedder), name="text-compile"))
        yield
        for task in tasks:
            await _stop(task)

    return model_ctx


async def _compile_text(embedder: TextEmbedder) -> None:
    """The text model compiled while the server answers with the eager one (the status says
    which): on a thread that ends, so its OpenMP team ends too."""
    started = time.monotonic()
    if await on_own_thread(embedder.compile_now, name="text-compile"):
        seconds = time.monotonic() - started
        log.info("text model compiled in %.0f s: single queries take the compiled one", seconds)


def _library_ctx(indexing: Indexing | None, follow_interval: float) -> Any:
    async def library_ctx(app: web.Application) -> AsyncIterator[None]:
        """The library in memory, kept in step by the indexer's notifications or by polling the
        store; searches run on the compute thread, several per matrix product."""
        source = app[SOURCE]
        # The name the database knows these weights by (the same weights may lie elsewhere).
        source.adopt(await app[STORE].require_model(source.identity()))
        library = Library(source.model_id, file_times=app[CONFIG].file_times)
        # Subscribed before loading: what is written meanwhile is replayed after the load.
        unsubscribe = indexing.subscribe(library) if indexing is not None else None
        try:
            # Beside the database actually open (a store given to the app may not be the configured
            # one: another database's snapshot at the same change counter held other photos).
            await library.load(app[STORE], snapshot_folder(app[STORE].url), app[COMPUTE])
        except BaseException:
            if unsubscribe is not None:
                unsubscribe()
            raise
        app[LIBRARY] = library
        log.info("%d images ready to search", len(library))
        searcher: Batcher[Query, list[tuple[str, float]]] = Batcher(
            lambda queries: library.index.search_many(queries), app[COMPUTE]
        )
        app[SEARCHER] = searcher
        tasks = [asyncio.create_task(searcher.run(), name="search-batcher")]
        if indexing is None:
            tasks.append(
                asyncio.create_task(follow_store(library, app[STORE], follow_interval), name="follow")
            )
        yield
        for task in tasks:
            await _stop(task)
        if unsubscribe is not None:
            unsubscribe()

    return library_ctx


async def _executors_ctx(app: web.Application) -> AsyncIterator[None]:
    """Thumbnails on two threads (Pillow's, no OpenMP); near-duplicate grouping on a thread of its
    own each time."""
    app[THUMB_EXECUTOR] = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="thumbs")
    # Uploads decode one at a time (UPLOAD_SLOTS) on one thread of their own: one malloc arena
    # keeps what a 100 MP picture's 300 MB leave, not one for each thread that ever decoded one.
    app[UPLOAD_EXECUTOR] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="uploads")
    app[FINDER] = DuplicateFinder()
    yield
    app[THUMB_EXECUTOR].shutdown(wait=False, cancel_futures=True)
    app[UPLOAD_EXECUTOR].shutdown(wait=False, cancel_futures=True)


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
