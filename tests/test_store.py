"""The SurrealDB store on the embedded engine (mem:// and surrealkv://)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from image_search.store import (
    SCHEMA_VERSION,
    ModelMismatch,
    QueryFailed,
    Store,
    StoreError,
    image_key,
    path_fields,
    real_path,
    to_bytes,
)


def row(path: str, vector: np.ndarray | None = None, *, model: str = "m1", **extra: object) -> dict:
    return {
        "key": image_key(path),
        **path_fields(path),
        "root": "/pics",
        "size": 10,
        "mtime_ns": 1,
        "hash": extra.pop("hash", "h-" + path),
        "width": 4,
        "height": 3,
        "format": "JPEG",
        "taken_at": dt.datetime(2020, 5, 1, tzinfo=dt.UTC),
        "indexed_at": dt.datetime.now(dt.UTC),
        "embedding": None if vector is None else to_bytes(vector),
        "model": None if vector is None else model,
        "error": extra.pop("error", None),
        "offline": False,
        **extra,
    }


def unit(seed: int, d: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=d).astype(np.float32)
    return v / np.linalg.norm(v)


async def test_schema_is_versioned(store: Store) -> None:
    assert await store.schema_version() == SCHEMA_VERSION
    await store.migrate()  # idempotent
    assert await store.schema_version() == SCHEMA_VERSION


async def test_newer_schema_is_refused(store: Store) -> None:
    await store.query("UPSERT meta:schema MERGE {version: 999}")
    with pytest.raises(StoreError, match="upgrade image-search"):
        await store.migrate()


async def test_rows_round_trip_with_float16_embeddings(store: Store) -> None:
    await store.write(
        [row("/pics/a.jpg", unit(1)), row("/pics/b.jpg", unit(2)), row("/pics/bad.jpg", error="x")]
    )
    keys, matrix = await store.load_embeddings("m1")
    assert sorted(keys) == sorted([image_key("/pics/a.jpg"), image_key("/pics/b.jpg")])
    assert matrix.dtype == np.float16 and matrix.shape == (2, 8)
    a = matrix[keys.index(image_key("/pics/a.jpg"))].astype(np.float32)
    assert np.allclose(a, unit(1), atol=1e-3)
    got = await store.get([image_key("/pics/a.jpg"), image_key("/nope")])
    assert list(got) == [image_key("/pics/a.jpg")]
    assert got[image_key("/pics/a.jpg")]["taken_at"] == dt.datetime(2020, 5, 1, tzinfo=dt.UTC)
    counts = await store.counts()
    assert (counts.indexed, counts.failed, counts.total) == (2, 1, 3)


async def test_a_batch_is_one_transaction(store: Store) -> None:
    """A batch with one invalid row writes nothing at all."""
    good = row("/pics/good.jpg", unit(1))
    broken = row("/pics/broken.jpg", unit(2), width="not a number")
    with pytest.raises(QueryFailed, match="width"):
        await store.write([good, broken])
    assert (await store.counts()).total == 0


async def test_names_that_share_one_text_are_two_rows(store: Store) -> None:
    """Two names that are not UTF-8 and differ only in their undecodable bytes have one text
    (U+FFFD for the byte): each is its own row, written in one batch (a UNIQUE index on the
    text failed the whole batch until schema 4)."""
    first, second = os.fsdecode(b"/pics/caf\xe9.jpg"), os.fsdecode(b"/pics/caf\xe8.jpg")
    await store.write([row(first, unit(1), hash="h1"), row(second, unit(2), hash="h2")])
    got = await store.get([image_key(first), image_key(second)])
    assert {real_path(r) for r in got.values()} == {first, second}
    assert {r["path"] for r in got.values()} == {"/pics/caf\ufffd.jpg"}
    assert (await store.counts()).total == 2


async def test_rewriting_a_row_replaces_it(store: Store) -> None:
    await store.write([row("/pics/a.jpg", unit(1))])
    await store.write([row("/pics/a.jpg", unit(2), hash="new")])
    rows = await store.get([image_key("/pics/a.jpg")])
    assert rows[image_key("/pics/a.jpg")]["hash"] == "new"
    assert (await store.counts()).total == 1


async def test_lookups_use_the_indexes(store: Store) -> None:
    plan = str(await store.first("SELECT id FROM image WHERE hash = 'x' EXPLAIN"))
    assert "image_hash" in plan
    plan = str(await store.first("SELECT id FROM image WHERE root = 'x' EXPLAIN"))
    assert "image_root" in plan


async def test_embeddings_by_hash_only_for_the_same_model(store: Store) -> None:
    await store.write([row("/pics/a.jpg", unit(1), hash="same")])
    assert set(await store.embeddings_by_hash(["same", "other"], "m1")) == {"same"}
    assert await store.embeddings_by_hash(["same"], "m2") == {}


async def test_model_change_is_refused_then_reembedded(store: Store) -> None:
    await store.check_model("m1")
    await store.write([row("/pics/a.jpg", unit(1)), row("/pics/b.jpg", unit(2), offline=True)])
    await store.write([row("/pics/bad.jpg", error="cannot decode")])
    with pytest.raises(ModelMismatch, match="--reembed"):
        await store.check_model("m2")
    await store.check_model("m2", reembed=True)
    assert await store.stored_model() == "m2"
    # status no longer counts the dropped embeddings as indexed (it did until schema 4's store)
    assert await store.counts() == await store.counted()
    assert (await store.counts()).indexed == 0 and (await store.counts()).total == 3
    keys, _ = await store.load_embeddings("m1")
    assert keys == []
    left = (await store.get([image_key("/pics/a.jpg")]))[image_key("/pics/a.jpg")]
    assert left["model"] is None and left["mtime_ns"] == -1  # the next index run embeds it again


async def test_offline_rows_are_kept_but_not_searched(store: Store) -> None:
    await store.write([row("/pics/a.jpg", unit(1))])
    assert await store.set_offline("/pics", True) == 1
    assert (await store.load_embeddings("m1"))[0] == []
    assert (await store.counts()).offline == 1
    await store.set_offline("/pics", False)
    assert len((await store.load_embeddings("m1"))[0]) == 1


async def test_non_utf8_file_names_keep_their_bytes(store: Store) -> None:
    name = b"/pics/caf\xe9.jpg".decode("utf-8", "surrogateescape")
    await store.write([row(name, unit(1), hash="h")])
    got = (await store.get([image_key(name)]))[image_key(name)]
    assert real_path(got) == name


async def test_surrealkv_persists_across_reopen(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'db'}"
    async with Store(url) as s:
        await s.check_model("m1")
        await s.write([row("/pics/a.jpg", unit(1))])
    async with Store(url) as s:
        assert await s.stored_model() == "m1"
        assert len((await s.load_embeddings("m1"))[0]) == 1


async def test_surrealkv_is_closed_and_opened_to_write_its_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine flushes only on close, and hangs past ~2 GB of log: after CHECKPOINT_BYTES of
    writes the store closes and opens itself again, reads beside it waiting, nothing lost."""
    from image_search.store import connection
    from image_search.testing import library_rows

    monkeypatch.setattr(connection, "CHECKPOINT_BYTES", 60_000)
    folder = tmp_path / "db"
    vectors = np.random.default_rng(3).normal(size=(1200, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    wal_before: list[int] = []
    async with Store(f"surrealkv://{folder}") as s:
        await s.check_model("m1")
        done, reads = asyncio.Event(), [0]

        async def reader() -> None:  # reads go on beside the writes and the reopenings
            while not done.is_set():
                assert (await s.counts()).total % 100 == 0
                reads[0] += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(reader())
        for start in range(0, 1200, 100):
            wal_before.append(sum(f.stat().st_size for f in (folder / "wal").iterdir()))
            await s.write(library_rows(start, vectors[start : start + 100], "/pics", "m1"))
        done.set()
        await task
        assert s.checkpoints >= 5 and reads[0] > 12
        # Each reopening wrote the memory to a table file and started the log again.
        assert any(later < earlier for earlier, later in itertools.pairwise(wal_before))
        assert list((folder / "sstables").iterdir())
        assert (await s.counts()).total == 1200
    async with Store(f"surrealkv://{folder}") as s:
        keys, matrix = await s.load_embeddings("m1")
        assert len(keys) == 1200 and (await s.counts()).indexed == 1200
        by_key = dict(zip(keys, matrix, strict=True))
        for i, r in enumerate(library_rows(0, vectors, "/pics", "m1")):
            assert np.allclose(by_key[r["key"]], vectors[i], atol=1e-3)
    async with Store("mem://") as s:  # a memory database would lose everything: never reopened
        await s.check_model("m1")
        for start in range(0, 600, 100):
            await s.write(library_rows(start, vectors[start : start + 100], "/pics", "m1"))
        assert s.checkpoints == 0 and (await s.counts()).total == 600


async def test_a_big_run_settles_the_database_for_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SurrealKV merges its table files when it opens (here: five or more small ones): after a
    big run the next opens did the merging (3-14 s each at 1M rows). The same rows written
    twice: the run that settles leaves tables an opening no longer merges; the other does not."""
    from image_search.store import connection
    from image_search.testing import library_rows

    monkeypatch.setattr(connection, "CHECKPOINT_BYTES", 60_000)
    monkeypatch.setattr(connection, "SETTLE_BYTES", 100_000)
    vectors = np.random.default_rng(4).normal(size=(3000, 64)).astype(np.float32)

    async def run(folder: Path, settle: bool) -> set[str]:
        async with Store(f"surrealkv://{folder}") as s:
            for start in range(0, 3000, 100):
                await s.write(library_rows(start, vectors[start : start + 100], "/pics", "m1"))
            if settle:
                before = s.checkpoints
                await s.settle()
                assert s.checkpoints > before
        return set(os.listdir(folder / "sstables"))

    async def merged_by_an_open(folder: Path, tables: set[str]) -> set[str]:
        async with Store(f"surrealkv://{folder}") as s:
            assert (await s.counts()).total == 3000
        return tables - set(os.listdir(folder / "sstables"))

    plain = await run(tmp_path / "plain", settle=False)
    settled = await run(tmp_path / "settled", settle=True)
    assert await merged_by_an_open(tmp_path / "plain", plain)  # the engine merges when it opens
    assert not await merged_by_an_open(tmp_path / "settled", settled)
    async with Store(f"surrealkv://{tmp_path / 'small'}") as s:  # a small run is left as it is
        await s.write(library_rows(0, vectors[:100], "/pics", "m1"))
        await s.settle()
        assert s.checkpoints == 0


async def test_server_url_needs_credentials() -> None:
    with pytest.raises(StoreError, match="db_user"):
        async with Store("ws://127.0.0.1:9/rpc"):
            pass


async def test_status_record_round_trips(store: Store) -> None:
    await store.set_status("daemon", {"queue": 3, "rate": 1.5})
    got = await store.get_status("daemon")
    assert got["queue"] == 3 and got["rate"] == 1.5


async def test_every_write_bumps_the_change_counter(store: Store) -> None:
    start = await store.change_seq()
    await store.write([row("/pics/a.jpg", unit(1))])
    await store.move([("/pics/a.jpg", "/pics/b.jpg", "/pics")])
    await store.set_offline("/pics", True)
    await store.delete([image_key("/pics/b.jpg")])
    assert await store.change_seq() == start + 4


async def test_move_keeps_the_embedding_under_the_new_path(store: Store) -> None:
    await store.write([row("/pics/a.jpg", unit(1))])
    missing = await store.move(
        [("/pics/a.jpg", "/pics/sub/a.jpg", "/pics"), ("/pics/none.jpg", "/pics/x.jpg", "/pics")]
    )
    assert missing == ["/pics/none.jpg"]
    assert await store.get([image_key("/pics/a.jpg")]) == {}
    moved = await store.get_one(image_key("/pics/sub/a.jpg"), embedding=True)
    assert (
        moved is not None and moved["path"] == "/pics/sub/a.jpg" and moved["embedding"] == to_bytes(unit(1))
    )


async def test_concurrent_write_batches_all_land(store: Store) -> None:
    """Every write transaction bumps meta:changes; concurrent batches must not lose on conflict."""
    batches = [[row(f"/pics/{b}-{i}.jpg", unit(b * 10 + i)) for i in range(20)] for b in range(8)]
    await asyncio.gather(*(store.write(batch) for batch in batches))
    assert (await store.counts()).total == 160


NAMES = [f"/pics/{i}.jpg" for i in range(30)]


async def some_change(store: Store, action: int, picked: list[str], step: int) -> None:
    """One of the writes that change the counts: new and replaced rows (indexed, failed,
    offline), moves onto free and onto stored names (and from missing ones), deletes, offline
    marks by key and by root."""
    if action == 0:
        await store.write(
            [
                row(
                    p,
                    None if i % 3 == 0 else unit(i),
                    error="bad" if i % 3 == 0 else None,
                    offline=i % 4 == 1,
                )
                for i, p in enumerate(picked)
            ]
        )
    elif action == 1:
        await store.move([(p, NAMES[(NAMES.index(p) + 7) % len(NAMES)], "/pics") for p in picked])
    elif action == 2:
        await store.delete([image_key(p) for p in picked] + [image_key("/pics/never.jpg")])
    elif action == 3:
        await store.set_offline_keys([image_key(p) for p in picked], bool(step % 2))
    else:
        await store.set_offline("/pics", bool(step % 3))


async def test_status_counts_are_kept_by_every_write(store: Store) -> None:
    """status reads counters that each write transaction keeps; after any mix of writes, moves,
    deletes and offline marks they equal a count of every row."""
    rng = np.random.default_rng(5)
    for step in range(40):
        picked = [NAMES[i] for i in rng.choice(len(NAMES), size=int(rng.integers(1, 8)), replace=False)]
        await some_change(store, step % 5, picked, step)
        assert await store.counts() == await store.counted(), step
    assert (await store.counts()).total > 0


async def test_counts_stay_exact_with_writes_side_by_side(store: Store) -> None:
    """Two changes at once, on two lanes, on overlapping rows (moves land on the other's names):
    each lane keeps its own counts, a clash is retried, and the sum equals a count of every row."""
    rng = np.random.default_rng(7)
    seq = await store.change_seq()
    for step in range(40):
        order = rng.permutation(len(NAMES))
        one, two = [NAMES[i] for i in order[:6]], [NAMES[i] for i in order[6:12]]
        await asyncio.gather(
            some_change(store, int(rng.integers(5)), one, step),
            some_change(store, int(rng.integers(5)), two, step + 1),
        )
        assert await store.counts() == await store.counted(), step
        assert await store.change_seq() == seq + 2 * (step + 1)
    lanes = await store.first("SELECT VALUE seq FROM lane")
    assert len(lanes) == 2 and min(lanes) > 0  # both lanes carried writes


async def test_writes_run_one_per_lane(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight batches at once: two transactions in flight (one per lane), never more."""
    running, most = 0, 0
    query = type(store).query

    async def counting(self: Store, sql: str, params: dict | None = None) -> list:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.01)
            return await query(self, sql, params)
        finally:
            running -= 1

    monkeypatch.setattr(type(store), "query", counting)
    batches = [[row(f"/pics/{b}-{i}.jpg", unit(b * 10 + i)) for i in range(20)] for b in range(8)]
    await asyncio.gather(*(store.write(batch) for batch in batches))
    assert most == 2
    assert (await store.counts()).total == 160


async def test_counts_are_counted_once_when_migrating(tmp_path: Path) -> None:
    """A database from before the counters (schema 2) gets them from its rows."""
    async with Store(f"surrealkv://{tmp_path / 'db'}") as store:
        await store.write([row(f"/pics/{i}.jpg", unit(i), offline=i == 0) for i in range(5)])
        await store.write([row("/pics/bad.jpg", error="cannot decode")])
        await store.query(
            "REMOVE TABLE lane; DEFINE INDEX image_path ON image FIELDS path UNIQUE; "
            "UPSERT meta:changes SET seq = 9; UPSERT meta:schema MERGE {version: 2}"
        )
    async with Store(f"surrealkv://{tmp_path / 'db'}") as store:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.counts() == await store.counted()
        assert (await store.counts()).total == 6 and (await store.counts()).offline == 1
        assert await store.change_seq() == 9  # the change counter carried on
        assert "image_path" not in str(await store.first("INFO FOR TABLE image"))
