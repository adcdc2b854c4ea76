"""The SurrealDB connection: open, migrate, run statements, write transactions, and the one check
that binds a database to the model whose vectors it holds."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surrealdb import AsyncSurreal, RecordID

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


@dataclass(frozen=True)
class ModelIdentity:
    """A model as the database knows it: ``name`` (carried by every row it embedded),
    ``content`` (its weights' digest, :mod:`image_search.weights`; None where unknown) and
    ``typed`` (what to give ``--model`` to use it again: a hub id or a folder)."""

    name: str
    content: str | None = None
    typed: str | None = None


def _identity(model: ModelIdentity | str) -> ModelIdentity:
    return model if isinstance(model, ModelIdentity) else ModelIdentity(model, None, model)


def mismatch(stored: dict[str, Any], wanted: ModelIdentity, count: int | None = None) -> ModelMismatch:
    """The one message for a model change: what the database holds and the commands that fix it."""
    name = stored["name"]
    typed = stored.get("typed") or (None if name.startswith(("local:", "random:")) else name)
    model = typed if typed and typed != "--random-weights" else name
    held = f"{count} embeddings of model {model!r}" if count else f"embeddings of model {model!r}"
    if typed == "--random-weights":
        back = "run with --random-weights (a benchmark's database)"
    elif typed:
        back = f"use --model {shlex.quote(typed)}"
    else:  # written by a version that did not record where the weights were
        back = f"use --model with the folder of that model (it was called {name.split(':')[1]!r})"
    new = wanted.typed or wanted.name
    return ModelMismatch(
        f"the database holds {held}, not {new!r}. Vectors of two models cannot be searched "
        f"together: {back}, or run `image-search index --reembed --model {shlex.quote(new)}` "
        "to embed every photo again with the new model"
    )


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
        self.checkpoints = 0

    @property
    def embedded(self) -> bool:
        return not self.url.startswith(("ws://", "wss://", "http://", "https://"))

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
                    self._unflushed += _size(params)
                    if (
                        self._unflushed >= CHECKPOINT_BYTES
                        and self.url.startswith("surrealkv://")
                        and not self._checkpointing
                    ):
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

    async def _checkpoint(self) -> None:
        """Close the embedded database and open it again, the statements waiting meanwhile (see
        ``CHECKPOINT_BYTES``). Runs on a write transaction's lane, after its commit; a write on
        another lane finishes first."""
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
        row = await self._model_row()
        return row["name"] if row else None

    async def _model_row(self) -> dict[str, Any] | None:
        return await self.first("SELECT * FROM ONLY meta:model")

    def _same(self, stored: dict[str, Any], model: ModelIdentity) -> bool:
        if stored["name"] == model.name:
            return True
        if model.content is not None and stored.get("content") == model.content:
            log.info(
                "%s holds the same weights as %r, which the database was built with: no re-embedding",
                model.typed or model.name,
                stored["name"],
            )
            return True
        return False

    async def require_model(self, model: ModelIdentity | str) -> str:
        """For readers (search, the web server, the library commands): the database must hold
        this model's vectors, or none yet. Returns the name its rows carry, which differs from
        ``model.name`` for the same weights found elsewhere. Raises :class:`ModelMismatch`."""
        model = _identity(model)
        stored = await self._model_row()
        if stored is None:
            return model.name
        if not self._same(stored, model):
            raise mismatch(stored, model)
        return str(stored["name"])

    async def check_model(self, model: ModelIdentity | str, *, reembed: bool = False) -> str:
        """For writers: bind the database to this model; refuse another model's vectors unless
        re-embedding. With ``reembed`` every embedding of another model is dropped (the files stay
        listed and are embedded again by the next index run). Returns the name to write rows
        with (see :meth:`require_model`); records the weights' content and location."""
        model = _identity(model)
        stored = await self._model_row()
        if stored is not None and self._same(stored, model):
            facts = {"content": model.content or stored.get("content"), "typed": model.typed}
            if any(stored.get(k) != v for k, v in facts.items()):
                await self.query("UPDATE meta:model MERGE $f RETURN NONE", {"f": facts})
            return str(stored["name"])
        others = await self.first(
            "SELECT count() AS n FROM image WHERE model != NONE AND model != $m GROUP ALL", {"m": model.name}
        )
        if others and others[0]["n"] and not reembed:
            raise mismatch(stored or {"name": "?"}, model, others[0]["n"])
        await self.transact(
            "BEGIN TRANSACTION;"
            "LET $gone = (SELECT count() FROM image WHERE model != NONE AND model != $m "
            "AND embedding != NONE AND offline = false GROUP ALL)[0].count ?? 0;"
            "UPDATE image SET embedding = NONE, model = NONE, hash = NONE, mtime_ns = -1 "
            "WHERE model != NONE AND model != $m RETURN NONE;"
            "UPSERT meta:model CONTENT $row; UPSERT $lane SET seq += 1, indexed -= $gone RETURN NONE;"
            "COMMIT TRANSACTION;",
            {"m": model.name, "row": {"name": model.name, "content": model.content, "typed": model.typed}},
        )
        return model.name

    async def change_seq(self) -> int:
        """A counter every write transaction increments (the sum of the lanes'): cheap to poll
        for 'anything new?'."""
        rows = await self.first("SELECT math::sum(seq) AS seq FROM lane GROUP ALL")
        return int(rows[0]["seq"]) if rows else 0

    async def set_status(self, name: str, status: dict[str, Any]) -> None:
        await self.query("UPSERT type::record('status', $n) CONTENT $s RETURN NONE", {"n": name, "s": status})

    async def get_status(self, name: str) -> dict[str, Any] | None:
        return await self.first("SELECT * FROM ONLY type::record('status', $n)", {"n": name})


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
