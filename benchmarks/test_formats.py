"""What one decoding worker does per photo, by format: prepare() (hash, decode, fingerprint, the
model's crop, no thumbnail) of a 12 MP photo-like picture (4000x3000), one core; then the pool
of decoding workers on two cores, where a HEIC that carries an iPhone's 320x240 rendition has a
floor: at least 80% of the JPEG draft-mode rate (#17). Reported in the README's "What is
indexed"."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_search.indexing.workers import worker_start
from image_search.pictures.imaging import CropSpec, configure_pillow, prepare
from tests.dng import write_dng

SIZE = (4000, 3000)
SAVE = {
    "jpeg": {"quality": 90},
    "png": {},
    "webp": {"quality": 90},
    "avif": {"quality": 80, "speed": 8},
    "heic": {"quality": 90},
    "rendition.heic": {"quality": 90, "thumbnails": [320]},  # as an iPhone writes it
    "tif": {"compression": "tiff_deflate"},
    "dng": {},  # sensor data only: LibRaw's half-size decode
    "preview.dng": {"preview": (1616, 1212)},  # a 2 MP JPEG preview, as a Sony ARW carries
}


def photo(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w, h = SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 200, y / h * 180, (x + y) / (w + h) * 160], axis=-1)
    noise = rng.normal(0, 12, (h // 4, w // 4, 3)).repeat(4, 0).repeat(4, 1)
    kind = path.name.split(".", 1)[1]
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    if kind.endswith("dng"):
        preview = SAVE[kind].get("preview")
        return write_dng(path, image, preview=image.resize(preview) if preview else None)
    image.save(path, **SAVE[kind])
    return path


@pytest.mark.parametrize("fmt", list(SAVE))
def test_prepare_rate_by_format(benchmark, bench_tmp: Path, fmt: str) -> None:
    configure_pillow()
    path = photo(bench_tmp / f"12mp.{fmt}")
    spec = CropSpec()
    prepared = benchmark.pedantic(
        lambda: prepare(str(path), spec, 100), rounds=5, iterations=1, warmup_rounds=1
    )
    assert prepared.error is None and (prepared.width, prepared.height) == SIZE
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(format=fmt, ms=round(seconds * 1000, 1), per_core_img_s=round(1 / seconds, 1))
    rate = 1 / seconds
    print(
        f"\n{fmt}: {seconds * 1000:.0f} ms per 12 MP photo, {rate:.1f} img/s per core ({time.strftime('%F')})"
    )


def pool_rate(path: Path, workers: int, copies: int = 24) -> float:
    """Photos a second through the indexer's pool of decoding workers (their start-up as the
    indexer does it: libheif gets each worker's share of the cores)."""
    spec = CropSpec()
    files = [str(path)] * copies
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, context, worker_start, (threads,)) as pool:
        list(pool.map(prepare, files[:workers], [spec] * workers, [100] * workers))  # warm up
        start = time.perf_counter()
        done = list(pool.map(prepare, files, [spec] * copies, [100] * copies))
        elapsed = time.perf_counter() - start
    assert all(p.error is None for p in done)
    return copies / elapsed


def test_heic_with_a_rendition_keeps_up_with_jpeg(bench_tmp: Path) -> None:
    """On two cores (the CI machine's), two workers: the floor of #17, item 2."""
    configure_pillow()
    workers = 2
    rates = {
        kind: pool_rate(photo(bench_tmp / f"pool.{kind}"), workers)
        for kind in ("jpeg", "rendition.heic", "heic")
    }
    for kind, rate in rates.items():
        print(
            f"\n{kind}: {rate:.1f} img/s, {workers} workers, {os.cpu_count()} cores ({time.strftime('%F')})"
        )
    assert rates["rendition.heic"] >= 0.8 * rates["jpeg"], rates
