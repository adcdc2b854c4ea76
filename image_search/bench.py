"""``image-search benchmark``: model, preprocessing and search measured on this machine.

The workloads here are shared with the pytest-benchmark suite in benchmarks/.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Row:
    name: str
    mean_ms: float
    median_ms: float
    stdev_ms: float
    rounds: int
    per_call: int = 1  # items per call: images, queries
    unit: str = "img/s"

    @property
    def rate(self) -> float:
        return self.per_call / (self.median_ms / 1000) if self.median_ms else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1)}


def measure(
    name: str,
    fn: Callable[[], Any],
    *,
    per_call: int = 1,
    unit: str = "img/s",
    rounds: int = 20,
    warmup: int = 2,
    sync: Callable[[], None] | None = None,
    budget_s: float = 20.0,
) -> Row:
    """Time ``fn`` after warm-up, for ``rounds`` calls or ``budget_s`` seconds, whichever comes first.
    A call that takes seconds (ViT-L/14 at batch 100 on a CPU) gets one warm-up and two rounds."""
    times: list[float] = []
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        if i == 0 and time.perf_counter() - start > budget_s / 10:
            break
    deadline = time.perf_counter() + budget_s
    while len(times) < rounds and (len(times) < 2 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000)
    return Row(
        name,
        statistics.fmean(times),
        statistics.median(times),
        statistics.stdev(times) if len(times) > 1 else 0.0,
        len(times),
        per_call,
        unit,
    )


def photo_jpeg(path: Path, size: tuple[int, int], seed: int = 0, quality: int = 90) -> Path:
    """A photo-like JPEG (smooth shapes plus sensor noise) of the given size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 255, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.int16) + rng.normal(0, 8, (h, w, 3)).astype(np.int16)
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path, quality=quality)
    return path


def _variant(args: tuple[str, int, tuple[int, int], int]) -> str:
    path, seed, size, quality = args
    from PIL import Image

    base = _base_image(size)
    rng = np.random.default_rng(seed)
    shifted = np.roll(base, (int(rng.integers(size[1])), int(rng.integers(size[0]))), axis=(0, 1))
    tint = rng.integers(-20, 20, 3).astype(np.int16)
    Image.fromarray(np.clip(shifted.astype(np.int16) + tint, 0, 255).astype(np.uint8)).save(
        path, quality=quality
    )
    return path


_BASES: dict[tuple[int, int], np.ndarray] = {}


def _base_image(size: tuple[int, int]) -> np.ndarray:
    if size not in _BASES:
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            _BASES[size] = np.asarray(Image.open(photo_jpeg(Path(tmp) / "base.jpg", size)).convert("RGB"))
    return _BASES[size]


def photo_jpegs(
    folder: Path, n: int, size: tuple[int, int], *, quality: int = 90, processes: int = 0
) -> list[Path]:
    """``n`` distinct photo-like JPEGs (each its own content hash), made in parallel."""
    import multiprocessing

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"IMG_{i:05d}.jpg"), i, size, quality) for i in range(n)]
    from .lifeline import die_with_parent

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["image_search._forkserver"])  # none outlives a kill -9
    with context.Pool(processes or os.cpu_count(), initializer=die_with_parent) as pool:
        return [Path(p) for p in pool.map(_variant, jobs, chunksize=8)]


def unit_vectors(n: int, d: int = 768, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: 1M x 768 is 3 GB
        block = rng.standard_normal((min(100_000, n - start), d), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def environment(embedder: Any, source: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": str(embedder.device),
        "dtype": embedder.precision,
        "weights": f"random ({source.spec}'s architecture, same shapes and FLOPs)"
        if source.random_weights
        else "real",
        "model": source.model_id,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }
    if embedder.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(embedder.device)
    return info


def run(
    source: Any,
    device: str = "auto",
    dtype: str = "auto",
    *,
    quick: bool = False,
    search_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000),
) -> dict[str, Any]:
    from .models.model import ImageEmbedder

    embedder = ImageEmbedder(source, device, dtype).load()
    rounds = 3 if quick else 20
    rows = [
        *_text_rows(source, rounds, ("auto",) if quick else ("float32", "int8", "bfloat16")),
        *_image_rows(embedder, rounds, (1, 10) if quick else (1, 10, 100)),
        *_preprocess_rows(embedder, rounds, ((1920, 1080),) if quick else ((1920, 1080), (3840, 2160))),
        *_search_rows(search_sizes[: 2 if quick else None], rounds),
    ]
    env = environment(embedder, source) | {"run": "quick" if quick else "full"}
    return {"environment": env, "results": [r.as_dict() for r in rows]}


QUICK = (
    "quick: one text query (the default precision), image batches of 1 and 10 and the best of 4 and "
    "16 (CPU), a 1080p JPEG's preprocessing, search over 10,000 and 100,000 vectors; 3 rounds each"
)


def _text_rows(source: Any, rounds: int, dtypes: tuple[str, ...]) -> list[Row]:
    from .models.model import TextEmbedder, cpu_has_bf16

    rows = []
    for text_dtype in dtypes:
        if text_dtype == "bfloat16" and not cpu_has_bf16():
            continue  # emulated: slower than float32, never chosen
        text = TextEmbedder(source, text_dtype).load()
        text_dtype = text.dtype
        query = "a dog running on the beach at sunset"
        rows.append(
            measure(
                f"text, one query, {text_dtype}, CPU",
                partial(text.embed_texts, [query]),
                per_call=1,
                unit="q/s",
                rounds=rounds * 2,
            )
        )
        del text
    return rows


def _image_rows(embedder: Any, rounds: int, sizes: tuple[int, ...]) -> list[Row]:
    """Batches of 1, 10 and 100, and the best batch size of a few."""
    import torch

    sync = torch.cuda.synchronize if embedder.device.type == "cuda" else None
    rng = np.random.default_rng(0)
    side = (embedder.crop.crop_height, embedder.crop.crop_width)  # the model's input: 224 to 384 px
    if embedder.crop.max_patches:  # NaFlex: a 4:3 picture's patches (the FLOPs do not see the values)
        crops = torch.from_numpy(embedder.blank(512))
    else:
        crops = torch.from_numpy(rng.integers(0, 255, (512, *side, 3), dtype=np.uint8))
    if embedder.device.type != "cpu":
        crops = crops.to(embedder.device)

    def batch(n: int, times: int) -> Row:
        return measure(
            f"image embedding, batch {n}",
            partial(embedder.embed_pixels, crops[:n]),
            per_call=n,
            rounds=times,
            sync=sync,
        )

    rows = [batch(n, rounds) for n in sizes]
    candidates = (4, 16) if embedder.device.type == "cpu" else (64, 128, 256, 512)
    best = max((batch(n, max(3, rounds // 2)) for n in candidates), key=lambda row: row.rate)
    best.name = best.name.replace("batch", "best batch")
    return [*rows, best]


def _preprocess_rows(embedder: Any, rounds: int, sizes: tuple[tuple[int, int], ...]) -> list[Row]:
    from .pictures.imaging import prepare

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in sizes:
            path = photo_jpeg(Path(tmp) / f"{w}x{h}.jpg", (w, h))
            rows.append(
                measure(
                    f"preprocess {w}x{h} JPEG (decode, resize, crop), one core",
                    partial(prepare, str(path), embedder.crop, 1000),
                    rounds=rounds * 2,
                )
            )
    return rows


def _search_rows(sizes: tuple[int, ...], rounds: int) -> list[Row]:
    from .search.vectors import VectorIndex

    rows = []
    for n in sizes:
        index = VectorIndex.build([str(i) for i in range(n)], unit_vectors(n))
        q = unit_vectors(1, seed=1)[0]
        index.search(q, 1)  # a big index's first search starts making its codes, on a thread
        index.settle()
        rows.append(
            measure(
                f"search top-100 over {n:,} vectors", partial(index.search, q, 100), unit="q/s", rounds=rounds
            )
        )
        del index
    return rows


def table(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"{k}: {v}" for k, v in env.items()]
    lines.append("")
    header = f"{'benchmark':<58} {'mean ms':>10} {'median ms':>10} {'std dev':>9} {'rate':>14}"
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        lines.append(
            f"{r['name']:<58} {r['mean_ms']:>10.3f} {r['median_ms']:>10.3f} {r['stdev_ms']:>9.3f} "
            f"{r['rate']:>9.1f} {r['unit']}"
        )
    return "\n".join(lines)
