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

from .._face import face

if TYPE_CHECKING:  # what the shells use, named for readers and type checkers
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
else:  # loaded on first use (image_search/_face.py)
    __getattr__, __all__ = face(
        __name__,
        albums=(
            "albums",
            "Album",
            "AlbumError",
            "AlbumNameTaken",
            "album_vector",
            "direct_search",
            "find_album",
            "is_new",
            "link_folder",
            "list_albums",
            "members",
        ),
        facts=("FILTER_KEYS", "Filters", "Meta"),
        library=("Library", "follow_store"),
        queries=(
            "Batcher",
            "MAX_QUERY_CHARS",
            "MAX_WEIGHT",
            "Session",
            "TextQueries",
            "parse_query",
            "session_vector",
        ),
        refine=("EmptyQuery", "refine_query"),
        snapshot=("folder_for",),
        vectors=("Query",),
    )
