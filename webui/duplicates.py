"""Near-duplicate groups over HTTP, for the review page and its export. Nothing here touches a
user's files: the export is a list of paths for the user to act on."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from image_search.duplicates import Calibration, Settings, chosen
from image_search.search import Library

from . import validate
from .keys import CONFIG, DEFAULTS, FINDER, LIBRARY, SECURITY, STORE
from .responses import Signer, path_list, result


def _item(library: Library, key: str, keep: bool, sign: Signer) -> dict[str, Any]:
    meta = library.meta[key]
    return result(key, None, meta, sign=sign) | {"size": meta.size, "keep": keep, "full_path": meta.path}


async def duplicates(request: web.Request) -> web.Response:
    library = request.app[LIBRARY]
    settings, said = await _settings(request)
    found = await request.app[FINDER].groups(library, settings)
    limit, offset = validate.page(request, 50, validate.MAX_GROUPS_PAGE)
    page = [g for g in found.groups[offset : offset + limit] if all(k in library.meta for k in g)]
    extra = sum(len(g) - 1 for g in found.groups)
    extra_bytes = sum(library.meta[k].size or 0 for g in found.groups for k in g[1:] if k in library.meta)
    sign = request.app[SECURITY].sign
    groups = [
        {"keep": g[0], "items": [_item(library, k, i == 0, sign) for i, k in enumerate(g)]} for g in page
    ]
    return web.json_response(
        {
            "groups": groups,
            "total_groups": len(found.groups),
            "smaller_copies": extra,
            "smaller_bytes": extra_bytes,
            "offset": offset,
            "more": offset + limit < len(found.groups),
            "images": len(library),
            "without_fingerprint": found.without_fingerprint,
            "compared": found.grouping.compared,
            "seconds": round(found.grouping.seconds, 3),
            "similarity": found.settings.similarity,
            "similarity_from": said if "similarity" not in request.query else "this request",
            "hash_bits": found.settings.hash_bits,
        }
    )


async def export(request: web.Request) -> web.Response:
    """The paths of every group's smaller copies (all but the first), one per line
    (``?sep=nul`` for NUL-separated): for the user to review, move or delete themselves."""
    library = request.app[LIBRARY]
    settings, _ = await _settings(request)
    found = await request.app[FINDER].groups(library, settings)
    paths = [library.meta[k].path for g in found.groups for k in g[1:] if k in library.meta]
    return path_list(request, paths, "smaller-copies")


async def _settings(request: web.Request) -> tuple[Settings, str]:
    """The grouping a request asks for, and where its default similarity comes from: the option,
    else the one measured on this library (:mod:`image_search.duplicates.calibration`), else the model's."""
    config = request.app[CONFIG]
    measured = Calibration.from_dict(await request.app[STORE].duplicate_calibration())
    default, said = chosen(config.duplicate_similarity, measured, request.app[DEFAULTS].duplicate_similarity)
    return validate.duplicate_settings(request, config, default), said
