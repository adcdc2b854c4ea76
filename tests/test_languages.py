"""Queries in six scripts, as the default model (SigLIP 2) reads them: tokenised exactly as
transformers' own processor tokenises them for the checkpoint (the model card's call), and each
answered through the command line, the API and the page. The tiny SigLIP's vocabulary holds the
letters and words of these scripts, as the real Gemma vocabulary does; any other text goes
through its byte pieces, never to an unknown token."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from image_search.models.model import ImageEmbedder, ModelSource, TextEmbedder
from image_search.store import Store
from image_search.testing import build_tiny_siglip
from image_search.webui import create_app

from .conftest import app_config, index_folder
from .test_browser import accessible, browser, on_page, open_page, shown  # noqa: F401  (browser: a fixture)

QUERIES = {
    "Latin with accents": "Un chien sur la plage en été, Straße",
    "Cyrillic": "Собака на пляже",
    "Greek": "ΣΚΎΛΟΣ στην παραλία",  # capitals: the final sigma must lower-case as the tokenizer's does
    "Arabic": "كلب على الشاطئ",
    "CJK": "海滩上的狗 浜辺の犬",
    "Devanagari": "समुद्र तट पर कुत्ता",
}


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


@pytest.fixture(scope="module")
def texts(siglip_dir: Path) -> TextEmbedder:
    return TextEmbedder(ModelSource(str(siglip_dir)), "float32").load()


@pytest.mark.parametrize("script", list(QUERIES))
def test_tokenised_as_transformers_does(script: str, texts: TextEmbedder, siglip_dir: Path) -> None:
    from transformers import AutoProcessor

    query = QUERIES[script]
    processor = AutoProcessor.from_pretrained(siglip_dir)
    # The SigLIP 2 model card's call: padded to the 64 positions it was trained with.
    wanted = processor(
        text=[query], padding="max_length", max_length=64, truncation=True, return_tensors="pt"
    )
    ours = texts.tokens([query])
    assert ours["input_ids"].tolist() == wanted["input_ids"].tolist()
    ids = ours["input_ids"][0].tolist()
    tokenizer = processor.tokenizer
    assert tokenizer.unk_token_id not in ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.upper() == query.upper() and decoded == decoded.lower()  # nothing lost
    # The script's own pieces, not only the byte fallback: "<0xD0>"-style pieces are the bytes.
    pieces = tokenizer.convert_ids_to_tokens([i for i in ids if i not in tokenizer.all_special_ids])
    assert any(not p.startswith("<0x") for p in pieces), pieces


def test_every_script_has_a_vector_of_its_own(texts: TextEmbedder) -> None:
    vectors = texts.embed_texts(list(QUERIES.values()))
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    cosines = vectors @ vectors.T
    assert (cosines[~np.eye(len(QUERIES), dtype=bool)] < 0.9999).all()


def test_the_command_line_answers_every_script(
    photo_dir: Path, cli_env: dict[str, str], siglip_dir: Path
) -> None:
    env = dict(cli_env, IMAGE_SEARCH_MODEL=str(siglip_dir))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "image_search", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return proc

    photos = json.loads(cli("index", str(photo_dir), "--json").stdout)["indexed"]
    for script, query in QUERIES.items():
        results = json.loads(cli("search", query, "--limit", "3", "--json").stdout)
        assert len(results) == min(3, photos), script
        assert all(Path(r["path"]).is_relative_to(photo_dir) for r in results)


@pytest.fixture(scope="module")
def images(siglip_dir: Path) -> ImageEmbedder:
    return ImageEmbedder(ModelSource(str(siglip_dir)), "cpu", "float32").load()


@pytest.fixture
async def siglip_server(
    tmp_path: Path, photo_dir: Path, siglip_dir: Path, images: ImageEmbedder, texts: TextEmbedder
) -> AsyncIterator[tuple[str, TestServer]]:
    async with Store("mem://") as store:
        await index_folder(store, photo_dir, images)
        app = create_app(app_config(tmp_path, siglip_dir), store=store, text_embedder=texts)
        async with TestServer(app, host="127.0.0.1") as server:
            yield f"http://127.0.0.1:{server.port}", server


async def test_the_api_answers_every_script(siglip_server: tuple[str, TestServer]) -> None:
    _, server = siglip_server
    async with TestClient(server) as client:
        for script, query in QUERIES.items():
            found = await client.post("/api/search", json={"text": query, "limit": 5})
            assert found.status == 200, (script, await found.text())
            results = (await found.json())["results"]
            assert len(results) == 5 and all(r["score"] is not None for r in results), script
            # A round keeps its text as typed, in any script.
            saved = await client.put(
                "/api/rounds/" + "ab" * 16, json={"rounds": [{"text": query, "liked": [], "rejected": []}]}
            )
            assert saved.status in (200, 204), (script, await saved.text())
            back = await (await client.get("/api/rounds/" + "ab" * 16)).json()
            assert back["rounds"][0]["text"] == query, script


@pytest.mark.browser
async def test_the_page_answers_every_script(browser, siglip_server: tuple[str, TestServer]) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    url, _ = siglip_server
    page = await open_page(browser, url)
    for n, (script, query) in enumerate(QUERIES.items()):
        # Each query a round of its own (a new address): the tiny model may rank the photos alike.
        before = await page.evaluate("location.hash")
        await page.fill("#q", query)
        await page.press("#q", "Enter")
        await on_page(page, "h => location.hash !== h && location.hash.startsWith('#/search/')", before)
        assert await shown(page, f"Round {n + 1} of {n + 1}"), script  # Enter: the next round
        assert await page.input_value("#q") == query, script
        if n == 0:
            await accessible(page, "a query with accents")
    # The last round after a reload: its text as typed, its results again.
    last = f"Round {len(QUERIES)} of {len(QUERIES)}"
    before = await shown(page, last)
    await page.reload()
    assert await shown(page, last) == before
    assert await page.input_value("#q") == QUERIES["Devanagari"]
    await page.context.close()
