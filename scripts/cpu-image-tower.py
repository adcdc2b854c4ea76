"""The default model's image tower on this machine's CPUs (run it under taskset with two): img/s
in float32, int8 and bfloat16, and each one's cosine to float32 on real photos. Random weights
with SigLIP 2 B/16's shapes (no weights reach these machines).

    OMP_NUM_THREADS=2 taskset -c 0,1 python scripts/cpu-image-tower.py PHOTO_FOLDER [DTYPE ...]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from image_search.models.model import DEFAULT_MODEL, ImageEmbedder, ModelSource, cpu_has_bf16
from image_search.pictures.imaging import prepare


def main() -> None:
    folder, dtypes = Path(sys.argv[1]), sys.argv[2:] or ["float32", "int8", "bfloat16"]
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    flags = open("/proc/cpuinfo").read()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    print(f"CPUs {sorted(os.sched_getaffinity(0))}, {', '.join(isa)}; bfloat16 native: {cpu_has_bf16()}")
    source = ModelSource(DEFAULT_MODEL, random_weights=True)
    embedders = {d: ImageEmbedder(source, "cpu", d).load() for d in dtypes}
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:16]
    crop = next(iter(embedders.values())).crop
    pixels = np.stack([prepare(str(p), crop, 1000).pixels for p in photos])
    vectors = {}
    for name, embedder in embedders.items():
        embedder.embed_pixels(pixels[:2])
        times = []
        for _ in range(3):
            start = time.perf_counter()
            vectors[name] = embedder.embed_pixels(pixels)
            times.append(time.perf_counter() - start)
        print(f"{name} ({embedder.precision}): {len(pixels) / min(times):.2f} img/s", flush=True)
    if "float32" in vectors:
        for name, v in vectors.items():
            cosine = (v * vectors["float32"]).sum(1).min()
            print(f"{name}: cosine to float32 on {len(pixels)} photos, min {cosine:.5f}")


if __name__ == "__main__":
    main()
