"""Indexing: files on disk to committed rows.

What needs work (plan), decoding in worker processes (workers) or on the GPU (gpudecode, with
feeding: nvJPEG's share and which devices run the model), embedding in batches and writing them
(indexer), rows of files that are gone leaving the store and the thumbnail cache (sync), and the
seam a running indexer shows the web app (seam: status, embedding an uploaded picture, changes).
Uses pictures, models and the store; search never depends on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import lazy

if TYPE_CHECKING:
    from .indexer import Indexer
    from .plan import FileRef, Progress, Summary
    from .seam import Indexing, LibraryListener, NotReady, StatusSnapshot
    from .sync import remove_missing, remove_rows

# The face: what the shells use, each name loaded from its module on first use.
_FACE = {
    "FileRef": "plan",
    "Indexer": "indexer",
    "Indexing": "seam",
    "LibraryListener": "seam",
    "NotReady": "seam",
    "Progress": "plan",
    "StatusSnapshot": "seam",
    "Summary": "plan",
    "remove_missing": "sync",
    "remove_rows": "sync",
}
__all__ = sorted(_FACE)
__getattr__ = lazy(__name__, _FACE)
