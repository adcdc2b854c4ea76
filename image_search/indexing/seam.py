"""The seam between whoever shows the library (the web server) and whoever keeps it current (the
indexing daemon): a status snapshot, "embed these images", and "tell me about changes".

The web server depends on this interface alone; the daemon implements it
(:class:`image_search.daemon.Daemon`). A daemon in another process writes the same snapshot to
the store's ``status:daemon`` record, which the web server reads instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypedDict

import numpy as np
from PIL import Image

from ..store import ImageRow


class NotReady(RuntimeError):
    """The indexer has not loaded its model yet: embed elsewhere for now."""


class StatusSnapshot(TypedDict, total=False):
    """The indexing state as the page and ``image-search status`` show it."""

    state: str  # starting | watching | indexing | reconciling | paused | stopping
    queue: int  # files waiting: settling, queued or in the batch being indexed
    rate: float  # img/s over the last 30 s
    eta: float | None
    indexed_total: int
    failed_total: int
    errors: list[dict[str, str]]  # the latest failures: {"path", "error"}
    offline_roots: list[str]
    last_reconcile: str | None
    paused: str | None  # why the database refuses writes, while it does
    updated_at: Any
    pid: int


class LibraryListener(Protocol):
    """Keeps an in-memory view in step with the store (:class:`image_search.search.library.Library`)."""

    def upsert_rows(self, rows: Sequence[ImageRow], vectors: np.ndarray) -> None: ...

    def remove(self, keys: Sequence[str]) -> None: ...


class Indexing(Protocol):
    """What the web server may ask of a running indexer."""

    def snapshot(self) -> StatusSnapshot: ...

    async def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Unit vectors of decoded RGB pictures, on the indexer's model (between its batches);
        :class:`NotReady` while the model loads."""
        ...

    def subscribe(self, listener: LibraryListener) -> Callable[[], None]:
        """Tell ``listener`` of every row written and removed from now on; returns the call that
        stops it."""
        ...
