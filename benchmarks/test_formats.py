"""What one decoding worker does per photo, by format: prepare() (hash, decode, fingerprint, the
model's crop, no thumbnail) of a 12 MP photo-like picture (4000x3000), one core. Reported in the
README's "What is indexed"; no floor yet for HEIC (#17 asks for one once its embedded rendition
is used)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_search.imaging import CropSpec, configure_pillow, prepare

SIZE = (4000, 3000)
SAVE = {
    "jpeg": {"quality": 90},
    "png": {},
    "webp": {"quality": 90},
    "avif": {"quality": 80, "speed": 8},
    "heic": {"quality": 90},
    "tif": {"compression": "tiff_deflate"},
}


def photo(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w, h = SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 200, y / h * 180, (x + y) / (w + h) * 160], axis=-1)
    noise = rng.normal(0, 12, (h // 4, w // 4, 3)).repeat(4, 0).repeat(4, 1)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, **SAVE[path.suffix[1:]])
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
