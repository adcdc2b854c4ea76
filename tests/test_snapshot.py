"""The library snapshot beside an embedded database: used only at the store's change counter."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest

from image_search.models.model import TextEmbedder
from image_search.search.library import Library
from image_search.search.snapshot import folder_for
from image_search.store import Store, image_key, path_fields, to_bytes


def row(path: str, seed: int, *, fingerprint: bytes | None = None) -> dict:
    vector = np.random.default_rng(seed).normal(size=16)
    return {
        "key": image_key(path),
        **path_fields(path),
        "root": "/photos",
        "size": 1000 + seed,
        "mtime_ns": 1,
        "hash": f"{seed:032x}",
        "width": 640,
        "height": None if seed % 3 == 0 else 480,
        "taken_at": dt.datetime(2020, 1, 1 + seed % 28, tzinfo=dt.UTC) if seed % 2 else None,
        "format": "JPEG" if seed % 4 else None,
        "embedding": to_bytes(vector / np.linalg.norm(vector)),
        "model": "m",
        "fingerprint": fingerprint,
        "indexed_at": dt.datetime.now(dt.UTC),
        "error": None,
        "offline": False,
    }


def same(a: Library, b: Library) -> None:
    assert a.index.keys == b.index.keys
    assert a.meta.keys() == b.meta.keys()
    for key, meta in a.meta.items():
        other = b.meta[key]
        assert (meta.path, meta.root, meta.width, meta.height, meta.size, meta.format, meta.hash) == (
            other.path,
            other.root,
            other.width,
            other.height,
            other.size,
            other.format,
            other.hash,
        )
        assert meta.fingerprint == other.fingerprint
        assert meta.taken_at == other.taken_at or (np.isnan(meta.taken_at) and np.isnan(other.taken_at))
    assert np.array_equal(a.index.vectors(a.index.keys), b.index.vectors(b.index.keys))


class Reads:
    """Counts the store's full reads of the library (a snapshot spares them)."""

    def __init__(self, store: Store) -> None:
        self.n = 0
        self.read = store.searchable_rows

        async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.n += 1
            return await self.read(*args, **kwargs)

        store.searchable_rows = counted  # type: ignore[method-assign]


async def test_the_snapshot_serves_the_next_start_until_the_store_changes(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'db'}"
    folder = folder_for(url)
    assert folder == tmp_path / "db.library" and folder_for("mem://") is None
    odd = os.fsdecode(b"/photos/caf\xe9.jpg")  # a name that is not UTF-8
    async with Store(url) as store:
        await store.check_model("m")
        await store.write(
            [
                row(f"/photos/{i:03d}.jpg", i, fingerprint=bytes([1]) + bytes(56) if i % 5 else None)
                for i in range(40)
            ]
            + [row(odd, 99)]
        )
        reads = Reads(store)
        first = await Library.open(store, "m", folder)
        assert first.saving is not None
        await first.saving
        assert reads.n == 1 and (folder / "state.json").exists()
        second = await Library.open(store, "m", folder)
        assert reads.n == 1, "the unchanged store was read again"
        same(first, second)
        assert second.meta[image_key(odd)].path == odd
        # Changed behind the snapshot's back: it is not used; the new row is there and a new
        # snapshot is written at the new counter.
        await store.write([row("/photos/new.jpg", 500)])
        third = await Library.open(store, "m", folder)
        assert reads.n == 2 and image_key("/photos/new.jpg") in third.meta
        await third.saving  # type: ignore[misc]
        fourth = await Library.open(store, "m", folder)
        assert reads.n == 2
        same(third, fourth)
        await store.delete([image_key("/photos/new.jpg")])
        fifth = await Library.open(store, "m", folder)
        assert reads.n == 3 and image_key("/photos/new.jpg") not in fifth.meta


@pytest.mark.parametrize("damage", ["truncated matrix", "foreign state", "missing columns", "other model"])
async def test_a_damaged_or_foreign_snapshot_means_a_full_load(tmp_path: Path, damage: str) -> None:
    url = f"surrealkv://{tmp_path / 'db'}"
    folder = folder_for(url)
    assert folder is not None
    async with Store(url) as store:
        await store.check_model("m")
        await store.write([row(f"/photos/{i}.jpg", i) for i in range(10)])
        reads = Reads(store)
        first = await Library.open(store, "m", folder)
        await first.saving  # type: ignore[misc]
        if damage == "truncated matrix":
            data = (folder / "matrix.npy").read_bytes()
            (folder / "matrix.npy").write_bytes(data[: len(data) // 2])
        elif damage == "foreign state":
            (folder / "state.json").write_text('{"format": 1, "seq": "x"')
        elif damage == "missing columns":
            (folder / "columns.npz").unlink()
        else:
            state = (folder / "state.json").read_text().replace('"model": "m"', '"model": "other"')
            (folder / "state.json").write_text(state)
        again = await Library.open(store, "m", folder)
        assert reads.n == 2
        same(first, again)


async def test_the_web_app_reads_the_snapshot_of_the_database_it_has_open(
    tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:
    """A store given to the app (mem://) beside a configured embedded database whose snapshot has
    the same change counter and model: that snapshot is another library's, never loaded (the
    screenshots script served ids its database did not have)."""
    from aiohttp.test_utils import TestClient, TestServer

    from image_search.search.snapshot import folder_for
    from image_search.testing import library_rows
    from image_search.webui import create_app

    from .conftest import app_config

    model_id = text_embedder.source.model_id
    vectors = np.eye(16, dtype=np.float32)[:4]
    configured = f"surrealkv://{tmp_path / 'db'}"
    async with Store("mem://") as other:
        await other.check_model(model_id)
        await other.write(library_rows(0, vectors, "/elsewhere", model_id))
        stale = Library(model_id)
        await stale.load(other, folder_for(configured))  # a snapshot beside the configured database
        if stale.saving is not None:
            await stale.saving
    assert folder_for(configured) is not None and folder_for(configured).exists()  # type: ignore[union-attr]
    async with Store("mem://") as store:
        await store.check_model(model_id)
        await store.write(library_rows(0, vectors, "/photos", model_id))
        config = app_config(tmp_path, tiny_model_dir, database_url=configured)
        app = create_app(config, store=store, text_embedder=text_embedder)
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            found = await (await c.post("/api/search", json={"text": "x", "limit": 4})).json()
            assert {r["root"] for r in found["results"]} == {"/photos"}
