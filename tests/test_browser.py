"""The page in a real headless Chromium (Debian's), driven by Playwright: the refine loop as a
person uses it. Screenshots go to test-artifacts/ (IMAGE_SEARCH_TEST_ARTIFACTS)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from image_search.config import load_config
from image_search.indexer import FileRef, Indexer
from image_search.model import ImageEmbedder, TextEmbedder
from image_search.scan import Filter, walk
from image_search.store import Store
from image_search.webui import create_app

from .conftest import make_photo

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(os.environ.get("IMAGE_SEARCH_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))


@pytest.fixture
async def server(
    tmp_path: Path,
    photo_dir: Path,
    image_embedder: ImageEmbedder,
    text_embedder: TextEmbedder,
    tiny_model_dir: Path,
) -> AsyncIterator[str]:
    for i in range(40):
        make_photo(photo_dir / "generated" / f"{i:02d}.jpg", (320, 240), seed=100 + i)
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        files = [FileRef(p, str(photo_dir)) for p in walk(str(photo_dir), Filter())]
        async with Indexer(store, image_embedder, workers=2, batch_size=16) as indexer:
            await indexer.index(files)
        config = load_config(
            {"model": str(tiny_model_dir), "cache_dir": str(tmp_path / "cache"), "database_url": "mem://"}
        )
        app = create_app(config, store=store, text_embedder=text_embedder)
        async with TestServer(app, host="127.0.0.1") as srv:
            yield f"http://127.0.0.1:{srv.port}"


@pytest.fixture
async def page(server: str) -> AsyncIterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium")
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server + "/")
        yield page
        await browser.close()
        assert not errors, errors


async def ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return await page.eval_on_selector_all("#grid .tile", "tiles => tiles.map(t => t.dataset.id)")


async def until(page, script: str, arg: object = None, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a page function from here: the page's own Content-Security-Policy forbids the string
    evaluation that Playwright's wait_for_function injects (and it should)."""
    for _ in range(int(limit / 0.05)):
        if await page.evaluate(script, arg):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true in {limit} s: {script}")


async def wait_for_new_grid(page, before: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    await until(
        page,
        "before => { const now = [...document.querySelectorAll('#grid .tile')].map(t => t.dataset.id);"
        " return now.length > 0 && now.join() !== before.join(); }",
        before,
    )
    return await ids(page)


async def test_search_like_refine_reject_back(page) -> None:  # type: ignore[no-untyped-def]
    await page.fill("#q", "a photo of the beach at sunset")
    await page.press("#q", "Enter")
    await page.wait_for_selector("#grid .tile img")
    first = await ids(page)
    assert len(first) >= 20
    tiles = page.locator("#grid .tile")
    for i in (2, 5, 7):
        await tiles.nth(i).locator("button.like").click()
    liked = [first[i] for i in (2, 5, 7)]
    assert await page.text_content("#liked-count") == "3"
    assert await tiles.nth(2).get_attribute("class") == "tile liked"
    await page.screenshot(path=ARTIFACTS / "01-liked-three.png")

    await page.click("#refine")
    second = await wait_for_new_grid(page, first)
    assert second != first
    assert not set(second) & set(liked), "judged images stay in the tray, not the grid"
    tray = await page.eval_on_selector_all("#liked-list li", "items => items.map(i => i.dataset.id)")
    assert tray == liked
    assert await page.text_content("#round") == "round 1"
    await page.screenshot(path=ARTIFACTS / "02-refined.png")

    # Reject one: it joins the tray and leaves the next round.
    await page.locator("#grid .tile").nth(0).locator("button.reject").click()
    rejected = second[0]
    assert await page.text_content("#rejected-count") == "1"
    await page.click("#refine")
    third = await wait_for_new_grid(page, second)
    assert rejected not in third
    assert await page.text_content("#round") == "round 2"

    # Removing an image from the tray un-judges it everywhere.
    await page.click(f"#liked-list li[data-id='{liked[0]}'] button")
    assert await page.text_content("#liked-count") == "2"

    # Back: the earlier round and its tray come back.
    await page.click("#back")
    back = await wait_for_new_grid(page, third)
    assert back == second
    assert await page.text_content("#round") == "round 1"
    assert await page.text_content("#liked-count") == "3"
    assert await page.text_content("#rejected-count") == "0"
    await page.click("#forward")
    assert await wait_for_new_grid(page, back) == third


async def test_lightbox_keys(page) -> None:  # type: ignore[no-untyped-def]
    await page.fill("#q", "mountain")
    await page.press("#q", "Enter")
    await page.wait_for_selector("#grid .tile img")
    results = await ids(page)
    await page.locator("#grid .tile img").nth(0).click()
    await page.wait_for_selector("#lightbox:not([hidden])")
    src = await page.get_attribute("#lb-img", "src")
    assert src is not None and results[0] in src
    await page.keyboard.press("ArrowRight")
    assert results[1] in (await page.get_attribute("#lb-img", "src") or "")
    await page.keyboard.press("ArrowLeft")
    assert results[0] in (await page.get_attribute("#lb-img", "src") or "")
    await page.keyboard.press("l")
    assert await page.get_attribute("#lb-like", "aria-pressed") == "true"
    assert await page.text_content("#liked-count") == "1"
    await until(page, "() => document.getElementById('lb-img').naturalWidth > 0")
    await page.screenshot(path=ARTIFACTS / "03-lightbox.png")
    await page.keyboard.press("Escape")
    assert await page.is_hidden("#lightbox")
    # Focus returns to the tile; keyboard judging works there too.
    focused = await page.evaluate("document.activeElement.dataset.id")
    assert focused == results[0]
    await page.keyboard.press("x")
    assert await page.text_content("#rejected-count") == "1"
    assert await page.text_content("#liked-count") == "0"


async def test_upload_a_picture_and_copy_paths(page, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    picture = photo_dir / "generated" / "07.jpg"
    await page.set_input_files("#upload", str(picture))
    await page.wait_for_selector("#grid .tile img")
    top = page.locator("#grid .tile").nth(0)
    assert "generated/07.jpg" in (await top.get_attribute("aria-label") or "")
    assert await page.is_visible("#upload-chip")
    await top.locator("button.like").click()
    await page.click("#copy-paths")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == str(picture)
    await page.screenshot(path=ARTIFACTS / "04-upload.png")


async def test_more_like_this_and_phone_width(page) -> None:  # type: ignore[no-untyped-def]
    await page.fill("#q", "city")
    await page.press("#q", "Enter")
    await page.wait_for_selector("#grid .tile img")
    before = await ids(page)
    await page.locator("#grid .tile").nth(3).locator("button.similar").click()
    after = await wait_for_new_grid(page, before)
    assert before[3] not in after
    await page.set_viewport_size({"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "no sideways scrolling on a phone"
    await page.screenshot(path=ARTIFACTS / "05-phone.png")
    labels = await page.eval_on_selector_all(
        "button", "bs => bs.filter(b => !b.getAttribute('aria-label') && !b.textContent.trim()).length"
    )
    assert labels == 0, "every button has a name"
