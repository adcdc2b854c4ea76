"""What measuring the near-duplicate threshold costs once per library (image_search.duplicates.
calibration): the default model's real shapes with random weights, on the CPU, 16 of Debian's
wallpapers (1280x1024 to 5640x3172) each decoded in full and embedded with its five copies.

    OMP_NUM_THREADS=2 taskset -c 0,1 pytest benchmarks/test_calibration.py -m slow -s

Measured (2026-12-06, this project's 2-core AMD EPYC with AVX-512 BF16, bfloat16): 9.4 and 10.6 s, once.
The threshold itself means nothing with random weights; with real ones it is the library's own.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from image_search.duplicates import measure_library
from image_search.duplicates.calibration import COPIES, SAMPLE
from image_search.indexing import FileRef, Indexer
from image_search.models import DEFAULT_MODEL, ImageEmbedder, ModelSource
from image_search.pictures import Filter, walk
from image_search.store import Store

WALLPAPERS = [Path("/usr/share/wallpapers"), Path("/usr/share/backgrounds")]


@pytest.mark.slow
async def test_measuring_a_library_once(tmp_path: Path) -> None:
    found = sorted(p for base in WALLPAPERS for p in base.rglob("*.jpg"))[:20]
    assert len(found) >= SAMPLE, "apt-get install the wallpaper packages"
    root = tmp_path / "Pictures"
    root.mkdir()
    for i, path in enumerate(found):
        shutil.copy(path, root / f"{i:02d}.jpg")
    source = ModelSource(DEFAULT_MODEL, random_weights=True)
    embedder = ImageEmbedder(source, "cpu").load()
    async with Store("mem://") as store:
        await store.check_model(source.model_id)
        files = [FileRef(p, str(root)) for p in walk(str(root), Filter())]
        async with Indexer(store, embedder, workers=2) as indexer:
            await indexer.index(files)
            start = time.perf_counter()
            measured = await measure_library(store, indexer)
            seconds = time.perf_counter() - start
    assert measured is not None and measured.copies == SAMPLE * len(COPIES)
    print(f"\n{DEFAULT_MODEL} ({embedder.precision}): {seconds:.1f} s for {measured}")
