"""#19: indexing 12 MP JPEGs with one GPU and with every GPU of the host, in one run.

Floors (the 2-GPU kind of the device tool, 2x H200, 32 cores): every GPU's steady rate at least
the one GPU's (5% for run-to-run noise), the one GPU's at least 90% of what the decoders give
together in the same run, and no run more than 2 s slower than its files at the steady rate.
Run: `pytest benchmarks/test_gpus.py -m gpu -s` (or `scripts/gpu-session gpus`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from image_search.bench import photo_jpegs
from image_search.models.model import ImageEmbedder, ModelSource

from .multigpu import decoders_together, one_and_all


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_index_12mp_one_gpu_and_every_gpu(benchmark, bench_tmp: Path, vit_l14: ModelSource) -> None:
    embedders = [
        ImageEmbedder(vit_l14, f"cuda:{i}", "float16").load() for i in range(torch.cuda.device_count())
    ]
    files = photo_jpegs(bench_tmp / "12mp-gpus", 3000, (4000, 3000))
    decoders = decoders_together(files[:1500], torch.device("cuda:0"))
    runs = benchmark.pedantic(lambda: one_and_all(files, bench_tmp, embedders), rounds=1, iterations=1)
    one = statistics.median(r["steady_img_s"] for r in runs["one"])
    every = statistics.median(r["steady_img_s"] for r in runs["all"])
    benchmark.extra_info.update(
        gpus=len(embedders),
        gpu=torch.cuda.get_device_name(),
        decoders=decoders,
        one=runs["one"],
        all=runs["all"],
    )
    assert every >= 0.95 * one, (every, one)
    assert one >= 0.9 * decoders["together_img_s"], (one, decoders)
    assert max(r["lag_s"] for r in runs["one"] + runs["all"]) <= 2.0, runs
