"""SurrealDB, the system of record: one row per photo, embeddings as float16 bytes.

Search does not run in SurrealDB (its vector index measured 50–60x slower than an exact
in-memory search, see shared/notes/surrealdb-vectors.md): :meth:`Store.load_embeddings`
feeds :class:`image_search.vectors.VectorIndex`. Writes go in batches, one transaction each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from surrealdb import AsyncSurreal, RecordID

from .config import Config

log = logging.getLogger(__name__)

TABLE = "image"
EMBED_DTYPE = np.float16

# Numbered migrations: index i brings the schema from version i to i + 1. Never edit one that
# has shipped; append a new one.
MIGRATIONS: list[str] = [
    """
    DEFINE TABLE IF NOT EXISTS meta SCHEMALESS;
    DEFINE TABLE IF NOT EXISTS status SCHEMALESS;
    DEFINE TABLE IF NOT EXISTS image SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS path ON image TYPE string;
    DEFINE FIELD IF NOT EXISTS path_bytes ON image TYPE option<bytes>;
    DEFINE FIELD IF NOT EXISTS root ON image TYPE string;
    DEFINE FIELD IF NOT EXISTS size ON image TYPE int;
    DEFINE FIELD IF NOT EXISTS mtime_ns ON image TYPE int;
    DEFINE FIELD IF NOT EXISTS hash ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS width ON image TYPE option<int>;
    DEFINE FIELD IF NOT EXISTS height ON image TYPE option<int>;
    DEFINE FIELD IF NOT EXISTS taken_at ON image TYPE option<datetime>;
    DEFINE FIELD IF NOT EXISTS format ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS embedding ON image TYPE option<bytes>;
    DEFINE FIELD IF NOT EXISTS model ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS indexed_at ON image TYPE datetime;
    DEFINE FIELD IF NOT EXISTS error ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS offline ON image TYPE bool DEFAULT false;
    DEFINE INDEX IF NOT EXISTS image_path ON image FIELDS path UNIQUE;
    DEFINE INDEX IF NOT EXISTS image_hash ON image FIELDS hash;
    DEFINE INDEX IF NOT EXISTS image_root ON image FIELDS root;
    """,
    # 2: perceptual fingerprints (near-duplicates) and saved searches (smart albums). Rows stored
    # before have no fingerprint: the next index run decodes them again, reusing their embedding.
    """
    DEFINE FIELD IF NOT EXISTS fingerprint ON image TYPE option<bytes>;
    DEFINE TABLE IF NOT EXISTS album SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS name ON album TYPE string;
    DEFINE FIELD IF NOT EXISTS text ON album TYPE string;
    DEFINE FIELD IF NOT EXISTS liked ON album TYPE array<string>;
    DEFINE FIELD IF NOT EXISTS rejected ON album TYPE array<string>;
    DEFINE FIELD IF NOT EXISTS weights ON album TYPE object FLEXIBLE;
    DEFINE FIELD IF NOT EXISTS filters ON album TYPE object FLEXIBLE;
    DEFINE FIELD IF NOT EXISTS min_score ON album TYPE float;
    DEFINE FIELD IF NOT EXISTS vector ON album TYPE bytes;
    DEFINE FIELD IF NOT EXISTS model ON album TYPE string;
    DEFINE FIELD IF NOT EXISTS seen ON album TYPE array<string>;
    DEFINE FIELD IF NOT EXISTS created_at ON album TYPE datetime;
    DEFINE FIELD IF NOT EXISTS updated_at ON album TYPE datetime;
    DEFINE FIELD IF NOT EXISTS visited_at ON album TYPE option<datetime>;
    DEFINE INDEX IF NOT EXISTS album_name ON album FIELDS name UNIQUE;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Every column but the embedding: what listings and the indexer's plan read.
FACTS = (
    "id, path, path_bytes, root, size, mtime_ns, hash, width, height, taken_at, format, model, error, "
    "offline, indexed_at, fingerprint"
)


ROW_FIELDS = (
    "path",
    "path_bytes",
    "root",
    "size",
    "mtime_ns",
    "hash",
    "width",
    "height",
    "taken_at",
    "format",
    "fingerprint",
    "embedding",
    "model",
    "indexed_at",
    "error",
    "offline",
)
_REPLACE = ", ".join(f"{name} = $input.{name}" for name in ROW_FIELDS)
# In every write transaction: lets a web server elsewhere notice changes by reading one record.
BUMP = "UPSERT meta:changes SET seq += 1 RETURN NONE;"
RETRIES = 6


class StoreError(RuntimeError):
    """The database cannot be used as it is; the message says what to do."""


class QueryFailed(StoreError):
    """A SurrealQL statement failed; its transaction, if any, was rolled back whole."""


class ModelMismatch(StoreError):
    """The database holds embeddings of another model."""


class Unwritable(StoreError):
    """A write failed because of the disk under the database (full, read-only, gone): nothing
    was written, the database is intact, and the same write can be tried again later."""


# Below this, a failed write on an embedded database is put down to a full disk: a transaction
# of 500 rows is ~1 MB, and the engine needs room beside it to flush and compact.
LOW_SPACE = 64 << 20


def disk_problem(directory: Path) -> str | None:
    """Why the file system holding ``directory`` cannot take writes, or None if it looks fine."""
    probe = directory if directory.exists() else directory.parent
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        return f"its folder cannot be reached ({exc.strerror or exc})"
    if st.f_flag & os.ST_RDONLY:
        return "its file system is read-only"
    free = st.f_bavail * st.f_frsize
    if free < LOW_SPACE:
        return f"the disk holding it is full ({free / 2**20:.1f} MiB free)"
    if not os.access(probe, os.W_OK):
        return "its folder is not writable by this user"
    return None


def image_key(path: str | os.PathLike[str]) -> str:
    """The record key for a path: BLAKE2b-128 of its bytes, hex (safe in URLs, any file name)."""
    return hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()


def record_id(key: str) -> RecordID:
    return RecordID(TABLE, key)


def path_fields(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``path`` as text; a name that is not UTF-8 keeps its exact bytes in ``path_bytes``."""
    raw = os.fsencode(path)
    try:
        return {"path": raw.decode("utf-8"), "path_bytes": None}
    except UnicodeDecodeError:
        return {"path": raw.decode("utf-8", "replace"), "path_bytes": raw}


def real_path(row: dict[str, Any]) -> str:
    raw = row.get("path_bytes")
    return os.fsdecode(raw) if raw else row["path"]


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=EMBED_DTYPE).tobytes()


def from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=EMBED_DTYPE)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Counts:
    indexed: int
    failed: int
    offline: int
    total: int


class Store:
    """An open SurrealDB connection with this project's schema. Use as an async context manager."""

    def __init__(
        self,
        url: str,
        namespace: str = "image_search",
        database: str = "main",
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.database = database
        self.user = user
        self.password = password
        self.db: Any = None
        # This process's write transactions one at a time: each bumps meta:changes, so two in
        # flight would always conflict. Conflicts with other processes are retried (transact).
        self._writes = asyncio.Lock()

    @classmethod
    def from_config(cls, config: Config) -> Store:
        return cls(config.database_url, config.namespace, config.database, config.db_user, config.password)

    @property
    def embedded(self) -> bool:
        return not self.url.startswith(("ws://", "wss://", "http://", "https://"))

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def directory(self) -> Path | None:
        """The embedded database's folder (None for memory and servers)."""
        if self.url.startswith(("surrealkv://", "file://", "rocksdb://")):
            return Path(self.url.split("://", 1)[1])
        return None

    async def open(self) -> None:
        if self.directory is not None:
            directory = self.directory
            try:
                directory.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the database directory {directory.parent}: {exc}") from None
        if not self.embedded and (self.user is None or self.password is None):
            raise StoreError(
                f"{self.url} is a SurrealDB server: set db_user and the password "
                "(IMAGE_SEARCH_DB_PASSWORD or db_password_file)"
            )
        try:
            self.db = AsyncSurreal(self.url)
            await self.db.connect()
            if not self.embedded:
                await self.db.signin({"username": self.user, "password": self.password})
            await self.db.use(self.namespace, self.database)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the database at {self.url}: {exc}") from None
        await self.migrate()

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run SurrealQL; one result per statement. A failure raises :class:`QueryFailed` with
        the statement that caused it (not the "not executed" echoes of its transaction)."""
        response = await self.db.query_raw(sql, params or {})
        if "error" in response:
            raise QueryFailed(str(response["error"].get("message", response["error"])))
        statements = response.get("result") or []
        errors = [s for s in statements if s.get("status") == "ERR"]
        if errors:
            cause = next(
                (e for e in errors if (e.get("details") or {}).get("kind") != "NotExecuted"), errors[0]
            )
            raise QueryFailed(str(cause.get("result")))
        return [s.get("result") for s in statements]

    async def transact(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """A write transaction: serialised within this process, retried when SurrealDB reports a
        conflict with another writer ("can be retried"); all of it or none of it."""
        async with self._writes:
            for attempt in range(RETRIES):
                try:
                    return await self.query(sql, params)
                except QueryFailed as exc:
                    if "can be retried" in str(exc) and attempt < RETRIES - 1:
                        await asyncio.sleep(0.02 * 2**attempt)
                        continue
                    self._check_disk(exc)
                    raise
                except Exception as exc:  # the engine itself failed (I/O)
                    self._check_disk(exc)
                    raise
        raise AssertionError("unreachable")

    def _check_disk(self, exc: BaseException) -> None:
        """Raise :class:`Unwritable` when a failed write is down to the disk: the engine only
        says "failed transaction" when it runs out of space."""
        problem = disk_problem(self.directory) if self.directory is not None else None
        if problem:
            raise Unwritable(f"cannot write to the database at {self.directory}: {problem}") from exc

    async def first(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.query(sql, params))[0]

    # -- schema and model ------------------------------------------------------------------

    async def schema_version(self) -> int:
        # Engine 3 refuses to read a table that was never defined: a new database has none.
        row = (
            await self.query("DEFINE TABLE IF NOT EXISTS meta SCHEMALESS; SELECT * FROM ONLY meta:schema")
        )[1]
        return int(row["version"]) if row else 0

    async def migrate(self) -> None:
        version = await self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {version}, newer than this image-search "
                f"understands ({SCHEMA_VERSION}): upgrade image-search"
            )
        for number in range(version, SCHEMA_VERSION):
            log.info("migrating the database schema to version %d", number + 1)
            await self.transact(
                f"BEGIN TRANSACTION; {MIGRATIONS[number]}; "
                "UPSERT meta:schema MERGE {version: $v}; COMMIT TRANSACTION;",
                {"v": number + 1},
            )

    async def stored_model(self) -> str | None:
        row = await self.first("SELECT * FROM ONLY meta:model")
        return row["name"] if row else None

    async def check_model(self, model_id: str, *, reembed: bool = False) -> None:
        """Bind the database to ``model_id``; refuse another model's vectors unless re-embedding.

        With ``reembed`` every embedding of another model is dropped (the files stay listed and
        are embedded again by the next index run).
        """
        stored = await self.stored_model()
        if stored == model_id:
            return
        others = await self.first(
            "SELECT count() AS n FROM image WHERE model != NONE AND model != $m GROUP ALL", {"m": model_id}
        )
        if others and others[0]["n"] and not reembed:
            raise ModelMismatch(
                f"the database holds {others[0]['n']} embeddings of model {stored!r}, not {model_id!r}. "
                f"Vectors of two models cannot be searched together: run `image-search index --reembed` "
                f"to embed every photo again with {model_id!r}, or use --model {stored!r}."
            )
        await self.transact(
            "BEGIN TRANSACTION;"
            "UPDATE image SET embedding = NONE, model = NONE, hash = NONE, mtime_ns = -1 "
            "WHERE model != NONE AND model != $m RETURN NONE;"
            f"UPSERT meta:model MERGE {{name: $m}}; {BUMP} COMMIT TRANSACTION;",
            {"m": model_id},
        )

    # -- reads -----------------------------------------------------------------------------

    async def get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows (without embedding) for these keys; absent keys are left out."""
        if not keys:
            return {}
        rows = await self.first(f"SELECT {FACTS} FROM $ids", {"ids": [record_id(k) for k in keys]})
        return {row["id"].id: row for row in rows}

    async def get_one(self, key: str, *, embedding: bool = False) -> dict[str, Any] | None:
        fields = FACTS + (", embedding" if embedding else "")
        rows = await self.first(f"SELECT {fields} FROM $id", {"id": record_id(key)})
        return rows[0] if rows else None

    async def embeddings_by_hash(
        self, hashes: Iterable[str], model_id: str
    ) -> dict[str, tuple[bytes, bytes | None]]:
        """An existing embedding of the same model, and its fingerprint, for each content hash
        that has one (a fingerprint where any row of that content has one)."""
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        rows = await self.first(
            "SELECT hash, embedding, fingerprint FROM image "
            "WHERE hash IN $h AND model = $m AND embedding != NONE",
            {"h": wanted, "m": model_id},
        )
        found: dict[str, tuple[bytes, bytes | None]] = {}
        for row in rows:
            if row["hash"] not in found or found[row["hash"]][1] is None:
                found[row["hash"]] = (row["embedding"], row.get("fingerprint"))
        return found

    async def rows_under(self, root: str) -> list[dict[str, Any]]:
        """Every row of one picture root (no embeddings): what a reconcile compares with the disk."""
        return await self.first(f"SELECT {FACTS} FROM image WHERE root = $r", {"r": root})

    async def load_embeddings(self, model_id: str) -> tuple[list[str], np.ndarray]:
        """Keys and a float16 (n, d) matrix of every online embedding of ``model_id``."""
        rows = await self.first(
            "SELECT id, embedding FROM image WHERE model = $m AND embedding != NONE AND offline = false",
            {"m": model_id},
        )
        if not rows:
            return [], np.zeros((0, 0), dtype=EMBED_DTYPE)
        keys = [row["id"].id for row in rows]
        matrix = np.frombuffer(b"".join(row["embedding"] for row in rows), dtype=EMBED_DTYPE)
        return keys, matrix.reshape(len(rows), -1)

    async def counts(self) -> Counts:
        rows = await self.first(
            "SELECT count() AS n, embedding != NONE AS ok, error != NONE AS bad, offline "
            "FROM image GROUP BY ok, bad, offline"
        )
        indexed = sum(r["n"] for r in rows if r["ok"] and not r["offline"])
        failed = sum(r["n"] for r in rows if r["bad"])
        offline = sum(r["n"] for r in rows if r["offline"])
        return Counts(indexed=indexed, failed=failed, offline=offline, total=sum(r["n"] for r in rows))

    async def failures(self, limit: int = 1000) -> list[dict[str, Any]]:
        return await self.first(
            "SELECT path, path_bytes, error, indexed_at FROM image WHERE error != NONE "
            "ORDER BY indexed_at DESC LIMIT $n",
            {"n": limit},
        )

    # -- writes ----------------------------------------------------------------------------

    async def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace whole rows, in one transaction: all of them or none.

        Each row needs ``key`` and the schema's fields; its id is ``image:key``.
        """
        if not rows:
            return
        content = [
            {**{k: v for k, v in row.items() if k != "key"}, "id": record_id(row["key"])} for row in rows
        ]
        await self.transact(
            f"BEGIN TRANSACTION; INSERT INTO image $rows ON DUPLICATE KEY UPDATE {_REPLACE} RETURN NONE; "
            f"{BUMP} COMMIT TRANSACTION;",
            {"rows": content},
        )

    async def rows_with_prefix(self, root: str, prefix: str) -> list[dict[str, Any]]:
        """Rows of ``root`` whose path starts with ``prefix`` (a folder, with its trailing slash)."""
        return await self.first(
            f"SELECT {FACTS} FROM image WHERE root = $r AND string::starts_with(path, $p)",
            {"r": root, "p": prefix},
        )

    async def move(self, moves: Sequence[tuple[str, str, str]]) -> list[str]:
        """Rename rows (old path → new path, new root) keeping their embeddings, in one transaction.

        Returns the old paths that had no row (the caller indexes their new paths as new files).
        """
        if not moves:
            return []
        old_ids = [record_id(image_key(old)) for old, _, _ in moves]
        rows = await self.first(f"SELECT {FACTS}, embedding FROM $ids", {"ids": old_ids})
        by_key = {row["id"].id: row for row in rows}
        fresh, missing = [], []
        for old, new, root in moves:
            row = by_key.get(image_key(old))
            if row is None:
                missing.append(old)
                continue
            moved = {name: row.get(name) for name in ROW_FIELDS}
            moved.update(
                path_fields(new), root=root, id=record_id(image_key(new)), offline=False, indexed_at=now()
            )
            fresh.append(moved)
        await self.transact(
            "BEGIN TRANSACTION; DELETE $old RETURN NONE; "
            f"INSERT INTO image $rows ON DUPLICATE KEY UPDATE {_REPLACE} RETURN NONE; "
            f"{BUMP} COMMIT TRANSACTION;",
            {"old": [record_id(row["id"].id) for row in rows], "rows": fresh},
        )
        return missing

    async def hashes_in_use(self, hashes: Iterable[str | None]) -> set[str]:
        wanted = sorted({h for h in hashes if h})
        if not wanted:
            return set()
        rows = await self.first("SELECT VALUE hash FROM image WHERE hash IN $h", {"h": wanted})
        return set(rows)

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self.transact(
                f"BEGIN TRANSACTION; DELETE $ids RETURN NONE; {BUMP} COMMIT TRANSACTION;",
                {"ids": [record_id(k) for k in keys]},
            )

    async def set_offline(self, root: str, offline: bool) -> int:
        rows = (
            await self.transact(
                "BEGIN TRANSACTION; UPDATE image SET offline = $o WHERE root = $r AND offline != $o "
                f"RETURN VALUE id; {BUMP} COMMIT TRANSACTION;",
                {"r": root, "o": offline},
            )
        )[1]
        return len(rows)

    async def change_seq(self) -> int:
        """A counter every write transaction increments: cheap to poll for 'anything new?'."""
        row = await self.first("SELECT * FROM ONLY meta:changes")
        return int(row["seq"]) if row else 0

    async def set_status(self, name: str, status: dict[str, Any]) -> None:
        await self.query("UPSERT type::record('status', $n) CONTENT $s RETURN NONE", {"n": name, "s": status})

    async def get_status(self, name: str) -> dict[str, Any] | None:
        return await self.first("SELECT * FROM ONLY type::record('status', $n)", {"n": name})
