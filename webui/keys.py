"""The application's shared objects, one typed key each. Created and closed by the cleanup
contexts in :mod:`.app`; read by the handlers."""

from __future__ import annotations

import asyncio
import concurrent.futures

from aiohttp import web

from image_search.config import Config
from image_search.indexing import Indexing
from image_search.models import ModelDefaults, ModelSource
from image_search.pictures import Thumbnails
from image_search.search import Batcher, Library, Query, TextQueries
from image_search.store import Store

from .security import Security
from .services import AlbumSummaries, CountsCache, DuplicateFinder, ImageQueries

CONFIG = web.AppKey("config", Config)
COMPUTE = web.AppKey("compute", concurrent.futures.ThreadPoolExecutor)
SECURITY = web.AppKey("security", Security)
STORE = web.AppKey("store", Store)
LIBRARY = web.AppKey("library", Library)
TEXTS = web.AppKey("text_queries", TextQueries)
IMAGES = web.AppKey("image_queries", ImageQueries)
SEARCHER = web.AppKey("searcher", Batcher[Query, list[tuple[str, float]]])
THUMBS = web.AppKey("thumbs", Thumbnails)
THUMB_EXECUTOR = web.AppKey("thumb_executor", concurrent.futures.ThreadPoolExecutor)
UPLOAD_EXECUTOR = web.AppKey("upload_executor", concurrent.futures.ThreadPoolExecutor)
COUNTS = web.AppKey("counts", CountsCache)
SUMMARIES = web.AppKey("album_summaries", AlbumSummaries)
FINDER = web.AppKey("duplicate_finder", DuplicateFinder)
INDEXING = web.AppKey("indexing", Indexing)
UPLOAD_SLOTS = web.AppKey("upload_slots", asyncio.Semaphore)
DEFAULTS = web.AppKey("model_defaults", ModelDefaults)
SOURCE = web.AppKey("model_source", ModelSource)  # the library's model (chosen_source)
