"""End-to-end indexing: JPEG files on disk → committed rows in surrealkv://, img/s.

2-core floor: ≥ 65 img/s with the tiny model from 2560x1600 JPEGs (the pipeline's own overhead;
decode and preprocessing measured 22 ms per core, so ~90 img/s is the bound). ViT-L/14 on the CPU
is reported. GPU floors (one H100, 16 cores): ViT-L/14 forward ≥ 2,700 img/s at batch 256, and
≥ 700 img/s end to end from 12 MP JPEGs, with nvJPEG beside the CPU workers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch

from image_search.bench import photo_jpegs
from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, ModelSource
from image_search.pictures.thumbs import Thumbnails
from image_search.store import Store
from image_search.testing import build_tiny_clip


def index_folder(files: list[Path], db: Path, embedders: list[ImageEmbedder], **options: object) -> float:
    """Seconds to index these files into a fresh surrealkv database (model already loaded)."""

    async def main() -> float:
        async with Store(f"surrealkv://{db}") as store:
            await store.check_model(embedders[0].source.model_id)
            async with Indexer(store, embedders, **options) as indexer:  # type: ignore[arg-type]
                start = time.perf_counter()
                summary = await indexer.index([FileRef(str(f), str(f.parent)) for f in files])
                elapsed = time.perf_counter() - start
            assert summary.indexed == len(files) and not summary.failed
            return elapsed

    return asyncio.run(main())


def test_index_tiny_model_2_cores(benchmark, bench_tmp: Path) -> None:
    files = photo_jpegs(bench_tmp / "wall", 300, (2560, 1600), processes=2)
    model = build_tiny_clip(bench_tmp / "tiny")
    embedder = ImageEmbedder(ModelSource(str(model)), "cpu").load()
    runs = iter(range(100))
    seconds = benchmark.pedantic(
        lambda: index_folder(files, bench_tmp / f"db-tiny-{next(runs)}", [embedder]), rounds=3, iterations=1
    )
    rate = len(files) / benchmark.stats.stats.median
    benchmark.extra_info.update(images=len(files), img_per_s=round(rate, 1), floor=65, size="2560x1600")
    del seconds
    assert rate >= 65, f"{rate:.1f} img/s"


@pytest.mark.slow
def test_index_vit_l14_cpu(benchmark, bench_tmp: Path, vit_l14: ModelSource) -> None:
    files = photo_jpegs(bench_tmp / "wall-l", 48, (2560, 1600), processes=2)
    embedder = ImageEmbedder(vit_l14, "cpu").load()
    runs = iter(range(100))
    benchmark.pedantic(
        lambda: index_folder(files, bench_tmp / f"db-l14-{next(runs)}", [embedder]), rounds=1, iterations=1
    )
    rate = len(files) / benchmark.stats.stats.median
    benchmark.extra_info.update(
        images=len(files), img_per_s=round(rate, 2), weights="random" if vit_l14.random_weights else "real"
    )


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("compiled", [False, True])
def test_vit_l14_forward_gpu(benchmark, vit_l14: ModelSource, compiled: bool) -> None:
    embedder = ImageEmbedder(vit_l14, "cuda", "float16", compile=compiled).load()
    pixels = torch.randint(0, 255, (256, 224, 224, 3), dtype=torch.uint8, device="cuda")
    for _ in range(3):
        embedder.embed_pixels(pixels)
    torch.cuda.synchronize()

    def forward() -> None:
        embedder.embed_pixels(pixels)
        torch.cuda.synchronize()

    benchmark.pedantic(forward, rounds=20, iterations=1)
    rate = 256 / benchmark.stats.stats.median
    benchmark.extra_info.update(
        img_per_s=round(rate), batch=256, compiled=compiled, gpu=torch.cuda.get_device_name()
    )
    assert rate >= 2700 or not compiled, f"{rate:.0f} img/s"


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    ("gpu_decode", "thumbnails"), [("off", False), ("on", False), ("off", True), ("on", True)]
)
def test_index_12mp_gpu(
    benchmark, bench_tmp: Path, vit_l14: ModelSource, gpu_decode: str, thumbnails: bool
) -> None:
    """With ``thumbnails`` the grid thumbnails are made while indexing, as the daemon does."""
    files = photo_jpegs(bench_tmp / "12mp", 2000, (4000, 3000))
    embedder = ImageEmbedder(vit_l14, "cuda", "float16").load()
    embedder.warm(256)
    runs = iter(range(100))

    def cache() -> Thumbnails | None:
        return Thumbnails(bench_tmp / f"thumbs-{gpu_decode}-{next(runs)}") if thumbnails else None

    benchmark.pedantic(
        lambda: index_folder(
            files,
            bench_tmp / f"db-12mp-{gpu_decode}-{thumbnails}-{next(runs)}",
            [embedder],
            batch_size=256,
            gpu_decode=gpu_decode,
            thumbnails=cache(),
        ),
        rounds=2,
        iterations=1,
    )
    rate = len(files) / benchmark.stats.stats.median
    benchmark.extra_info.update(
        images=len(files),
        img_per_s=round(rate),
        gpu_decode=gpu_decode,
        thumbnails=thumbnails,
        gpu=torch.cuda.get_device_name(),
    )
    if gpu_decode == "on":
        assert rate >= 700, f"{rate:.0f} img/s"
