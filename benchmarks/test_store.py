"""Store floors: ≥ 5,000 image rows/s written into surrealkv://, 100k embeddings loaded ≤ 5 s."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from pathlib import Path

import pytest

from image_search.store import Store, image_key, path_fields, to_bytes

from .conftest import unit_vectors

BATCH = 500
counter = itertools.count()


def rows(vectors, prefix: str) -> list[dict]:
    stamp = dt.datetime.now(dt.UTC)
    out = []
    for v in vectors:
        path = f"/photos/{prefix}/{next(counter):07d}.jpg"
        out.append(
            {
                "key": image_key(path),
                **path_fields(path),
                "root": "/photos",
                "size": 4_000_000,
                "mtime_ns": 1_700_000_000_000_000_000,
                "hash": image_key(path + "#"),
                "width": 4000,
                "height": 3000,
                "taken_at": stamp,
                "format": "JPEG",
                "embedding": to_bytes(v),
                "model": "bench",
                "indexed_at": stamp,
                "error": None,
                "offline": False,
            }
        )
    return out


def test_write_rows_surrealkv(benchmark, bench_tmp: Path, loop: asyncio.AbstractEventLoop) -> None:
    """Batches of 500 full image rows (768-d float16 embeddings), one transaction each, two in
    flight as the indexer writes them (two batches per device; one per lane of the store)."""
    store = Store(f"surrealkv://{bench_tmp / 'write'}")
    loop.run_until_complete(store.open())
    vectors = unit_vectors(BATCH)
    batches = iter([rows(vectors, f"w{i}") for i in range(2 * 52)])

    async def two() -> None:
        await asyncio.gather(store.write(next(batches)), store.write(next(batches)))

    def write() -> None:
        loop.run_until_complete(two())

    benchmark.pedantic(write, rounds=50, iterations=1, warmup_rounds=2)
    loop.run_until_complete(store.close())
    rate = 2 * BATCH / benchmark.stats.stats.median
    benchmark.extra_info.update(rows_per_s=round(rate), floor=5000, batch=BATCH, in_flight=2)
    assert rate >= 5000, f"{rate:.0f} rows/s"


@pytest.mark.slow
def test_load_100k_embeddings(benchmark, bench_tmp: Path, loop: asyncio.AbstractEventLoop) -> None:
    """Every embedding of a 100k-image library into a matrix, as the server does at start."""
    store = Store(f"surrealkv://{bench_tmp / 'load'}")
    loop.run_until_complete(store.open())
    vectors = unit_vectors(BATCH)
    for i in range(100_000 // BATCH):
        loop.run_until_complete(store.write(rows(vectors, f"l{i}")))

    def load():
        return loop.run_until_complete(store.load_embeddings("bench"))

    keys, matrix = benchmark.pedantic(load, rounds=3, iterations=1)
    loop.run_until_complete(store.close())
    assert len(keys) == 100_000 and matrix.shape == (100_000, 768)
    benchmark.extra_info.update(seconds=round(benchmark.stats.stats.median, 2), ceiling_s=5)
    assert benchmark.stats.stats.median <= 5
