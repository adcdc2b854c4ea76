"""The refine page's searches in progress: each round (its query, its view and the judgements
made while looking at it) kept in the store under a search id, so that ``#/search/ID/N`` opens
the same round after a reload, in a second tab or from a bookmark; and the pictures searched with,
kept as their embedding and a small preview (a round that searched with one replays without the
upload, and refining never sends it again)."""

from __future__ import annotations

import asyncio
import hashlib
import io

from aiohttp import web
from PIL import Image

from image_search.store import to_bytes

from . import validate
from .keys import IMAGES, LIBRARY, SECURITY, STORE
from .responses import result
from .search import read_upload

KEEP_SEARCHES = 1000  # searches in progress kept, the most recently changed
KEEP_PICTURES = 200
PREVIEW = 256


async def get_rounds(request: web.Request) -> web.Response:
    """``{"rounds", "pictures", "previews"}``: the rounds, every photo they name as a result (for
    the tray and the chips; those still in the library), and the URL of each picture searched with."""
    search_id = validate.hex_id(request, "id")
    rounds = await request.app[STORE].rounds(search_id)
    if rounds is None:
        raise web.HTTPNotFound(text="no such search: it was cleared or is too old; search again")
    library, sign = request.app[LIBRARY], request.app[SECURITY].sign
    named = {key for r in rounds for key in validate.round_images(r)}
    pictures = {
        k: result(k, None, library.meta[k], library.pair(k), sign) for k in named if k in library.meta
    }
    previews = {r["picture"]: picture_url(request, r["picture"]) for r in rounds if r.get("picture")}
    return web.json_response({"rounds": rounds, "pictures": pictures, "previews": previews})


async def put_rounds(request: web.Request) -> web.Response:
    search_id = validate.hex_id(request, "id")
    body = await validate.json_body(request)
    rounds = validate.rounds(body)
    await request.app[STORE].put_rounds(search_id, rounds, KEEP_SEARCHES)
    return web.Response(status=204)


async def post_picture(request: web.Request) -> web.Response:
    """A picture to search with: embedded once, kept with a preview; ``{"id", "preview"}``. The id
    is the picture's content hash, so the same picture is the same id."""
    data, image = await read_upload(request)
    picture_id = hashlib.blake2b(data, digest_size=16).hexdigest()
    vector = await request.app[IMAGES].embed(image)
    preview = await asyncio.to_thread(_preview, image)
    model = request.app[LIBRARY].model_id
    await request.app[STORE].put_picture(picture_id, to_bytes(vector), preview, model, KEEP_PICTURES)
    return web.json_response({"id": picture_id, "preview": picture_url(request, picture_id)}, status=201)


def picture_url(request: web.Request, picture_id: str) -> str:
    return f"/api/pictures/{picture_id}?v=1" + request.app[SECURITY].sign(picture_id)


async def get_picture(request: web.Request) -> web.Response:
    picture_id = validate.hex_id(request, "id")
    row = await request.app[STORE].picture(picture_id)
    if row is None:
        raise web.HTTPNotFound(text="no such picture: search with it again")
    headers = {"Cache-Control": "private, max-age=604800", "X-Content-Type-Options": "nosniff"}
    return web.Response(body=row["preview"], content_type="image/webp", headers=headers)


def _preview(image: Image.Image) -> bytes:
    small = image.copy()
    small.thumbnail((PREVIEW, PREVIEW), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "WEBP", quality=80, method=2)
    return buffer.getvalue()
