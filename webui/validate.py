"""Every check of what a request sends: bodies, query strings and their limits. Each function
returns typed values or raises :class:`BadValue` (400, with a message a person understands)."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from image_search.config import Config
from image_search.duplicates import Settings
from image_search.errors import BadValue
from image_search.pictures import DEFAULT_SIZE, FORMATS, SIZES
from image_search.search import FILTER_KEYS, MAX_QUERY_CHARS, MAX_WEIGHT, Filters, Session

MAX_LIMIT = 500
MAX_OFFSET = 100_000
MAX_IDS = 2000
MAX_TIMELINE = 5000
MAX_GROUPS_PAGE = 200


MAX_JSON = 256 * 1024  # a search names at most 3 x 2,000 ids: about 220 KB
MAX_ROUNDS_JSON = 1024 * 1024
MAX_UPLOAD = 20 * 1024 * 1024


def body_limit(request: web.Request) -> int:
    """The most bytes a request's body may have, by route: judged before a byte is parsed (20
    parallel 19.5 MB queries were parsed in full before the 1,000-character cap, and held the
    server's health route up to 10 s)."""
    if request.content_type == "multipart/form-data":
        return MAX_UPLOAD
    if request.path.startswith("/api/rounds/"):
        return MAX_ROUNDS_JSON
    return MAX_JSON


async def json_body(request: web.Request) -> dict[str, Any]:
    limit = body_limit(request)
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):  # a body sent without its length too
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise BadValue("the body is not valid JSON") from None
    except RecursionError:
        raise BadValue("the body is nested too deeply") from None
    return json_object(body, "the body")


def json_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a JSON object whose every string is valid Unicode: JSON's ``\\ud800`` escapes
    parse into lone surrogates that no tokenizer or store takes (they gave 500s)."""
    if not isinstance(value, dict):
        raise BadValue(f"{what} must be a JSON object")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadValue(f"{what} holds text that is not valid Unicode (a lone surrogate)") from None
    return value


def whole(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"{name} must be a whole number")
    if not low <= value <= high:
        raise BadValue(f"{name} must be between {low} and {high}")
    return value


def ids(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadValue(f"{name} must be a list of image ids")
    if len(value) > MAX_IDS:
        raise BadValue(f"{name} holds more than {MAX_IDS} ids")
    return list(dict.fromkeys(value))


def filters(body: dict[str, Any]) -> Filters:
    return Filters.parse(body.get("filters"))


def min_score(body: dict[str, Any]) -> float | None:
    value = body.get("min_score")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1
    ):
        raise BadValue("min_score must be a number from -1 to 1")
    return None if value is None else float(value)


def session(body: dict[str, Any]) -> Session:
    """A refine session's text, liked and rejected ids and weights."""
    text = body.get("text") or ""
    if not isinstance(text, str):
        raise BadValue("text must be a string")
    weights = body.get("weights") or {}
    if not isinstance(weights, dict) or not all(
        k in ("text", "liked", "rejected")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0 <= v <= MAX_WEIGHT
        for k, v in weights.items()
    ):
        raise BadValue(
            f"weights must be an object with numbers from 0 to {MAX_WEIGHT:g} for text, liked and rejected"
        )
    return Session(text, ids(body, "liked"), ids(body, "rejected"), {k: float(v) for k, v in weights.items()})


def sort(body: dict[str, Any]) -> str:
    value = body.get("sort", "score")
    if value not in ("score", "date"):
        raise BadValue("sort must be score or date")
    return str(value)


def flag(request: web.Request, name: str) -> bool:
    """``?name=1`` (or true/yes) in the query string; absent or 0/false/no is False."""
    value = request.query.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no", ""):
        raise BadValue(f"{name} must be 1 or 0")
    return value in ("1", "true", "yes")


def choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` from the query string (the first when absent)."""
    value = request.query.get(name, allowed[0])
    if value not in allowed:
        raise BadValue(f"{name} must be {' or '.join(allowed)}")
    return value


def page(request: web.Request, default: int, most: int) -> tuple[int, int]:
    """``limit`` and ``offset`` from the query string of a paged GET."""
    try:
        limit = int(request.query.get("limit", default))
        offset = int(request.query.get("offset", 0))
    except ValueError:
        raise BadValue("limit and offset must be whole numbers") from None
    if not (1 <= limit <= most and offset >= 0):
        raise BadValue(f"limit must be from 1 to {most} and offset 0 or more")
    return limit, offset


def duplicate_settings(request: web.Request, config: Config, similarity: float) -> Settings:
    """The grouping asked for; its similarity defaults to ``similarity`` (the option's, the
    library's measured one or the model family's: :func:`image_search.duplicates.calibration.chosen`)."""
    try:
        similarity = float(request.query.get("similarity", similarity))
        hash_bits = int(request.query.get("hash_bits", config.duplicate_hash_bits))
    except ValueError:
        raise BadValue("similarity and hash_bits must be numbers") from None
    # Narrower than the options allow: a request cannot ask for the n² work of a low threshold.
    if not (0.8 <= similarity <= 1.0 and 0 <= hash_bits <= 16):
        raise BadValue("similarity must be from 0.8 to 1 and hash_bits from 0 to 16")
    return Settings(similarity=similarity, hash_bits=hash_bits)


def thumbnail(request: web.Request) -> tuple[int, str]:
    """The cached size at or above the one asked for, and the format."""
    try:
        wanted = int(request.query.get("size", DEFAULT_SIZE))
    except ValueError:
        raise BadValue("size must be a number of pixels") from None
    if not 16 <= wanted <= SIZES[-1]:
        raise BadValue(f"size must be between 16 and {SIZES[-1]}")
    fmt = request.query.get("format", "webp").lower()
    if fmt not in FORMATS:
        raise BadValue("format must be webp or jpeg")
    return next(s for s in SIZES if s >= wanted), fmt


def image_id(request: web.Request) -> str | None:
    """The image id in the path, or None when it cannot be one (32 hex digits)."""
    key = request.match_info["id"]
    return key if len(key) == 32 and all(c in "0123456789abcdef" for c in key) else None


def folder(body: dict[str, Any]) -> str:
    value = body.get("folder")
    if not isinstance(value, str) or not value.strip() or "\0" in value or len(value) > 1024:
        raise BadValue("folder must be a folder name (up to 1,024 characters)")
    return value.strip()


MAX_ROUNDS = 100
HEX = frozenset("0123456789abcdef")


def _is_hex_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in HEX for c in value)


def hex_id(request: web.Request, name: str) -> str:
    """A 32-hex-digit id from the path (an image, a search, a picture); 404 otherwise."""
    value = request.match_info[name]
    if not _is_hex_id(value):
        raise web.HTTPNotFound(text="no such id")
    return value


def optional_hex(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_hex_id(value):
        raise BadValue(f"{name} must be an id of 32 hexadecimal digits")
    return str(value)


def _hex_ids(value: Any, what: str) -> list[str]:
    value = value or []
    if not isinstance(value, list) or not all(_is_hex_id(v) for v in value):
        raise BadValue(f"{what} must be a list of image ids")
    if len(value) > MAX_IDS:
        raise BadValue(f"{what} holds more than {MAX_IDS} ids")
    return list(dict.fromkeys(value))


def _view(value: Any) -> dict[str, Any]:
    """A round's view: how its results are shown (sort, filters, minimum score, grid or
    timeline, justified or square tiles), checked as a search checks them."""
    value = json_object(value or {}, "view")
    view: dict[str, Any] = {"sort": sort(value)}
    Filters.parse(value.get("filters"))
    view["filters"] = {k: v for k, v in (value.get("filters") or {}).items() if k in FILTER_KEYS}
    view["min_score"] = min_score(value)
    layout = value.get("layout", "grid")
    if layout not in ("grid", "timeline"):
        raise BadValue("layout must be grid or timeline")
    view["layout"] = layout
    return view


def one_round(value: Any) -> dict[str, Any]:
    """One round of the refine page: its query (text, the ids liked and rejected, a picture or a
    photo it searched like), its view, and ``marks``: the judgements made while looking at it
    (the next round's liked and rejected)."""
    value = json_object(value, "a round")
    text = value.get("text") or ""
    if not isinstance(text, str) or len(text) > MAX_QUERY_CHARS:
        raise BadValue(f"a round's text must be a string of at most {MAX_QUERY_CHARS} characters")
    marks = json_object(value.get("marks") or {}, "marks")
    return {
        "text": text,
        "liked": _hex_ids(value.get("liked"), "liked"),
        "rejected": _hex_ids(value.get("rejected"), "rejected"),
        "picture": optional_hex(value, "picture"),
        "similar": optional_hex(value, "similar"),
        "view": _view(value.get("view")),
        "marks": {
            "liked": _hex_ids(marks.get("liked"), "marks.liked"),
            "rejected": _hex_ids(marks.get("rejected"), "marks.rejected"),
        },
    }


def rounds(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("rounds")
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ROUNDS:
        raise BadValue(f"rounds must be a list of 1 to {MAX_ROUNDS} rounds")
    return [one_round(r) for r in value]


def round_images(value: dict[str, Any]) -> set[str]:
    """Every image id a stored round names."""
    marks = value.get("marks") or {}
    named = {
        *value.get("liked", []),
        *value.get("rejected", []),
        *marks.get("liked", []),
        *marks.get("rejected", []),
    }
    if value.get("similar"):
        named.add(value["similar"])
    return named
