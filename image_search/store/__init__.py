"""SurrealDB, the system of record, and the only module that speaks SurrealQL.

One row per photo, embeddings as float16 bytes (:mod:`.images`); saved albums (:mod:`.albums`);
the connection, migrations and write lanes (:mod:`.connection`); the model check
(:mod:`.models`); typed rows and their pure helpers (:mod:`.rows`). Search does not run in
SurrealDB (its vector index measured 50–60x slower than an exact in-memory search, see
shared/notes/surrealdb-vectors.md): :mod:`image_search.search.library` holds the searchable rows in
memory. Writes go in batches, one transaction each, two at once (the lanes).
"""

from __future__ import annotations

from ..config import Config
from .albums import AlbumConflict, AlbumTable
from .connection import (
    LOW_SPACE,
    ModelMismatch,
    QueryFailed,
    StoreError,
    StoreLocked,
    Unwritable,
    disk_problem,
)
from .images import ImageTable
from .models import ModelIdentity, ModelTable
from .rounds import RoundTable
from .rows import (
    EMBED_DTYPE,
    FACTS,
    ROW_FIELDS,
    SEARCHABLE,
    AlbumRow,
    Counts,
    ImageRow,
    from_bytes,
    image_key,
    key_of,
    now,
    path_fields,
    real_path,
    record_id,
    to_bytes,
)
from .schema import MIGRATIONS, SCHEMA_VERSION


class Store(ImageTable, AlbumTable, ModelTable, RoundTable):
    """The database: images and albums over one connection. Use as an async context manager."""

    @classmethod
    def from_config(cls, config: Config) -> Store:
        return cls(config.database_url, config.namespace, config.database, config.db_user, config.password)

    async def __aenter__(self) -> Store:
        await self.open()
        return self


__all__ = [
    "EMBED_DTYPE",
    "FACTS",
    "LOW_SPACE",
    "MIGRATIONS",
    "ROW_FIELDS",
    "SCHEMA_VERSION",
    "SEARCHABLE",
    "AlbumConflict",
    "AlbumRow",
    "Counts",
    "ImageRow",
    "ModelIdentity",
    "ModelMismatch",
    "QueryFailed",
    "Store",
    "StoreError",
    "StoreLocked",
    "Unwritable",
    "disk_problem",
    "from_bytes",
    "image_key",
    "key_of",
    "now",
    "path_fields",
    "real_path",
    "record_id",
    "to_bytes",
]
