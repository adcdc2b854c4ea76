"""Image embedding (one image, 10, 100, the best batch), preprocessing of real-size JPEGs with the
correct CLIP preprocessing (decode included), and top-100 search over 10k, 100k and 1M vectors.
The same workloads as `image-search benchmark`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from image_search.bench import photo_jpeg, unit_vectors
from image_search.models.model import ImageEmbedder, ModelSource
from image_search.pictures.imaging import prepare
from image_search.search.vectors import VectorIndex


@pytest.fixture(scope="module")
def embedder(vit_l14: ModelSource) -> ImageEmbedder:
    return ImageEmbedder(vit_l14, "auto").load()


def crops(n: int, device: torch.device) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)).to(device)


def _run(embedder: ImageEmbedder, pixels: torch.Tensor) -> None:
    embedder.embed_pixels(pixels)
    if embedder.device.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("n", [1, 10, pytest.param(100, marks=pytest.mark.slow)])
def test_image_embedding(benchmark, embedder: ImageEmbedder, vit_l14: ModelSource, n: int) -> None:
    pixels = crops(n, embedder.device)
    rounds = 3 if embedder.device.type == "cpu" else 20
    benchmark.pedantic(_run, args=(embedder, pixels), rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(
        img_per_s=round(n / benchmark.stats.stats.median, 1),
        device=str(embedder.device),
        weights="random" if vit_l14.random_weights else "real",
    )


@pytest.mark.slow
def test_best_batch(benchmark, embedder: ImageEmbedder) -> None:
    """The batch size with the highest img/s on this device, then timed properly."""
    sizes = (4, 16) if embedder.device.type == "cpu" else (64, 128, 256, 512)
    rates = {}
    for n in sizes:
        pixels = crops(n, embedder.device)
        _run(embedder, pixels)  # warm-up
        start = time.perf_counter()
        _run(embedder, pixels)
        rates[n] = n / (time.perf_counter() - start)
    best = max(rates, key=lambda n: rates[n])
    benchmark.pedantic(_run, args=(embedder, crops(best, embedder.device)), rounds=3, iterations=1)
    benchmark.extra_info.update(
        best_batch=best,
        img_per_s=round(best / benchmark.stats.stats.median, 1),
        rates={k: round(v, 1) for k, v in rates.items()},
    )


@pytest.mark.parametrize("size", [(1920, 1080), (3840, 2160)], ids=["1080p", "2160p"])
def test_preprocess_jpeg(benchmark, bench_tmp: Path, embedder: ImageEmbedder, size: tuple[int, int]) -> None:
    path = photo_jpeg(bench_tmp / f"pre-{size[0]}.jpg", size)
    prepared = benchmark(prepare, str(path), embedder.crop, 1000)
    assert prepared.error is None and prepared.pixels.shape == (224, 224, 3)


@pytest.mark.parametrize("n", [10_000, 100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_search_top_100(benchmark, n: int) -> None:
    index = VectorIndex.build([str(i) for i in range(n)], unit_vectors(n))
    query = unit_vectors(1, seed=1)[0]
    hits = benchmark(index.search, query, 100)
    assert len(hits) == 100 and hits[0][1] >= hits[-1][1]
