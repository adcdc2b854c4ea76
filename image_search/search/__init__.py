"""Search: the library in memory and everything asked of it.

The searchable rows with their facts (library, facts; snapshot: the same as arrays beside an
embedded database, for a fast start; stacks: a RAW and its JPEG shown once), the vector index
(vectors, scoring, coarse: exact scores, compact codes first past 150k rows), what a query is
(queries: text arithmetic, batched text embedding, refine sessions; refine: the pure refine
math) and smart albums (albums: saved sessions and their members now). Reads and writes the
store; knows nothing of how rows got there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import lazy

if TYPE_CHECKING:
    from . import albums
    from .albums import (
        Album,
        AlbumError,
        AlbumNameTaken,
        album_vector,
        direct_search,
        find_album,
        is_new,
        link_folder,
        list_albums,
        members,
    )
    from .facts import FILTER_KEYS, Filters, Meta
    from .library import Library, follow_store
    from .queries import (
        MAX_QUERY_CHARS,
        MAX_WEIGHT,
        Batcher,
        Session,
        TextQueries,
        parse_query,
        session_vector,
    )
    from .refine import EmptyQuery, refine_query
    from .snapshot import folder_for
    from .vectors import Query

# The face: what the shells use, each name loaded from its module on first use.
_FACE = {
    "Album": "albums",
    "AlbumError": "albums",
    "AlbumNameTaken": "albums",
    "Batcher": "queries",
    "EmptyQuery": "refine",
    "FILTER_KEYS": "facts",
    "Filters": "facts",
    "Library": "library",
    "MAX_QUERY_CHARS": "queries",
    "MAX_WEIGHT": "queries",
    "Meta": "facts",
    "Query": "vectors",
    "Session": "queries",
    "TextQueries": "queries",
    "album_vector": "albums",
    "albums": "albums",
    "direct_search": "albums",
    "find_album": "albums",
    "folder_for": "snapshot",
    "follow_store": "library",
    "is_new": "albums",
    "link_folder": "albums",
    "list_albums": "albums",
    "members": "albums",
    "parse_query": "queries",
    "refine_query": "refine",
    "session_vector": "queries",
}
__all__ = sorted(_FACE)
__getattr__ = lazy(__name__, _FACE)
