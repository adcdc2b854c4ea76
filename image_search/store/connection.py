"""The SurrealDB connection: open, migrate, run statements, write transactions on their lanes,
and the upkeep the embedded engine needs (reopening it to flush, settling it after a big run)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from surrealdb import AsyncSurreal, RecordID
from surrealdb.data.cbor import decode

from . import wire
from .schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("image_search.store")

# Write transactions in flight at once. Each runs on a lane: a record (``lane:N``) holding the
# change counter (bumped by every write transaction, so a web server elsewhere notices changes)
# and status's counts for the writes made on it; readers sum the lanes. Two transactions on two
# lanes touch no key in common, so they run side by side in the engine instead of conflicting:
# 500-row writes went from ~7,000 to ~13,000 rows/s in the engine on 2 cores (docs/scale.md).
LANES = 2
RETRIES = 6
# Below this, a failed write on an embedded database is put down to a full disk: a transaction
# of 500 rows is ~1 MB, and the engine needs room beside it to flush and compact.
LOW_SPACE = 64 << 20
# The embedded SurrealKV of SDK 3.0.0b10 writes its memtable to disk only when the store closes:
# its write-ahead log and memory grow with every write, and past ~2 GB of log (~800,000 photos
# written in one session) a write never returns (docs/scale.md). So a surrealkv:// database is
# closed and opened again after this many bytes of written values: the close flushes the
# memtable into a table file and the log starts empty (~5-15 s, reads and writes wait for it).
CHECKPOINT_BYTES = 512 << 20
# SurrealKV also merges its table files when it opens, not in the background: after a million
# rows written the next two opens took 3-14 s each (whoever opened next: `status`, the web
# server). A writer that wrote this much since it last opened the database can settle it at the
# end of its run (:meth:`Connection.settle`): reopened until an opening merges no table.
SETTLE_BYTES = 64 << 20
SETTLE_ROUNDS = 4


class StoreError(RuntimeError):
    """The database cannot be used as it is; the message says what to do."""


class StoreLocked(StoreError):
    """Another process holds the embedded database (SurrealKV locks its folder)."""


class QueryFailed(StoreError):
    """A SurrealQL statement failed; its transaction, if any, was rolled back whole."""


class ModelMismatch(StoreError):
    """The database holds embeddings of another model (the one exception for it, everywhere)."""


class Unwritable(StoreError):
    """A write failed because of the disk under the database (full, read-only, gone): nothing
    was written, the database is intact, and the same write can be tried again later."""


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


class Connection:
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
        # This process's write transactions, at most one per lane (see ``LANES``). Conflicts
        # with other processes (the same lanes) are retried (transact).
        self._lanes: asyncio.Queue[int] = asyncio.Queue()
        for lane in range(LANES):
            self._lanes.put_nowait(lane)
        self._checkpointing = False
        # Statements wait at the gate while the database is closed and opened again
        # (:meth:`_checkpoint`); ``_idle`` is set when none is running.
        self._gate = asyncio.Event()
        self._gate.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self._unflushed = 0  # bytes of values written since the last open
        self._written = 0  # ... since open() (the reopenings of a checkpoint do not count)
        self.checkpoints = 0

    @property
    def embedded(self) -> bool:
        return not self.url.startswith(("ws://", "wss://", "http://", "https://"))

    @property
    def _surrealkv(self) -> bool:
        """The engine that flushes only on close and merges on open (the checkpoints, settling)."""
        return self.url.startswith("surrealkv://")

    @property
    def directory(self) -> Path | None:
        """The embedded database's folder (None for memory and servers)."""
        if self.url.startswith(("surrealkv://", "file://", "rocksdb://")):
            return Path(self.url.split("://", 1)[1])
        return None

    async def __aenter__(self) -> Any:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, *, migrate: bool = True) -> None:
        """Connect; bring the schema up to date unless ``migrate`` is False (``doctor`` only looks)."""
        if self.directory is not None:
            try:  # private: the embeddings, paths and albums are this user's alone
                self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.directory.mkdir(exist_ok=True, mode=0o700)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the database directory {self.directory.parent}: {exc}"
                ) from None
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
        except Exception as exc:
            if "already locked" in str(exc):
                raise StoreLocked(
                    f"the database at {self.url} is in use by another process (an image-search "
                    "`serve`, `daemon` or `index`); the library commands use a running `serve` "
                    "by themselves, the others need it stopped"
                ) from None
            raise StoreError(f"cannot open the database at {self.url}: {exc}") from None
        if migrate:
            await self.migrate()

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run SurrealQL; one result per statement. A failure raises :class:`QueryFailed` with
        the statement that caused it (not the "not executed" echoes of its transaction)."""
        await self._gate.wait()
        self._running += 1
        self._idle.clear()
        try:
            engine = wire.engine(self.db) if self.embedded else None
            request = wire.encode(sql, params or {}, str(uuid.uuid4())) if engine is not None else None
            if engine is not None and request is not None:  # the same request, encoded in C (wire.py)
                response = decode(await engine.execute(request))
            else:
                response = await self.db.query_raw(sql, params or {})
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()
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

    async def first(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.query(sql, params))[0]

    async def transact(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """A write transaction on a free lane (``$lane`` in ``sql``), retried when SurrealDB
        reports a conflict with another writer ("can be retried"); all of it or none of it."""
        lane = await self._lanes.get()
        try:
            params = {**(params or {}), "lane": RecordID("lane", lane)}
            for attempt in range(RETRIES):
                try:
                    result = await self.query(sql, params)
                    size = _size(params)
                    self._unflushed += size
                    self._written += size
                    if self._surrealkv and self._unflushed >= CHECKPOINT_BYTES and not self._checkpointing:
                        await self._checkpoint()
                    return result
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
        finally:
            self._lanes.put_nowait(lane)

    async def settle(self) -> None:
        """After a big write (``SETTLE_BYTES`` since the last open) into ``surrealkv://``: close
        and open the database until an opening merges no table file, so that the next process
        to open it opens at once. For the end of a run (``image-search index``); a no-op else."""
        if not self._surrealkv or self._written < SETTLE_BYTES or self._checkpointing:
            return
        tables = Path(self.url.split("://", 1)[1]) / "sstables"
        self._written = 0
        started = asyncio.get_running_loop().time()
        for _ in range(SETTLE_ROUNDS):
            before = _names(tables)
            await self._checkpoint()
            if not before - _names(tables):
                break
        log.info(
            "database settled for the next start (its files merged, %.1f s)",
            asyncio.get_running_loop().time() - started,
        )

    async def _checkpoint(self) -> None:
        """Close the embedded database and open it again, the statements waiting meanwhile (see
        ``CHECKPOINT_BYTES``), or to settle it. A statement already running (a write on the other
        lane) finishes first."""
        self._checkpointing = True
        self._gate.clear()
        try:
            await self._idle.wait()
            started = asyncio.get_running_loop().time()
            await self.db.close()
            self.db = AsyncSurreal(self.url)
            await self.db.connect()
            await self.db.use(self.namespace, self.database)
            self._unflushed = 0
            self.checkpoints += 1
            log.info(
                "database closed and opened again to write its memory to disk (%.1f s)",
                asyncio.get_running_loop().time() - started,
            )
        finally:
            self._checkpointing = False
            self._gate.set()

    def _check_disk(self, exc: BaseException) -> None:
        """Raise :class:`Unwritable` when a failed write is down to the disk: the engine only
        says "failed transaction" when it runs out of space."""
        problem = disk_problem(self.directory) if self.directory is not None else None
        if problem:
            raise Unwritable(f"cannot write to the database at {self.directory}: {problem}") from exc

    # -- schema --------------------------------------------------------------------------

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

    async def change_seq(self) -> int:
        """A counter every write transaction increments (the sum of the lanes'): cheap to poll
        for 'anything new?'."""
        rows = await self.first("SELECT math::sum(seq) AS seq FROM lane GROUP ALL")
        return int(rows[0]["seq"]) if rows else 0

    async def set_status(self, name: str, status: dict[str, Any]) -> None:
        await self.query("UPSERT type::record('status', $n) CONTENT $s RETURN NONE", {"n": name, "s": status})

    async def get_status(self, name: str) -> dict[str, Any] | None:
        return await self.first("SELECT * FROM ONLY type::record('status', $n)", {"n": name})


def _names(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _size(value: Any) -> int:
    """About how many bytes ``value`` (a statement's parameters) adds to the database. A long
    list is judged by 16 of its items, evenly spaced: this runs on the event loop after every
    write (all 500 rows of a batch took ~5 ms; 16 take ~0.2)."""
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, dict):
        return sum(_size(v) + 8 for v in value.values())
    if isinstance(value, (list, tuple)):
        step = max(1, len(value) // 16)
        return sum(_size(v) for v in value[::step]) * len(value) // max(1, len(value[::step]))
    return 8
