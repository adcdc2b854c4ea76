"""The server's text tower compiled for single queries (``text_compile``, #15): equal to the eager
tower, compiled once (no second compile on the thread that answers queries), only where it can
pay (fixed-length SigLIP text, bfloat16 under auto, never int8 or CLIP), eager again when
compiling fails, and done in the background while the server answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo
import torch._inductor.config as inductor
from aiohttp.test_utils import TestClient, TestServer

import image_search.models.model as models
from image_search.models.model import ModelSource, TextEmbedder
from image_search.store import Store
from image_search.testing import build_tiny_siglip, library_rows
from image_search.webui import create_app
from image_search.webui.keys import TEXTS

from .conftest import app_config

# torch.compile's own use of torch.jit warns, on whichever thread compiles.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")
QUERIES = ["A photo of a DOG on the beach", "日本の犬", "كلب على الشاطئ", "🐕🌊", "", "x" * 2000]


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


def test_the_compiled_tower_equals_the_eager_one_and_compiles_once(siglip_dir: Path) -> None:
    text = TextEmbedder(ModelSource(str(siglip_dir)), "float32", compile="on").load()
    assert text.compile_state == "pending"
    eager = np.stack([text.embed_texts([q])[0] for q in QUERIES])
    batch = text.embed_texts(QUERIES)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert text.compile_now() and text.compile_state == "compiled"
    assert text._fast is not None  # single queries go through it from now on
    fast = np.stack([text.embed_texts([q])[0] for q in QUERIES])
    np.testing.assert_allclose(fast, eager, atol=1e-5)
    assert (fast * eager).sum(1).min() > 0.99999
    # Every query has the warm-up's shape and kind of tensor: one graph, never compiled again.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    np.testing.assert_array_equal(text.embed_texts(QUERIES), batch)  # batches: the eager tower
    assert not text.compile_now()  # once only


def test_what_is_compiled(
    siglip_dir: Path,
    tiny_source: ModelSource,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    siglip = ModelSource(str(siglip_dir))

    def wants(source: ModelSource, dtype: str, compile: str) -> bool:
        text = TextEmbedder(source, dtype, compile=compile).load()
        assert text.compile_state == ("pending" if text.wants_compile() else "off")
        return text.wants_compile()

    assert wants(siglip, "float32", "on") and wants(siglip, "bfloat16", "on")
    assert not wants(siglip, "int8", "on")  # quantised layers stay as they are
    assert not wants(tiny_source, "float32", "on")  # CLIP's queries vary in length
    assert not wants(siglip, "float32", "auto")  # no gain measured without native bfloat16
    assert not wants(siglip, "bfloat16", "off")
    monkeypatch.setattr(models.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert wants(siglip, "bfloat16", "auto")
    monkeypatch.setattr(models.shutil, "which", lambda name: None)  # no compiler for inductor
    with caplog.at_level("INFO", logger="image_search.models.model"):
        assert not wants(siglip, "bfloat16", "auto")
    assert "no C++ compiler" in caplog.text  # said, where the compile would have paid


def test_a_failed_compile_leaves_the_eager_tower(
    siglip_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = TextEmbedder(ModelSource(str(siglip_dir)), "float32", compile="on").load()
    before = text.embed_texts(["a red car"])
    torch._dynamo.reset()
    # A compiler that fails every build, and no kernels cached from earlier builds to use instead.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    with inductor.patch({"cpp.cxx": (None, "/bin/false"), "fx_graph_cache": False}):
        assert not text.compile_now()
    assert text.compile_state == "failed" and text._fast is None
    assert "stays uncompiled" in caplog.text and "/bin/false" in caplog.text, caplog.text  # that failure
    np.testing.assert_array_equal(text.embed_texts(["a red car"]), before)


async def test_the_server_compiles_in_the_background(siglip_dir: Path, tmp_path: Path) -> None:
    """The server answers while its tower compiles; the status says how far it is; the same
    search gives the same results before and after."""
    source = ModelSource(str(siglip_dir))
    config = app_config(tmp_path, siglip_dir, text_dtype="float32", text_compile="on")
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, TextEmbedder(source, "float32").load().dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    async with Store("mem://") as store:
        await store.check_model(source.model_id)
        await store.write(library_rows(0, vectors, "/photos", source.model_id))
        async with TestClient(TestServer(create_app(config, store=store), host="127.0.0.1")) as client:

            async def state() -> str:
                return str((await (await client.get("/api/status")).json())["text_compile"])

            async def search() -> list[tuple[str, float]]:
                found = await client.post("/api/search", json={"text": "a dog on a beach", "limit": 10})
                assert found.status == 200
                return [(r["id"], r["score"]) for r in (await found.json())["results"]]

            assert await state() in ("pending", "compiling")
            first = await search()
            deadline = time.monotonic() + 240
            while (now := await state()) in ("pending", "compiling") and time.monotonic() < deadline:
                assert len(await search()) == 10  # answered meanwhile, by the eager tower
                await asyncio.sleep(0.2)
            assert now == "compiled"
            client.app[TEXTS].cache.clear()  # else the query's vector comes from the cache
            again = await search()
            assert [k for k, _ in again] == [k for k, _ in first]
            np.testing.assert_allclose([s for _, s in again], [s for _, s in first], atol=1e-4)
