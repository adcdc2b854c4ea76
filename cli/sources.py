"""Where the library commands get their rows: :class:`Local` opens the database itself;
:class:`Remote` asks the ``serve``/``web`` process that holds it (:mod:`image_search.running`),
as its owner. Both return the same rows, so a command prints the same either way."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from image_search.config import Config

from .progress import Bar


def source(config: Config) -> Local | Remote:
    """The running service's API where one holds this database, else the database itself."""
    from image_search.running import find

    service = find(config)
    return Remote(config, service) if service is not None else Local(config)


class Local:
    """Nothing else holds the database: open it (and, for a search, load the text model)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.source: Any = None  # the library's model, once _library has looked

    async def _library(self, store: Any) -> Any:
        from image_search.models import chosen_source
        from image_search.search import Library, folder_for

        self.source = chosen_source(self.config.model, await store.bound_model())
        snapshot = folder_for(self.config.database_url)
        return await Library.open(store, self.source.identity(), snapshot)

    async def search(self, text: str, limit: int) -> list[dict[str, Any]]:
        from image_search.models import TextEmbedder
        from image_search.search import Filters, Query, Session, TextQueries, session_vector
        from image_search.store import Store

        async with Store.from_config(self.config) as store:
            library = await self._library(store)
        if not len(library):
            return []
        embedder = TextEmbedder(self.source, self.config.text_dtype).load()
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            texts = TextQueries(embedder, executor)
            batcher = asyncio.create_task(texts.batcher.run())
            try:
                query = await session_vector(library, texts, Session(text))
            finally:
                batcher.cancel()
        hits = library.index.search_many([Query(query, limit, library.mask(Filters(), set()))])[0]
        return [{"path": library.meta[k].path, "score": round(s, 4), "id": k} for k, s in hits]

    async def status(self) -> dict[str, Any]:
        from image_search.store import Store, real_path

        async with Store.from_config(self.config) as store:
            counts = await store.counts()
            model = await store.stored_model()
            failures = await store.failures() if counts.failed else []  # a scan: not for nothing
            version = await store.schema_version()
            albums = await store.album_count()
            # Nothing holds an embedded database we could open; a daemon beside a SurrealDB server
            # leaves its latest state in the store.
            snapshot = None if store.embedded else await store.get_status("daemon")
        if snapshot:
            snapshot.pop("id", None)
        return {
            "indexed": counts.indexed,
            "failed": counts.failed,
            "offline": counts.offline,
            "total": counts.total,
            "model": model,
            "schema_version": version,
            "albums": albums,
            "failed_files": [{"path": real_path(f), "error": f["error"]} for f in failures],
            "service": snapshot or None,
        }

    async def duplicates(self) -> dict[str, Any]:
        from image_search.duplicates import Calibration, Settings, chosen, group_library
        from image_search.store import Store

        async with Store.from_config(self.config) as store:
            library = await self._library(store)
            measured = Calibration.from_dict(await store.duplicate_calibration())
        configured = self.config.duplicate_similarity
        similarity, said = chosen(configured, measured, _family_similarity(self.source))
        settings = Settings(similarity=similarity, hash_bits=self.config.duplicate_hash_bits)
        # Steps: probes of the hashes' tables, or pairs of vectors when those find the candidates.
        bar = Bar("grouping", "steps") if len(library) >= 2 else None
        found = await asyncio.to_thread(group_library, library, settings, bar.update if bar else None)
        groups = [
            [
                _copy(
                    library.meta[k].path, library.meta[k].width, library.meta[k].height, library.meta[k].size
                )
                for k in g
            ]
            for g in found.groups
        ]
        return {
            "groups": groups,
            "images": len(library),
            "without_fingerprint": found.without_fingerprint,
            "seconds": found.grouping.seconds,
            "similarity": similarity,
            "similarity_from": said,
        }

    async def albums(self) -> list[dict[str, Any]]:
        from image_search.search import is_new

        rows = []
        async with self._albums(None) as (library, found):
            for album, hits in found:
                new = sum(is_new(library, album, k) for k, _ in hits)
                rows.append(
                    {"id": album.id, "name": album.name, "count": len(hits), "new": new, "text": album.text}
                )
        return rows

    async def album(self, name: str) -> tuple[list[dict[str, Any]], list[str]]:
        async with self._albums(name) as (library, [(_, hits)]):
            rows = [{"path": library.meta[k].path, "score": round(s, 4), "id": k} for k, s in hits]
            return rows, library.folders()

    @contextlib.asynccontextmanager
    async def _albums(self, name: str | None) -> AsyncIterator[tuple[Any, list[tuple[Any, list[Any]]]]]:
        """The library and, for one album (by name or id) or all of them, its members now."""
        from image_search.search import album_vector, direct_search, find_album, list_albums, members
        from image_search.store import Store

        async with Store.from_config(self.config) as store:
            library = await self._library(store)
            saved = [await find_album(store, name)] if name is not None else await list_albums(store)
            out = []
            for album in saved:
                vector = await album_vector(store, library, None, album)
                out.append((album, await members(library, album, vector, direct_search(library))))
            yield library, out


class Remote:
    """A ``serve``/``web`` process holds the database: ask its API, as its owner."""

    def __init__(self, config: Config, service: Any) -> None:
        self.config = config
        self.service = service

    def _client(self) -> Any:
        from .client import ServiceClient

        return ServiceClient(self.service)

    async def search(self, text: str, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        async with self._client() as api:
            while len(rows) < limit:
                page = await api.post(
                    "/api/search", {"text": text, "limit": min(limit - len(rows), PAGE), "offset": len(rows)}
                )
                rows += [_row(r) for r in page["results"]]
                if not page["more"]:
                    break
        return rows

    async def status(self) -> dict[str, Any]:
        async with self._client() as api:
            live = await api.get("/api/status", detail="1")
        snapshot = dict(live.get("daemon") or {}) or {"state": live["state"]}
        snapshot["url"], snapshot["pid"] = self.service.url, self.service.pid
        albums = live["albums"]["count"]
        return {key: live[key] for key in STATUS_KEYS} | {"albums": albums, "service": snapshot}

    async def duplicates(self) -> dict[str, Any]:
        groups: list[list[dict[str, Any]]] = []
        async with self._client() as api:
            while True:
                page = await api.get("/api/duplicates", limit=str(GROUPS_PAGE), offset=str(len(groups)))
                groups += [
                    [_copy(i["full_path"], i["width"], i["height"], i["size"]) for i in g["items"]]
                    for g in page["groups"]
                ]
                if not page["more"] or not page["groups"]:
                    break
        return {
            "groups": groups,
            "images": page["images"],
            "without_fingerprint": page["without_fingerprint"],
            "seconds": page["seconds"],
            "similarity": page["similarity"],
            "similarity_from": page["similarity_from"],
        }

    async def albums(self) -> list[dict[str, Any]]:
        async with self._client() as api:
            saved = (await api.get("/api/albums"))["albums"]
        keys = ("id", "name", "count", "new", "text")
        return [{key: album.get(key, 0) for key in keys} for album in saved]

    async def album(self, name: str) -> tuple[list[dict[str, Any]], list[str]]:
        from image_search.search import AlbumError

        async with self._client() as api:
            saved = (await api.get("/api/albums"))["albums"]
            # As the database's lookup: by id, else by name.
            album = next((a for a in saved if a["id"] == name), None) or next(
                (a for a in saved if a["name"] == name), None
            )
            if album is None:
                raise AlbumError(f"no album called {name!r} (see `image-search albums`)")
            rows: list[dict[str, Any]] = []
            while True:
                page = await api.get(
                    f"/api/albums/{album['id']}", order="score", limit=str(PAGE), offset=str(len(rows))
                )
                rows += [_row(r) for r in page["results"]]
                if not page["more"] or not page["results"]:
                    break
            folders = (await api.get("/api/folders"))["roots"]
        return rows, folders


PAGE = 500  # the API's largest page of results
GROUPS_PAGE = 200
STATUS_KEYS = ("indexed", "failed", "offline", "total", "model", "schema_version", "failed_files")


def _row(result: dict[str, Any]) -> dict[str, Any]:
    """A web result (a path under its root) as the command line prints it."""
    return {
        "path": os.path.join(result["root"], result["path"]),
        "score": result["score"],
        "id": result["id"],
    }


def _copy(path: str, width: Any, height: Any, size: Any) -> dict[str, Any]:
    return {"path": path, "width": width, "height": height, "size": size}


def _family_similarity(source: Any) -> float:
    """The model family's near-duplicate similarity (CLIP's where the model's config is not here:
    grouping needs only the stored vectors)."""
    from image_search.errors import ModelUnavailable
    from image_search.models import CLIP

    try:
        return float(source.family.duplicate_similarity)
    except ModelUnavailable:
        return CLIP.duplicate_similarity
