"""How results and errors look on the wire."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from image_search.search import Meta


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


Signer = Callable[[str], str]


def unsigned(key: str) -> str:
    return ""


def result(
    key: str,
    score: float | None,
    meta: Meta,
    pair: Sequence[tuple[str, Meta]] = (),
    sign: Signer = unsigned,
) -> dict[str, Any]:
    """One image as the page shows it (``score`` None where no search ranked it); ``pair``: the
    RAW files of the same shot (a RAW + JPEG pair), each with its own download. ``sign``: what
    each picture URL carries so that an ``<img>`` may load it (see :meth:`.security.Security.sign`)."""
    version = (meta.hash or "")[:12]
    mark = sign(key)
    return {
        "id": key,
        "score": None if score is None else round(score, 4),
        "path": meta.rel,
        "root": meta.root,
        "thumbnail": f"/api/images/{key}/thumbnail?v={version}{mark}",
        "image": f"/api/images/{key}?v={version}{mark}",
        "original": f"/api/images/{key}?original=1&v={version}{mark}",
        "taken_at": None
        if math.isnan(meta.taken_at)
        else dt.datetime.fromtimestamp(meta.taken_at, dt.UTC).isoformat().replace("+00:00", "Z"),
        "width": meta.width,
        "height": meta.height,
        "format": meta.format,
        "pair": [
            {
                "id": k,
                "path": m.rel,
                "format": m.format,
                "original": f"/api/images/{k}?original=1&v={(m.hash or '')[:12]}{sign(k)}",
            }
            for k, m in pair
        ],
    }


def path_list(request: web.Request, paths: list[str], name: str) -> web.Response:
    """Paths as a text file to download, one per line (``?sep=nul``: NUL after each, for names
    with newlines). Names that are not UTF-8 keep their bytes."""
    sep = "\0" if request.query.get("sep") == "nul" else "\n"
    filename = "".join(c if c.isalnum() or c in " -_" else "_" for c in name).strip() or "photos"
    return web.Response(
        body="".join(p + sep for p in paths).encode("utf-8", "surrogateescape"),
        content_type="text/plain",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.txt"'},
    )
