"""The page's screenshots in docs/screenshots/: every page on a 1280x900 desktop and a 390x844
phone, over Debian's wallpapers (real photos), in Debian's headless Chromium.

    .venv/bin/python scripts/screenshots.py [OUT_DIR]

No weights reach this machine, so the model is the tests' tiny random CLIP: the pages, the layout
and the states are real, the ranking is not (any photo may come first for any words).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from aiohttp.test_utils import TestServer
from PIL import Image

from image_search.config import load_config
from image_search.indexing.indexer import Indexer
from image_search.indexing.plan import FileRef
from image_search.models.model import ImageEmbedder, ModelSource, TextEmbedder
from image_search.pictures.scan import Filter, walk
from image_search.store import Store
from image_search.testing import build_tiny_clip
from image_search.webui import create_app

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]  # fmt: skip
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def photos(folder: Path) -> None:
    """One size of each of Debian's wallpapers, and two smaller copies (near-duplicates)."""
    for images in sorted(Path("/usr/share/wallpapers").glob("*/contents/images")):
        first = sorted(images.iterdir())[0]
        shutil.copy(first, folder / "wallpapers" / f"{images.parent.parent.name}{first.suffix}")
    for source in sorted(Path("/usr/share/backgrounds").rglob("*")):
        if source.suffix.lower() in {".jpg", ".png", ".webp"} and source.is_file():
            target = folder / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    for name in ("GreenMeadow.jpg", "YellowFlower.jpg"):
        found = next(folder.rglob(name), None)
        if found is not None:
            with Image.open(found) as image:
                small = image.convert("RGB").resize((image.width // 3, image.height // 3))
                (folder / "exports").mkdir(exist_ok=True)
                small.save(folder / "exports" / f"small-{name}")


async def shoot(out: Path) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "Pictures" / "wallpapers").mkdir(parents=True)
        photos(work / "Pictures")
        source = ModelSource(str(build_tiny_clip(work / "model")))
        root = work / "Pictures"
        async with Store("mem://") as store:
            await store.check_model(source.model_id)
            files = [FileRef(p, str(root)) for p in walk(str(root), Filter())]
            async with Indexer(store, ImageEmbedder(source, "cpu").load(), workers=2) as indexer:
                await indexer.index(files)
            config = load_config(
                {"model": str(work / "model"), "cache_dir": str(work / "cache"), "roots": [str(root)]}
            )
            app = create_app(config, store=store, text_embedder=TextEmbedder(source, "float32"))
            async with TestServer(app, host="127.0.0.1") as server, async_playwright() as p:
                url = f"http://127.0.0.1:{server.port}/"
                browser = await p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
                for device, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
                    page = await (await browser.new_context(**device)).new_page()
                    await pages(page, url, out, name)
                await browser.close()


async def settle(page) -> None:  # type: ignore[no-untyped-def]
    await page.wait_for_timeout(300)
    for _ in range(100):
        if await page.evaluate("[...document.images].every(i => !i.src || i.complete)"):
            break
        await page.wait_for_timeout(100)
    await page.wait_for_timeout(300)


async def pages(page, url: str, out: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    async def snap(what: str) -> None:
        await settle(page)
        if failed:
            raise SystemExit(f"{name} {what}: {failed[:5]}")
        await page.screenshot(path=out / f"{name}-{what}.jpg", type="jpeg", quality=80)

    await page.goto(url)
    await page.fill("#q", "a mountain lake at sunset")
    await page.press("#q", "Enter")
    await page.wait_for_selector("#grid .tile img")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("l")
    for _ in range(3):
        await page.keyboard.press("ArrowRight")
    await page.keyboard.press("l")
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("x")
    await snap("search")
    await page.click("#refine")
    await page.click("#tray-toggle")
    await snap("refined-tray")
    await page.click("#tray-toggle")
    await page.locator("#grid .tile .open").nth(1).click()
    await page.wait_for_selector("#lightbox[open]")
    await snap("lightbox")
    await page.keyboard.press("Escape")
    await page.click("#model")
    await page.wait_for_selector("#model-panel li")
    await snap("model")
    await page.click("#model")
    await page.click("#filters-toggle")
    # The tiny random model's scores are all below any "fair match": show every photo.
    await page.fill("#min-score", "-1")
    await page.dispatch_event("#min-score", "change")
    await page.select_option("#view", "timeline")
    await snap("timeline")
    await page.select_option("#view", "grid")
    await page.click("#tray-toggle")
    await page.click("#save-album")
    await page.fill("#album-name", "Mountain lakes" if name == "desktop" else "Lakes, on a phone")
    await page.click("#album-save")
    await page.goto(url + "#/albums")
    await page.wait_for_selector(".album-card")
    await snap("albums")
    await page.click(".album-card a")
    await page.wait_for_selector("#album-grid .tile")
    await snap("album")
    await page.goto(url + "#/duplicates")
    await page.wait_for_selector(".dup-group img")
    await snap("duplicates")


if __name__ == "__main__":
    asyncio.run(
        shoot(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "docs" / "screenshots")
    )
