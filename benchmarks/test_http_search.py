"""HTTP search at 100k images, text embedding included (ViT-L/14 text tower, int8, CPU).

Floors on the 2-core machine: ≤ 30 ms p50 for one client; ≥ 50 distinct queries/s with p99 ≤ 200 ms
under concurrent clients. Every query is distinct (the LRU cache never answers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from image_search.config import load_config
from image_search.models.model import ModelSource, TextEmbedder
from image_search.store import Store
from image_search.testing import library_rows
from image_search.webui import create_app

from .conftest import unit_vectors

N = 100_000
WORDS = (
    "beach sunset dog cat mountain city night snow forest portrait children birthday car red blue "
    "old street food wedding lake river boat bridge flowers garden sky clouds rain autumn"
).split()


def queries():
    """Distinct short queries (~10 tokens, like "a photo of beach and dog with snow")."""
    for n in itertools.count():
        a, b, c = (
            WORDS[n % len(WORDS)],
            WORDS[(n // len(WORDS)) % len(WORDS)],
            WORDS[(n // 29 // 29) % len(WORDS)],
        )
        yield f"a photo of {a} and {b} with {c}"


async def fill(store: Store, model_id: str) -> None:
    await store.check_model(model_id)
    vectors = unit_vectors(N, 768, seed=1)
    for start in range(0, N, 2000):
        await store.write(library_rows(start, vectors[start : start + 2000], "/photos", model_id))


def measure(tmp_path: Path, source: ModelSource, dtype: str, loads: bool = True) -> dict[str, float]:
    """One client's p50/p90 over 100 distinct queries; then 4 and 8 clients for 10 s each. The
    server runs in a process of its own, as ``image-search serve`` does: its text tower loads on
    the app's compute thread, and no other thread of it has run torch (in this process, earlier
    benchmarks have: the tower's OpenMP team would spin less, webui/app.py ``_compute_ctx``). The
    text tower is compiled as the server's default (``text_compile`` auto) would, and measured
    once that is done; ``report["compiled"]`` is 1 where it was."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_measure, tmp_path, source.spec, source.random_weights, dtype, loads).result()


async def compiled(http: ClientSession, port: int) -> bool:
    """Wait while the server compiles its text tower; whether it ended compiled."""
    while True:
        async with http.get(f"http://127.0.0.1:{port}/api/status") as response:
            state = (await response.json())["text_compile"]
        if state not in ("pending", "compiling"):
            return state == "compiled"
        await asyncio.sleep(0.5)


def _measure(tmp_path: Path, spec: str, random_weights: bool, dtype: str, loads: bool) -> dict[str, float]:
    source = ModelSource(spec, random_weights=random_weights)
    report: dict[str, float] = {}

    async def main() -> None:
        async with Store("mem://") as store:
            await fill(store, source.model_id)
            config = load_config({"database_url": "mem://", "cache_dir": str(tmp_path)})
            text = TextEmbedder(source, dtype, compile=config.text_compile)
            app = create_app(config, store=store, text_embedder=text)
            async with TestServer(app, host="127.0.0.1") as server, ClientSession() as http:
                url = f"http://127.0.0.1:{server.port}/api/search"
                texts = queries()

                async def one() -> float:
                    started = time.perf_counter()
                    async with http.post(url, json={"text": next(texts), "limit": 60}) as response:
                        assert response.status == 200
                        body = await response.json()
                        assert len(body["results"]) == 60
                    return time.perf_counter() - started

                # The first query the moment the server listens, whatever compiles behind it.
                report["first_query_ms"] = await one() * 1000
                report["compiled"] = float(await compiled(http, server.port))

                for _ in range(5):
                    await one()
                single = [await one() for _ in range(100)]
                report["p50_ms"] = statistics.median(single) * 1000
                report["p90_ms"] = float(np.percentile(single, 90)) * 1000

                async def client(until: float, out: list[float]) -> None:
                    while time.perf_counter() < until:
                        out.append(await one())

                for clients in (4, 8) if loads else ():
                    latencies: list[float] = []
                    start = time.perf_counter()
                    await asyncio.gather(*(client(start + 10, latencies) for _ in range(clients)))
                    elapsed = time.perf_counter() - start
                    report[f"qps_{clients}_clients"] = len(latencies) / elapsed
                    report[f"p99_ms_{clients}_clients"] = float(np.percentile(latencies, 99)) * 1000

    asyncio.run(main())
    return report


def test_http_search_100k(benchmark, tmp_path: Path, vit_l14: ModelSource) -> None:
    run = lambda: measure(tmp_path, vit_l14, "int8")  # noqa: E731
    report = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {k: round(v, 1) for k, v in report.items()},
        weights="random" if vit_l14.random_weights else "real",
        images=N,
    )
    print("\n" + ", ".join(f"{k} {v:.1f}" for k, v in report.items()))
    assert report["p50_ms"] <= 30
    assert report["qps_8_clients"] >= 50 and report["p99_ms_8_clients"] <= 200


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_http_search_100k_siglip2(benchmark, tmp_path: Path, dtype: str) -> None:
    """SigLIP 2 B/16 (random weights, its real shapes and Gemma tokenizer; text padded to 64
    positions). Floor (#15): p50 <= 50 ms on 2 cores where bfloat16 is native (AVX512-BF16 or
    AMX); elsewhere measured and reported. Run there with scripts/gpu-session cpu."""
    import os

    from image_search.models.model import cpu_has_bf16

    source = ModelSource("google/siglip2-base-patch16-224", random_weights=True)
    run = lambda: measure(tmp_path, source, dtype, loads=False)  # noqa: E731
    report = benchmark.pedantic(run, rounds=1, iterations=1)
    native, two = cpu_has_bf16(), len(os.sched_getaffinity(0)) == 2
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("ATEN_CPU_CAPABILITY") or "all it has"
    benchmark.extra_info.update(
        {k: round(v, 1) for k, v in report.items()}, text=dtype, bf16_native=native, isa=isa
    )
    figures = ", ".join(f"{k} {v:.1f}" for k, v in report.items())
    print(f"\nsiglip2-b16 {dtype}: {figures}, bf16 native {native}, instructions: {isa}")
    assert report["first_query_ms"] <= 2000, report
    if two:  # #35's floors: 50 ms where bfloat16 is native, 80 ms on AVX2
        assert report["p50_ms"] <= (50 if native and isa == "all it has" else 80), report
