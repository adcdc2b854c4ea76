"""Which variant of the ViT-L/14 forward is fastest on this GPU, and how fast each JPEG decoder
is on 12 MP photos: run once per GPU kind to choose defaults (scripts/gpu-session probe)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from image_search.bench import photo_jpegs
from image_search.imaging import CropSpec, prepare
from image_search.model import ImageEmbedder, ModelSource

warnings.simplefilter("ignore")


def timed(fn, n: int = 10) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def forward() -> None:
    source = ModelSource(random_weights=True)
    for batch in (256, 512):
        pixels = torch.randint(0, 255, (batch, 224, 224, 3), dtype=torch.uint8, device="cuda")
        for dtype in ("float16", "bfloat16"):
            e = ImageEmbedder(source, "cuda", dtype).load()
            print(
                f"eager {dtype} b{batch}: {batch / timed(lambda e=e, x=pixels: e.embed_pixels(x)):.0f} img/s",
                flush=True,
            )
            del e
        for mode in ("default", "max-autotune-no-cudagraphs", "reduce-overhead"):
            e = ImageEmbedder(source, "cuda", "float16").load()
            e.model = torch.compile(e.model, mode=mode)
            start = time.perf_counter()
            e.embed_pixels(pixels)
            warm = time.perf_counter() - start
            rate = batch / timed(lambda e=e, x=pixels: e.embed_pixels(x))
            print(f"compile {mode} fp16 b{batch}: {rate:.0f} img/s (first call {warm:.0f} s)", flush=True)
            del e
            torch._dynamo.reset()


def decoders() -> None:
    from concurrent.futures import ProcessPoolExecutor

    from image_search.gpudecode import decode_batch

    with tempfile.TemporaryDirectory() as tmp:
        files = photo_jpegs(Path(tmp), 256, (4000, 3000))
        data = [f.read_bytes() for f in files]
        spec = CropSpec()
        for n in (32, 64, 128):
            rate = n / timed(lambda n=n: decode_batch(data[:n], [1] * n, spec, torch.device("cuda")), 3)
            print(f"nvJPEG batch {n}, 12 MP: {rate:.0f} img/s", flush=True)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(prepare, map(str, files[:32]), [spec] * 32, [100] * 32))
            start = time.perf_counter()
            list(pool.map(prepare, map(str, files), [spec] * len(files), [100] * len(files), chunksize=4))
            rate = len(files) / (time.perf_counter() - start)
            print(f"Pillow draft, {os.cpu_count()} processes, 12 MP: {rate:.0f} img/s")


if __name__ == "__main__":
    {"forward": forward, "decoders": decoders}[sys.argv[1]]()
