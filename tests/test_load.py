"""Load: searches at a steady 50/s against 100k indexed images while the same `image-search serve`
process indexes new photos dropped into its folder. Zero errors; p50/p99 and resident memory
before and after are printed for docs/reliability.md.

Short in CI (15 s, 500 new photos); ``-m slow`` runs the full one (60 s, 2,000 new photos)."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession, ClientTimeout

from image_search.models.model import ModelSource
from image_search.store import Store
from image_search.testing import build_tiny_clip, library_rows

from .conftest import free_port, make_photo

LIBRARY = 100_000
RATE = 50  # searches per second, open loop: a slow answer does not slow the next request
# Latency floors of the full run (ms): p50, p99 while indexing (measured 11.5 and 163.5 ms on an
# AVX-512 2-core machine, docs/reliability.md).
FLOORS_MS = (20.0, 200.0)
WORDS = "beach sunset dog cat mountain city night snow forest portrait lake river boat sky".split()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def fill(url: str, model_id: str, root: Path) -> None:
    """100k rows of 768-d embeddings (the real model's size) under ``root``, in the real schema."""
    rng = np.random.default_rng(7)
    async with Store(url) as store:
        await store.check_model(model_id)
        for start in range(0, LIBRARY, 2000):
            block = rng.standard_normal((2000, 768), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            await store.write(library_rows(start, block, str(root), model_id))


@pytest.mark.parametrize(
    ("seconds", "new_photos", "floors"),
    [
        # CI's 2-core machines: errors, rate and memory only (their latency is the machine's).
        pytest.param(15, 500, None, id="short"),
        # The benchmark: docs/reliability.md quotes its latency, so it holds it to floors.
        pytest.param(60, 2000, FLOORS_MS, id="full", marks=pytest.mark.slow),
    ],
)
def test_searches_while_indexing(
    seconds: int, new_photos: int, floors: tuple[float, float] | None, cli_env: dict[str, str], tmp_path: Path
) -> None:
    model = build_tiny_clip(tmp_path / "clip-768", projection_dim=768)
    root = tmp_path / "Pictures"
    root.mkdir()
    # The 100k rows belong to a folder this process does not watch (their files are not on disk),
    # so they stay searchable and the reconcile leaves them alone.
    db = Path(cli_env["XDG_DATA_HOME"]) / "image-search" / "db"
    asyncio.run(fill(f"surrealkv://{db}", ModelSource(str(model)).model_id, tmp_path / "archive"))
    staging = tmp_path / "staging"
    drops = [make_photo(staging / f"{i:05d}.jpg", (480, 360), seed=i) for i in range(new_photos)]
    env = dict(
        cli_env, IMAGE_SEARCH_MODEL=str(model), IMAGE_SEARCH_PORT=str(free_port()), IMAGE_SEARCH_SETTLE="1"
    )
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "image_search", "serve", str(root)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{env['IMAGE_SEARCH_PORT']}"
        report = asyncio.run(_load(base, proc, root, drops, seconds, tmp_path / "serve.log"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            proc.kill()
            log.close()
    print(
        f"\nload: {report['requests']} searches in {seconds} s ({report['rate']:.1f}/s) against "
        f"{LIBRARY:,} images while indexing {report['indexed']} new photos; errors {report['errors']}; "
        f"p50 {report['p50']:.1f} ms, p99 {report['p99']:.1f} ms; RSS {report['rss_before']:.0f} -> "
        f"{report['rss_after']:.0f} MiB (after a second run {report['rss_again']:.0f} MiB); slowest "
        + ", ".join(f"{lat * 1000:.0f} ms at {at:.1f} s" for lat, at in report["slowest"])
    )
    assert report["errors"] == 0, report["error_samples"]
    if floors is not None:  # a rate is a benchmark's floor: on a busy 2-core machine the client lags
        assert report["rate"] >= RATE * 0.95
    assert report["indexed"] > 0, "nothing was indexed during the load: the test proves nothing"
    # Bounded: a second run of the same load adds little (caches and arenas are full by then).
    assert report["rss_again"] - report["rss_after"] < 0.1 * report["rss_after"] + 50
    if floors is not None:
        p50, p99 = floors
        assert report["p50"] <= p50 and report["p99"] <= p99, (
            f"p50 {report['p50']:.1f} ms, p99 {report['p99']:.1f} ms; floors {p50} ms, {p99} ms"
        )


async def _load(
    base: str, proc: subprocess.Popen[bytes], root: Path, drops: list[Path], seconds: int, log: Path
) -> dict:
    async with ClientSession(timeout=ClientTimeout(total=30)) as http:
        deadline = time.monotonic() + 180
        while True:  # until the model is warm, the 100k are loaded and the first reconcile is done
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                async with http.get(f"{base}/api/status") as r:
                    status = await r.json()
                    if r.status == 200 and status["daemon"].get("last_reconcile"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.5)
        assert status["searchable"] == LIBRARY, status
        rss_before = rss_mib(proc.pid)
        texts = (
            f"a photo of {a} and {b} at {n}"
            for n, (a, b) in enumerate(itertools.cycle(itertools.product(WORDS, WORDS)))
        )
        latencies: list[float] = []
        slowest: list[tuple[float, float]] = []  # (latency, seconds into the run)
        errors: list[str] = []
        began = time.monotonic()

        async def one() -> None:
            started = time.perf_counter()
            try:
                async with http.post(f"{base}/api/search", json={"text": next(texts), "limit": 60}) as r:
                    body = await r.json()
                    if r.status != 200 or len(body["results"]) != 60:
                        errors.append(f"{r.status}: {str(body)[:200]}")
            except Exception as exc:  # a refused or dropped connection is an error too
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - started)
            slowest.append((latencies[-1], time.monotonic() - began))

        async def run(moving: list[Path]) -> float:
            for path in moving:  # dropped at once, as a camera import does
                shutil.move(path, root / path.name)
            tasks = []
            start = time.monotonic()
            for i in range(seconds * RATE):
                await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
            return time.monotonic() - start

        half = len(drops) // 2
        elapsed = await run(drops[:half])
        async with http.get(f"{base}/api/status") as r:
            indexed = (await r.json())["searchable"] - LIBRARY
        rss_after = rss_mib(proc.pid)
        first = list(latencies)
        await run(drops[half:])
        rss_again = rss_mib(proc.pid)
    return {
        "requests": len(first),
        "rate": len(first) / elapsed,
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50": statistics.median(first) * 1000,
        "p99": float(np.percentile(first, 99)) * 1000,
        "indexed": indexed,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_again": rss_again,
        "slowest": sorted(slowest, reverse=True)[:8],
    }
