"""HTTP search at 100k photos in the container, as people run it: a library of the default model
(random weights, its real shapes) written beside it, then `image-search web` in the image
(podman), timed from this machine: when it listens, the first query, then 100 distinct queries.

    CONTAINERS_CONF=... python scripts/container-search.py [IMAGE] [-e NAME=VALUE ...]

IMAGE defaults to localhost/image-search:test (tests/test_container.py builds it); each -e goes to
`podman run` (ONEDNN_MAX_CPU_ISA=AVX2 and ATEN_CPU_CAPABILITY=avx2 hold it to AVX2). Needs root
(the data folder is handed to the container's uid 1000).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.conftest import unit_vectors
from benchmarks.test_http_search import queries
from image_search.models.model import DEFAULT_MODEL, ModelSource
from image_search.store import Store
from image_search.testing import library_rows

N = 100_000


async def fill(folder: Path) -> None:
    source = ModelSource(DEFAULT_MODEL, random_weights=True)
    async with Store(f"surrealkv://{folder / 'db'}") as store:
        await store.check_model(source.identity())
        vectors = unit_vectors(N, 768, seed=1)
        for start in range(0, N, 2000):
            await store.write(library_rows(start, vectors[start : start + 2000], "/photos", source.model_id))
        await store.settle()


def measure(port: int, token: str, started: float) -> str:
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(base + "/api/health", timeout=2).read()
            break
        except OSError:
            if time.monotonic() - started > 600:
                raise SystemExit("the container never listened") from None
            time.sleep(0.05)
    listening = time.monotonic() - started
    texts = queries()

    def one() -> float:
        body = json.dumps({"text": next(texts), "limit": 60}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        request = urllib.request.Request(base + "/api/search", data=body, headers=headers)
        begin = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.load(response)["results"]) == 60
        return time.perf_counter() - begin

    first = one()
    for _ in range(5):
        one()
    times = sorted(one() for _ in range(100))
    return (
        f"listening {listening:.1f} s after the start; first query {first * 1000:.1f} ms; "
        f"p50 {statistics.median(times) * 1000:.1f} ms, p90 {times[89] * 1000:.1f} ms"
    )


def main() -> None:
    args = sys.argv[1:]
    image = args.pop(0) if args and not args[0].startswith("-") else "localhost/image-search:test"
    podman = ["podman", "--runtime", "runc"]
    folder = Path(tempfile.mkdtemp(prefix="container-search-"))
    name, port, token = f"search-{os.getpid()}", 3907, secrets.token_hex(16)
    try:
        asyncio.run(fill(folder))
        shutil.chown(folder, 1000, 1000)
        for path in folder.rglob("*"):
            shutil.chown(path, 1000, 1000)
        started = time.monotonic()
        env = [f"-e=IMAGE_SEARCH_PORT={port}", f"-e=IMAGE_SEARCH_TOKEN={token}"]
        run = [*podman, "run", "-d", "--name", name, "--network=host", *env, *args, f"-v={folder}:/data"]
        subprocess.run([*run, image, "web"], check=True, capture_output=True)
        print(f"{image} {' '.join(args)}: {measure(port, token, started)}")
    finally:
        subprocess.run([*podman, "rm", "-f", name], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
