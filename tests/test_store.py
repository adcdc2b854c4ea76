"""The SurrealDB store on the embedded engine (mem:// and surrealkv://)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
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


async def test_path_is_unique(store: Store) -> None:
    await store.write([row("/pics/a.jpg", unit(1))])
    clash = row("/pics/a.jpg", unit(2))
    clash["key"] = "another-key"
    with pytest.raises(QueryFailed, match="image_path"):
        await store.write([clash])


async def test_rewriting_a_row_replaces_it(store: Store) -> None:
    await store.write([row("/pics/a.jpg", unit(1))])
    await store.write([row("/pics/a.jpg", unit(2), hash="new")])
    rows = await store.get([image_key("/pics/a.jpg")])
    assert rows[image_key("/pics/a.jpg")]["hash"] == "new"
    assert (await store.counts()).total == 1


async def test_lookups_use_the_indexes(store: Store) -> None:
    plan = str(await store.first("SELECT id FROM image WHERE hash = 'x' EXPLAIN"))
    assert "image_hash" in plan
    plan = str(await store.first("SELECT id FROM image WHERE path = 'x' EXPLAIN"))
    assert "image_path" in plan


async def test_embeddings_by_hash_only_for_the_same_model(store: Store) -> None:
    await store.write([row("/pics/a.jpg", unit(1), hash="same")])
    assert set(await store.embeddings_by_hash(["same", "other"], "m1")) == {"same"}
    assert await store.embeddings_by_hash(["same"], "m2") == {}


async def test_model_change_is_refused_then_reembedded(store: Store) -> None:
    await store.check_model("m1")
    await store.write([row("/pics/a.jpg", unit(1))])
    with pytest.raises(ModelMismatch, match="--reembed"):
        await store.check_model("m2")
    await store.check_model("m2", reembed=True)
    assert await store.stored_model() == "m2"
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


async def test_status_counts_are_kept_by_every_write(store: Store) -> None:
    """status reads counters that each write transaction keeps; after any mix of writes, moves,
    deletes and offline marks they equal a count of every row."""
    rng = np.random.default_rng(5)
    names = [f"/pics/{i}.jpg" for i in range(30)]
    for step in range(40):
        picked = [names[i] for i in rng.choice(len(names), size=int(rng.integers(1, 8)), replace=False)]
        action = step % 5
        if action == 0:  # new rows and replaced ones: indexed, failed, offline
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
        elif action == 1:  # onto free names and onto stored ones; from missing ones too
            await store.move([(p, names[(names.index(p) + 7) % len(names)], "/pics") for p in picked])
        elif action == 2:
            await store.delete([image_key(p) for p in picked] + [image_key("/pics/never.jpg")])
        elif action == 3:
            await store.set_offline_keys([image_key(p) for p in picked], bool(step % 2))
        else:
            await store.set_offline("/pics", bool(step % 3))
        assert await store.counts() == await store.counted(), step
    assert (await store.counts()).total > 0


async def test_counts_are_counted_once_when_migrating(tmp_path: Path) -> None:
    """A database from before the counters (schema 2) gets them from its rows."""
    async with Store(f"surrealkv://{tmp_path / 'db'}") as store:
        await store.write([row(f"/pics/{i}.jpg", unit(i), offline=i == 0) for i in range(5)])
        await store.write([row("/pics/bad.jpg", error="cannot decode")])
        await store.query("DELETE meta:counts; UPSERT meta:schema MERGE {version: 2}")
    async with Store(f"surrealkv://{tmp_path / 'db'}") as store:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.counts() == await store.counted()
        assert (await store.counts()).total == 6 and (await store.counts()).offline == 1
