"""Benchmarks: pytest-benchmark, run with `scripts/dev bench` (see docs/benchmarks.md).

Where the real weights are absent, the ViT-L/14 architecture is built with random weights
from the config shipped in the package (same shapes and FLOPs); each benchmark says which in
its extra_info.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from image_search.config import load_config
from image_search.models.model import ModelSource, TextEmbedder
from image_search.store import Store
from image_search.testing import build_tiny_clip
from image_search.webui import create_app


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running benchmark")
    config.addinivalue_line("markers", "gpu: needs a GPU")


@pytest.fixture(scope="session")
def vit_l14() -> ModelSource:
    """The real ViT-L/14 when cached locally (HF cache), else its architecture with random weights."""
    from huggingface_hub import try_to_load_from_cache

    from image_search.models.model import DEFAULT_MODEL

    cached = try_to_load_from_cache(DEFAULT_MODEL, "config.json")  # the local cache only, no network
    return ModelSource(DEFAULT_MODEL) if isinstance(cached, str) else ModelSource(random_weights=True)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def unit_vectors(n: int, d: int = 768, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def bench_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@contextlib.asynccontextmanager
async def tiny_server(
    tmp_path: Path, fill: Callable[[Store, str], Awaitable[None]] | None = None
) -> AsyncIterator[TestServer]:
    """The web app over an in-memory store with the tests' tiny model (int8 text), for benchmarks
    that measure the server's protection rather than a model; ``fill(store, model_id)`` first."""
    model = build_tiny_clip(tmp_path / "tiny")
    source = ModelSource(str(model))
    async with Store("mem://") as store:
        await store.check_model(source.model_id)
        if fill is not None:
            await fill(store, source.model_id)
        config = load_config({"database_url": "mem://", "cache_dir": str(tmp_path), "model": str(model)})
        app = create_app(config, store=store, text_embedder=TextEmbedder(source, "int8").load())
        async with TestServer(app, host="127.0.0.1") as server:
            yield server
