"""The page in a real headless Chromium (Debian's), driven by Playwright: the refine loop as a
person uses it. Screenshots go to test-artifacts/ (IMAGE_SEARCH_TEST_ARTIFACTS)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from image_search.indexer import FileRef, Indexer
from image_search.model import ImageEmbedder, TextEmbedder
from image_search.store import Store
from image_search.webui import create_app

from .conftest import app_config, dated, index_folder, make_photo, until

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
ALL_THUMBNAILS_LOADED = (
    "() => [...document.querySelectorAll('#grid .tile img')].every(i => i.naturalWidth > 0)"
)
ARTIFACTS = Path(os.environ.get("IMAGE_SEARCH_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))


@dataclass
class Served:
    url: str
    store: Store
    root: Path
    embedder: ImageEmbedder


@pytest.fixture
async def served(
    tmp_path: Path,
    photo_dir: Path,
    image_embedder: ImageEmbedder,
    text_embedder: TextEmbedder,
    tiny_model_dir: Path,
) -> AsyncIterator[Served]:
    for i in range(40):
        make_photo(photo_dir / "generated" / f"{i:02d}.jpg", (320, 240), seed=100 + i)
    for i, when in enumerate(["2019:07:01 12:00:00", "2021:01:15 09:00:00", "2021:03:02 18:30:00"]):
        dated(photo_dir / "dated" / f"{when[:7].replace(':', '-')}.jpg", when, seed=300 + i)
    meadow = next(p for p in photo_dir.rglob("*GreenMeadow.jpg"))
    (photo_dir / "exports").mkdir()
    with Image.open(meadow) as image:  # a smaller copy: one near-duplicate group
        image.resize((image.width // 2, image.height // 2)).save(photo_dir / "exports" / "meadow-small.jpg")
    async with Store("mem://") as store:
        await index_folder(store, photo_dir, image_embedder, batch_size=16)
        app = create_app(
            app_config(tmp_path, tiny_model_dir),
            store=store,
            text_embedder=text_embedder,
            follow_interval=0.2,
        )
        async with TestServer(app, host="127.0.0.1") as srv:
            yield Served(f"http://127.0.0.1:{srv.port}", store, photo_dir, image_embedder)


@pytest.fixture
def server(served: Served) -> str:
    return served.url


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
        in_flight: set[object] = set()
        page.on("request", lambda r: in_flight.add(r))
        page.on("requestfinished", lambda r: in_flight.discard(r))
        page.on("requestfailed", lambda r: in_flight.discard(r))
        await page.goto(server + "/")
        yield page
        for _ in range(100):  # let thumbnails finish: the server is stopped right after
            if not in_flight:
                break
            await asyncio.sleep(0.05)
        await browser.close()
        assert not errors, errors


async def ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return await page.eval_on_selector_all("#grid .tile", "tiles => tiles.map(t => t.dataset.id)")


async def on_page(page, script: str, arg: object = None, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a page function from here: the page's own Content-Security-Policy forbids the string
    evaluation that Playwright's wait_for_function injects (and it should)."""
    await until(lambda: page.evaluate(script, arg), limit=limit, what=script)


async def wait_for_new_grid(page, before: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    await on_page(
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
    await on_page(page, "() => document.getElementById('lb-img').naturalWidth > 0")
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


async def test_timeline_by_month(page) -> None:  # type: ignore[no-untyped-def]
    await page.select_option("#view", "timeline")
    await page.fill("#min-score", "-1")
    await page.dispatch_event("#min-score", "change")
    await page.fill("#q", "a photo")
    await page.press("#q", "Enter")
    await page.wait_for_selector("#grid .month .tile img")
    headings = await page.eval_on_selector_all("#grid .month h2", "hs => hs.map(h => h.textContent)")
    assert headings[-3:] == ["March 2021 · 1", "January 2021 · 1", "July 2019 · 1"]
    years = await page.eval_on_selector_all("#years a", "as => as.map(a => a.textContent)")
    assert [y.split(" · ")[0] for y in years][-2:] == ["2021", "2019"]
    total = sum(int(y.split(" · ")[1]) for y in years)
    assert total == len(await ids(page))
    await page.click("#years a >> text=2019")
    await page.screenshot(path=ARTIFACTS / "06-timeline.png")
    # A higher minimum score keeps fewer pictures, in the same months.
    scores = await page.eval_on_selector_all(
        "#grid .tile .score", "ss => ss.map(s => parseFloat(s.textContent))"
    )
    floor = sorted(scores)[len(scores) // 2]
    await page.fill("#min-score", str(floor))
    await page.dispatch_event("#min-score", "change")
    await on_page(page, "n => document.querySelectorAll('#grid .tile').length < n", len(scores))
    kept = await page.eval_on_selector_all(
        "#grid .tile .score", "ss => ss.map(s => parseFloat(s.textContent))"
    )
    assert kept and min(kept) >= floor - 0.001


async def test_album_save_visit_new_edit_rename_delete(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    await page.fill("#q", "a photo of a meadow")
    await page.press("#q", "Enter")
    await page.wait_for_selector("#grid .tile img")
    first = await ids(page)
    await page.locator("#grid .tile").nth(0).locator("button.like").click()
    await page.fill("#q", "")  # the album is "pictures like this one"
    await page.fill("#min-score", "0.99")
    await page.dispatch_event("#min-score", "change")
    await page.click("#save-album")
    await page.fill("#album-name", "Meadows")
    await page.click("#album-save")
    await on_page(page, "() => document.getElementById('tray-note').textContent.startsWith('Saved')")

    await page.click("#nav-albums")
    await page.wait_for_selector(".album-card")
    assert "Meadows" in await page.text_content(".album-card")
    await page.click(".album-card a")
    await page.wait_for_selector("#album-grid .album-tile img")
    members = await page.eval_on_selector_all("#album-grid .album-tile", "ts => ts.map(t => t.dataset.id)")
    assert first[0] in members
    assert await page.eval_on_selector_all("#album-grid .new", "ts => ts.length") == 0

    # A copy of a liked photo arrives: it joins the album by itself, marked new once.
    liked_path = (await served.store.get_one(first[0]))["path"]
    copy = served.root / "later" / ("copy-" + Path(liked_path).name)
    copy.parent.mkdir()
    shutil.copy(liked_path, copy)
    with Image.open(copy) as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(copy.with_suffix(".jpg"))
    arrived = copy.with_suffix(".jpg")
    if arrived != copy:
        copy.unlink()
    async with Indexer(served.store, served.embedder, workers=1) as indexer:
        await indexer.index([FileRef(str(arrived), str(served.root))])
    album_url = page.url
    await page.goto(served.url + "/#/albums")  # the nav says so within a status poll or two
    await on_page(page, "() => document.getElementById('albums-new').textContent === '1 new'", limit=30)
    await on_page(page, "() => document.querySelector('.album-card').textContent.includes('1 new')")
    for _ in range(50):
        await page.goto(served.url + "/#/albums")
        await page.goto(album_url)
        await page.wait_for_selector("#album-grid .album-tile")
        if await page.eval_on_selector_all("#album-grid .new", "ts => ts.length"):
            break
        await asyncio.sleep(0.2)
    new = await page.eval_on_selector_all("#album-grid .new", "ts => ts.map(t => t.dataset.id)")
    assert len(new) == 1 and "new since your last visit" in await page.text_content("#album-counts")
    await page.screenshot(path=ARTIFACTS / "07-album-new.png")
    await page.reload()
    await page.wait_for_selector("#album-grid .album-tile")
    assert await page.eval_on_selector_all("#album-grid .new", "ts => ts.length") == 0

    await page.click("#album-rename")
    await page.fill("#rename-name", "Green meadows")
    await page.press("#rename-name", "Enter")
    await on_page(page, "() => document.getElementById('album-title').textContent === 'Green meadows'")
    href = await page.get_attribute("#album-export", "href")
    assert href and href.endswith("/export")
    async with page.expect_download() as download:
        await page.click("#album-export")
    listed = Path(await (await download.value).path()).read_text().splitlines()
    assert str(arrived) in listed and liked_path in listed
    await page.click("#album-links")
    await page.fill("#links-folder", str(served.root))  # outside the export folder: refused
    await page.press("#links-folder", "Enter")
    await on_page(page, "() => document.getElementById('album-note').textContent.includes('are made inside')")
    folder = served.root.parent / "exports" / "Green meadows"  # app_config()'s export folder
    await page.fill("#links-folder", "Green meadows")
    await page.press("#links-folder", "Enter")
    await on_page(page, "() => document.getElementById('album-note').textContent.includes(' links in ')")
    assert sorted(os.path.realpath(folder / name) for name in os.listdir(folder)) == sorted(
        os.path.realpath(p) for p in listed
    )

    await page.click("#album-edit")
    await page.wait_for_selector("#search-page:not([hidden]) #grid .tile")
    assert await page.text_content("#liked-count") == "1"
    assert await page.input_value("#min-score") == "0.99"
    assert "Green meadows" in await page.text_content("#save-album")

    await page.goto(album_url)
    await page.wait_for_selector("#album-grid .album-tile")
    await page.click("#album-delete")
    assert "photos stay" in await page.text_content("#album-delete")
    await page.click("#album-delete")
    await page.wait_for_selector("#album-list li.note")
    assert await page.text_content("#album-list") == "No albums yet."
    assert Path(liked_path).exists() and arrived.exists()


async def test_duplicates_page(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    """The meadow and its smaller copy are a group; so are Debian's identical wallpaper files
    (photo_dir holds several copies of one of them). Nothing else is."""
    await page.click("#nav-duplicates")
    await page.wait_for_selector(".dup-group .dup-item img")
    groups = await page.eval_on_selector_all(
        ".dup-group",
        "gs => gs.map(g => [...g.querySelectorAll('.dup-item')].map(i => "
        "[i.classList.contains('keep'), i.querySelector('.caption').textContent,"
        " i.querySelector('.dims').textContent]))",
    )
    meadow = next(g for g in groups if any(c == "exports/meadow-small.jpg" for _, c, _ in g))
    assert (
        len(meadow) == 2 and meadow[0][0] and not meadow[1][0] and meadow[1][1] == "exports/meadow-small.jpg"
    )
    for group in groups:
        assert group[0][0] and not any(keep for keep, _, _ in group[1:])
        assert all("×" in dims and "B" in dims for _, _, dims in group)
        if group is not meadow:  # identical files: the same size in pixels and bytes
            assert len({dims for _, _, dims in group}) == 1
    copies = sum(len(g) - 1 for g in groups)
    assert f"{len(groups)} groups: {copies} smaller copies" in await page.text_content("#dup-summary")
    await on_page(
        page, "() => [...document.querySelectorAll('.dup-item img')].every(i => i.naturalWidth > 0)"
    )
    await page.screenshot(path=ARTIFACTS / "08-duplicates.png")
    async with page.expect_download() as download:
        await page.click("#dup-export")
    saved = Path(await (await download.value).path()).read_text().splitlines()
    assert len(saved) == copies and str(served.root / "exports" / "meadow-small.jpg") in saved
    assert all(Path(p).exists() for p in saved)


async def test_the_lightbox_shows_a_heic_and_a_dng(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    """An iPhone photo (HEIC) and a camera's RAW (DNG), which no browser shows, open as pictures:
    the server sends a WebP rendition; the original stays a link away. A RAW + JPEG pair shows
    once, as its JPEG, badged, with the RAW a link away in the lightbox."""
    from image_search.imaging import configure_pillow
    from image_search.store import image_key

    from .dng import write_dng

    configure_pillow()
    phone = served.root / "phone" / "IMG_0002.heic"
    phone.parent.mkdir()
    camera = served.root / "camera" / "DSC_0042.dng"
    camera.parent.mkdir()
    with Image.open(make_photo(served.root.parent / "source.png", (1200, 900), seed=77)) as source:
        source.save(phone, "HEIF", quality=90, enc_params={"preset": "ultrafast"})
        write_dng(camera, source, orientation=6)  # no preview: LibRaw's half-size decode, 450x600
        source.convert("RGB").save(camera.with_name("DSC_0043.JPG"), quality=90)
        pair_raw = write_dng(camera.with_name("DSC_0043.dng"), source)
    await index_folder(served.store, served.root, served.embedder, batch_size=16)
    # The page's library follows the store every 0.2 s; search once the photos are in it.
    searchable = (await served.store.counts()).indexed

    async def followed() -> bool:
        async with aiohttp.ClientSession() as http, http.get(served.url + "/api/status") as r:
            return (await r.json())["searchable"] >= searchable

    await until(followed, limit=20, what="the page's library has the HEIC and the DNG")
    # The page says which model answers (a local checkpoint: its folder's name).
    await on_page(page, "() => document.getElementById('model').textContent.length > 0")
    model = await page.get_attribute("#model", "title") or ""
    assert model.startswith("Model: local:") and model.split(":")[2] == await page.text_content("#model")
    await page.fill("#q", "a photo")
    await page.press("#q", "Enter")
    for path, width, shot in ((phone, 1200, "09-lightbox-heic"), (camera, 450, "09-lightbox-dng")):
        key = image_key(str(path))
        tile = f"#grid .tile[data-id='{key}'] img"
        await on_page(page, "sel => !!document.querySelector(sel)", tile, limit=20)
        await page.locator(tile).click()
        await page.wait_for_selector("#lightbox:not([hidden])")
        assert key in (await page.get_attribute("#lb-img", "src") or "")
        await on_page(page, "() => document.getElementById('lb-img').naturalWidth > 0")
        assert await page.evaluate("document.getElementById('lb-img').naturalWidth") == width
        assert "original=1" in (await page.get_attribute("#lb-original", "href") or "")
        await page.screenshot(path=ARTIFACTS / f"{shot}.png")
        await page.keyboard.press("Escape")
        await page.wait_for_selector("#lightbox", state="hidden")
    assert await page.locator(f"#grid .tile[data-id='{image_key(str(pair_raw))}']").count() == 0
    shot = f"#grid .tile[data-id='{image_key(str(camera.with_name('DSC_0043.JPG')))}']"
    assert await page.text_content(f"{shot} .stack") == "JPEG + DNG"
    await page.locator(f"{shot} img").click()
    link = page.locator("#lb-pair a")
    assert await link.text_content() == "DNG file"
    assert image_key(str(pair_raw)) in (await link.get_attribute("href") or "")
    await page.screenshot(path=ARTIFACTS / "09-lightbox-raw-jpeg-pair.png")


async def test_with_a_token_nothing_reaches_another_port(
    tmp_path: Path,
    photo_dir: Path,
    image_embedder: ImageEmbedder,
    text_embedder: TextEmbedder,
    tiny_model_dir: Path,
) -> None:
    """A server that needs its token (it listens beyond loopback), opened once with ?token= as it
    printed: the page works, after a reload and in a second tab too, and keeps nothing that another
    port of the same host receives or can read (a page another account serves on 127.0.0.1)."""
    from aiohttp import web
    from playwright.async_api import async_playwright

    seen: list[dict[str, str]] = []

    async def other(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        page = "<!doctype html><title>another account's page</title>"
        return web.Response(text=page, content_type="text/html")

    foreign = web.Application()
    foreign.router.add_get("/{tail:.*}", other)
    for i in range(6):
        make_photo(photo_dir / "generated" / f"{i:02d}.jpg", (320, 240), seed=100 + i)
    config = app_config(tmp_path, tiny_model_dir, host="0.0.0.0", token="s3cret-token")
    async with Store("mem://") as store:
        await index_folder(store, photo_dir, image_embedder, batch_size=16)
        app = create_app(config, store=store, text_embedder=text_embedder)
        async with (
            TestServer(app, host="127.0.0.1") as mine,
            TestServer(foreign, host="127.0.0.1") as theirs,
            async_playwright() as p,
        ):
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            base = f"http://127.0.0.1:{mine.port}"
            await page.goto(base + "/?token=s3cret-token")
            await on_page(page, "() => !location.search.includes('token')")
            for tab in (page, await context.new_page()):
                if tab is not page:
                    await tab.goto(base + "/")
                else:
                    await tab.reload()
                await tab.fill("#q", "a photo")
                await tab.press("#q", "Enter")
                await tab.wait_for_selector("#grid .tile img")
                await on_page(tab, ALL_THUMBNAILS_LOADED)
            assert await context.cookies() == []
            other_page = await context.new_page()
            await other_page.goto(f"http://127.0.0.1:{theirs.port}/")
            assert await other_page.evaluate("document.cookie") == ""
            assert await other_page.evaluate("localStorage.length") == 0
            assert seen and not any("Cookie" in h or "Authorization" in h for h in seen), seen
            # A wrong token says so, on the page.
            stranger = await (await browser.new_context()).new_page()
            await stranger.goto(base + "/?token=wrong")
            await on_page(stranger, "() => document.getElementById('message').textContent.includes('token')")
            await browser.close()
    assert not errors, errors
