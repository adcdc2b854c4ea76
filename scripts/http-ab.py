"""One client's HTTP search at 100k photos against a given tree's web app, its server set up as
``image-search serve`` sets it up (the main thread runs no torch; the text tower is loaded on a
thread that ends). For A/B runs of two commits on one host in one session:

    python scripts/http-ab.py TREE [MODEL_ID DTYPE]   (TREE holds image_search/ and webui/)
    TEXT_COMPILE=auto python scripts/http-ab.py ...    (the text tower compiled before timing)

TREE goes first on sys.path; ``webui`` is imported from it by its own name, so an editable
install of another tree does not answer for it. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time

TREE = os.path.abspath(sys.argv[1])
sys.path.insert(0, TREE)

import numpy as np  # noqa: E402
from aiohttp import ClientSession  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

import image_search  # noqa: E402
from image_search.config import load_config  # noqa: E402
from image_search.models.checkpoint import ModelSource  # noqa: E402
from image_search.models.model import TextEmbedder  # noqa: E402
from image_search.store import Store  # noqa: E402
from image_search.testing import library_rows  # noqa: E402
from webui import create_app  # noqa: E402

N = 100_000
MODEL = sys.argv[2] if len(sys.argv) > 2 else "google/siglip2-base-patch16-224"
DTYPE = sys.argv[3] if len(sys.argv) > 3 else "bfloat16"


# auto, on or off: the text tower compiled before timing (trees that have text_compile)
COMPILE = os.environ.get("TEXT_COMPILE")


def loaded_elsewhere(source: ModelSource) -> TextEmbedder:
    out: list[TextEmbedder] = []
    options = {"compile": COMPILE} if COMPILE else {}

    def load() -> None:
        text = TextEmbedder(source, DTYPE, **options).load()
        if COMPILE:  # as the server does it: on a thread that ends
            text.compile_now()
        out.append(text)

    thread = threading.Thread(target=load)
    thread.start()
    thread.join()
    return out[0]


async def main() -> dict[str, object]:
    assert image_search.__file__.startswith(TREE), image_search.__file__
    source = ModelSource(MODEL, random_weights=True)
    text = loaded_elsewhere(source)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((N, text.dim), dtype=np.float32)
    vectors /= np.sqrt((vectors * vectors).sum(axis=1, keepdims=True))
    async with Store("mem://") as store:
        await store.check_model(source.model_id)
        for start in range(0, N, 2000):
            await store.write(library_rows(start, vectors[start : start + 2000], "/photos", source.model_id))
        config = load_config({"database_url": "mem://", "cache_dir": tempfile.mkdtemp()})
        app = create_app(config, store=store, text_embedder=text)
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/api/search"
            times = []
            for i in range(105):
                started = time.perf_counter()
                async with http.post(url, json={"text": f"a photo of a dog number {i}", "limit": 60}) as r:
                    assert r.status == 200 and len((await r.json())["results"]) == 60
                times.append(time.perf_counter() - started)
    times = times[5:]
    return {
        "tree": TREE,
        "model": MODEL,
        "dtype": DTYPE,
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p90_ms": round(float(np.percentile(times, 90)) * 1000, 1),
        "text_compile": getattr(text, "compile_state", None),
    }


print(json.dumps(asyncio.run(main())), flush=True)
