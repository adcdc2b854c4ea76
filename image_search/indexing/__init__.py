"""Indexing: files on disk to committed rows.

What needs work (plan), decoding in worker processes (workers) or on the GPU (gpudecode, with
feeding: nvJPEG's share and which devices run the model), embedding in batches and writing them
(indexer), rows of files that are gone leaving the store and the thumbnail cache (sync), and the
seam a running indexer shows the web app (seam: status, embedding an uploaded picture, changes).
Uses pictures, models and the store; search never depends on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import face

if TYPE_CHECKING:  # what the shells use, named for readers and type checkers
    from .indexer import Indexer
    from .plan import FileRef, Progress, Summary
    from .seam import Indexing, LibraryListener, NotReady, StatusSnapshot
    from .sync import remove_missing, remove_rows
else:  # loaded on first use (image_search/_face.py)
    __getattr__, __all__ = face(
        __name__,
        indexer=("Indexer",),
        plan=("FileRef", "Progress", "Summary"),
        seam=("Indexing", "LibraryListener", "NotReady", "StatusSnapshot"),
        sync=("remove_missing", "remove_rows"),
    )
