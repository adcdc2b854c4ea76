"""Every route, in one table: method, path, handler. The README's "Web API" documents each."""

from __future__ import annotations

from aiohttp import web

from . import albums, duplicates, images, rounds, search
from .images import STATIC

ROUTES = [
    web.get("/", images.index_page),
    web.get("/api/health", images.health),
    web.post("/api/session", images.session),
    web.get("/api/status", search.status),
    web.post("/api/search", search.search),
    web.get("/api/folders", search.folders),
    web.get("/api/rounds/{id}", rounds.get_rounds),
    web.put("/api/rounds/{id}", rounds.put_rounds),
    web.post("/api/pictures", rounds.post_picture),
    web.get("/api/pictures/{id}", rounds.get_picture),
    web.get("/api/images/{id}", images.image),
    web.get("/api/images/{id}/meta", images.image_meta),
    web.get("/api/images/{id}/thumbnail", images.thumbnail),
    web.post("/api/images/{id}/similar", search.similar),
    web.get("/api/albums", albums.list_albums),
    web.post("/api/albums", albums.create_album),
    web.get("/api/albums/{id}", albums.get_album),
    web.put("/api/albums/{id}", albums.update_album),
    web.patch("/api/albums/{id}", albums.rename_album),
    web.delete("/api/albums/{id}", albums.delete_album),
    web.post("/api/albums/{id}/seen", albums.mark_seen),
    web.get("/api/albums/{id}/export", albums.export_paths),
    web.post("/api/albums/{id}/export", albums.export_links),
    web.get("/api/duplicates", duplicates.duplicates),
    web.get("/api/duplicates/export", duplicates.export),
    web.static("/static/", STATIC, append_version=True),
]
