"""Rows whose files are gone leave the store, and their thumbnails leave the cache; rows under a
folder that cannot be read go offline instead. The one rule, used by ``image-search index`` and by
the daemon's reconcile, deletions and moves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..pictures.scan import is_under
from ..pictures.thumbs import Thumbnails
from ..store import ImageRow, Store, key_of, real_path
from .seam import LibraryListener


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


@dataclass
class Missing:
    """What a comparison of the store with a folder's listing did."""

    removed: list[str] = field(default_factory=list)  # keys of files gone from present folders
    offline: list[str] = field(default_factory=list)  # keys under folders that could not be read
    online: list[str] = field(default_factory=list)  # keys back in the listing after being offline


async def remove_missing(
    store: Store,
    thumbs: Thumbnails,
    root: str,
    present: set[str],
    *,
    under: str | None = None,
    unreadable: Sequence[str] = (),
    listener: LibraryListener | None = None,
) -> Missing:
    """Compare the rows of ``root`` (only those below the folder ``under``, if given) with the
    paths a listing found. Rows under a folder the listing could not read (``unreadable``: a NAS
    permission hiccup, a disk that drops) go offline, kept with their embeddings; the rest that
    were not found are removed; offline rows found again come back online."""
    prefix = None if under is None or under == root else under.rstrip("/") + "/"
    rows = await store.rows_under(root, prefix)
    blind = [u.rstrip("/") for u in unreadable]
    result = Missing()
    gone: list[ImageRow] = []
    for row in rows:
        path = real_path(row)
        if path in present:
            if row.get("offline"):
                result.online.append(key_of(row))
        elif any(is_under(path, folder) for folder in blind):
            if not row.get("offline"):
                result.offline.append(key_of(row))
        else:
            gone.append(row)
    await store.set_offline_keys(result.offline, True)
    await store.set_offline_keys(result.online, False)
    if listener is not None and result.offline:
        listener.remove(result.offline)
    result.removed = await remove_rows(store, thumbs, gone, listener)
    return result
