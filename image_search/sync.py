"""Rows whose files are gone leave the store, and their thumbnails leave the cache: the one rule,
used by ``image-search index`` and by the daemon's reconcile, deletions and moves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .indexing import LibraryListener
from .store import ImageRow, Store, key_of, real_path
from .thumbs import Thumbnails


async def remove_rows(
    store: Store, thumbs: Thumbnails, rows: Sequence[ImageRow], listener: LibraryListener | None = None
) -> list[str]:
    """Delete these rows; forget the thumbnails of contents no other row holds. Returns their keys."""
    if not rows:
        return []
    keys = [key_of(row) for row in rows]
    await store.delete(keys)
    in_use = await store.hashes_in_use(row.get("hash") for row in rows)
    unused = [row.get("hash") for row in rows if row.get("hash") not in in_use]
    await asyncio.to_thread(thumbs.forget, unused)
    if listener is not None:
        listener.remove(keys)
    return keys


async def remove_missing(
    store: Store,
    thumbs: Thumbnails,
    root: str,
    present: set[str],
    *,
    under: str | None = None,
    listener: LibraryListener | None = None,
) -> list[str]:
    """Remove the rows of ``root`` (only those below the folder ``under``, if given) whose paths
    the listing of a present folder did not find. Returns the keys removed."""
    prefix = None if under is None or under == root else under.rstrip("/") + "/"
    rows = await store.rows_under(root, prefix)
    gone = [row for row in rows if real_path(row) not in present]
    return await remove_rows(store, thumbs, gone, listener)
