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

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, TextEmbedder
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


AXE = Path(__file__).parents[1] / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium")
    if not AXE.exists():
        pytest.fail("axe-core is needed for the browser tests: npm ci (scripts/dev install does it)")
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


async def open_page(browser, server: str, device: dict[str, object] = DESKTOP, path: str = "/"):  # type: ignore[no-untyped-def]
    """A page of a new browser profile. The page's CSP forbids inline scripts, axe-core's too:
    the profile bypasses CSP so that axe can be injected (test_web_api checks the header)."""
    context = await browser.new_context(**device, bypass_csp=True)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    await page.goto(server + path)
    return page


@pytest.fixture
async def page(browser, server: str) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    page = await open_page(browser, server)
    in_flight: set[object] = set()
    page.on("request", lambda r: in_flight.add(r))
    page.on("requestfinished", lambda r: in_flight.discard(r))
    page.on("requestfailed", lambda r: in_flight.discard(r))
    yield page
    for _ in range(100):  # let thumbnails finish: the server is stopped right after
        if not in_flight:
            break
        await asyncio.sleep(0.05)
    assert not page.errors, page.errors


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


async def shown(page, label: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The round called ``label`` is shown with its results (no search in flight)."""
    await on_page(
        page,
        "l => document.getElementById('round').textContent === l"
        " && !document.getElementById('grid').hasAttribute('aria-busy')",
        label,
    )
    return await ids(page)


async def search(page, text: str) -> list[str]:  # type: ignore[no-untyped-def]
    before = await ids(page)
    await page.fill("#q", text)
    await page.press("#q", "Enter")
    return await wait_for_new_grid(page, before)


async def followed(served: Served) -> None:
    """The page's library has every photo the store has (it follows the store every 0.2 s)."""
    searchable = (await served.store.counts()).indexed

    async def caught_up() -> bool:
        async with aiohttp.ClientSession() as http, http.get(served.url + "/api/status") as r:
            return bool((await r.json())["searchable"] >= searchable)

    await until(caught_up, limit=20, what="the page's library has the new photos")


async def accessible(page, what: str) -> None:  # type: ignore[no-untyped-def]
    """axe-core 4 finds nothing in the page as it is now (WCAG 2.x A and AA rules and best practices)."""
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    found = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => `${v.id}: ${v.nodes.map(n => n.target.join(' ') + ' ' + (n.failureSummary || ''))"
        ".join(' | ')}`)"
    )
    assert not found, f"{what}: {found}"


async def focused(page, script: str = "document.activeElement.closest('.tile')?.dataset.id") -> object:  # type: ignore[no-untyped-def]
    return await page.evaluate(script)


async def test_rounds_survive_reload_back_forward_and_a_second_tab(page, browser, server: str) -> None:  # type: ignore[no-untyped-def]
    """Each Search and Refine is a round with its own address; filters re-run the round shown;
    Back and Forward step through rounds exactly as judged; a judgement taken back stays taken
    back; a reload and a second tab show the same round."""
    first = await search(page, "a photo of the beach at sunset")
    assert len(first) >= 20 and await page.text_content("#round") == "Round 1 of 1"
    assert "#/search/" in page.url and page.url.endswith("/1")
    tiles = page.locator("#grid .tile")
    for i in (2, 5, 7):
        await tiles.nth(i).hover()
        await tiles.nth(i).locator("button.like").click()
    liked = [first[i] for i in (2, 5, 7)]
    assert await page.text_content("#liked-count") == "3"
    await accessible(page, "judged tiles")
    await page.screenshot(path=ARTIFACTS / "01-liked-three.png")

    await page.click("#refine")
    second = await wait_for_new_grid(page, first)
    round2 = page.url
    assert not set(second) & set(liked), "judged images stay in the tray, not the grid"
    assert await page.text_content("#round") == "Round 2 of 2" and round2.endswith("/2")
    # A filter or the sort re-runs this round: the count stays.
    await page.click("#filters-toggle")
    await page.select_option("#sort", "date")
    await on_page(page, "() => document.getElementById('round').textContent === 'Round 2 of 2'")
    await page.select_option("#sort", "score")
    await wait_for_new_grid(page, [])
    assert await page.text_content("#round") == "Round 2 of 2" and page.url == round2
    await page.click("#tray-toggle")
    tray = await page.eval_on_selector_all("#liked-list li", "items => items.map(i => i.dataset.id)")
    assert tray == liked
    await accessible(page, "the tray, open")
    await page.screenshot(path=ARTIFACTS / "02-refined-tray.png")

    # Take one back: focus stays in the tray, and it stays taken back through Back and Forward.
    await page.click(f"#liked-list li[data-id='{liked[0]}'] button")
    assert await page.text_content("#liked-count") == "2"
    assert await page.evaluate("document.activeElement.closest('#tray-lists') !== null")
    await page.click("#back")
    await on_page(page, "() => document.getElementById('round').textContent === 'Round 1 of 2'")
    assert await page.text_content("#liked-count") == "3"  # round 1 as it was judged
    await page.click("#forward")
    await on_page(page, "() => document.getElementById('round').textContent === 'Round 2 of 2'")
    assert await page.text_content("#liked-count") == "2"
    # The browser's own Back and Forward.
    await page.go_back()
    await shown(page, "Round 1 of 2")
    await page.go_forward()
    grid = await shown(page, "Round 2 of 2")

    # A reload, and the address in a second tab: the same round, tray and results.
    await page.reload()
    assert await shown(page, "Round 2 of 2") == grid
    assert await page.text_content("#liked-count") == "2"
    assert await page.input_value("#q") == "a photo of the beach at sunset"
    other = await open_page(browser, server, path="/" + round2.split("/", 3)[3])
    assert await shown(other, "Round 2 of 2") == grid
    assert await other.text_content("#liked-count") == "2"
    assert not other.errors


async def test_the_keyboard_first(page) -> None:  # type: ignore[no-untyped-def]
    """The box has focus on load; Enter, ↓ and L judge the first photo (3 presses after the
    query); arrows move between tiles; the grid is one tab stop; the lightbox keeps focus inside
    and gives it back to its tile; S starts a round and focus goes to its first photo."""
    assert await page.evaluate("document.activeElement.id") == "q"
    await page.keyboard.type("a mountain")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#grid .tile img")
    results = await ids(page)
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("l")
    assert await page.text_content("#liked-count") == "1" and await focused(page) == results[0]
    await page.keyboard.press("ArrowRight")
    assert await focused(page) == results[1]
    await page.keyboard.press("x")
    assert await page.text_content("#rejected-count") == "1"
    await page.keyboard.press("ArrowDown")
    below = await focused(page)
    assert below not in (results[0], results[1])
    await page.keyboard.press("ArrowUp")
    assert await focused(page) == results[1]
    stops = await page.eval_on_selector_all(
        "#grid .tile button", "bs => bs.filter(b => b.tabIndex >= 0).length"
    )
    assert stops == 1, "the whole grid is one tab stop"
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#lightbox[open]")
    for _ in range(12):  # Tab cycles inside the dialog: the page behind is inert
        await page.keyboard.press("Tab")
        inside = await page.evaluate(
            "document.activeElement === document.body || document.activeElement.closest('#lightbox') !== null"
        )
        assert inside
    await accessible(page, "the lightbox")
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#lightbox", state="hidden")
    assert await focused(page) == results[1]
    await page.keyboard.press("s")
    await on_page(page, "() => document.getElementById('round').textContent === 'Round 2 of 2'")
    await on_page(page, "() => document.activeElement.classList.contains('open')")
    assert await page.is_visible("#query-chip")
    assert "like" in (await page.text_content("#chip-text") or "")


async def test_lightbox_rendition_information_zoom_and_swipe(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    """The lightbox sends a screen-sized picture (a 5120x2880 wallpaper comes 2560 wide), shows
    name, folder, date (Undated without EXIF), camera, pixels, file size and format, zooms, and
    swipes to the next photo."""
    from image_search.store import image_key

    big = next(served.root.rglob("*5120x2880.png"))
    camera = served.root / "camera" / "IMG_1.jpg"
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    make_photo(camera, (640, 480), seed=9, exif=exif)
    await index_folder(served.store, served.root, served.embedder, batch_size=16)
    await followed(served)
    await search(page, "a photo")
    for path in (big, camera):
        key = image_key(str(path))
        await on_page(page, "k => !!document.querySelector(`#grid .tile[data-id='${k}']`)", key, limit=20)
    await page.locator(f"#grid .tile[data-id='{image_key(str(big))}'] .open").click()
    await page.wait_for_selector("#lightbox[open]")
    await on_page(page, "() => document.getElementById('lb-img').naturalWidth > 0")
    assert await page.evaluate("document.getElementById('lb-img').naturalWidth") == 2560
    facts = await page.eval_on_selector_all("#lb-facts dd", "ds => ds.map(d => d.textContent)")
    assert facts[0] == big.name and facts[2] == "Undated" and facts[4] == "5120 × 2880" and facts[6] == "PNG"
    await on_page(page, "() => document.querySelectorAll('#lb-facts dd')[5].textContent.endsWith('MB')")
    assert "original=1" in (await page.get_attribute("#lb-original", "href") or "")
    await page.keyboard.press("z")
    assert await page.get_attribute("#lb-zoom", "aria-pressed") == "true"
    assert await page.evaluate("document.getElementById('lb-img').getBoundingClientRect().width") == 2560
    await page.keyboard.press("z")
    await page.screenshot(path=ARTIFACTS / "03-lightbox.png")
    before = await page.text_content("#lb-title")
    box = await page.locator("#lb-stage").bounding_box()
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] * 0.8, y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.2, y, steps=5)
    await page.mouse.up()
    await on_page(page, "t => document.getElementById('lb-title').textContent !== t", before)
    await page.keyboard.press("Escape")
    await page.locator(f"#grid .tile[data-id='{image_key(str(camera))}'] .open").click()
    await on_page(page, "() => document.querySelectorAll('#lb-facts dd')[3].textContent === 'Canon EOS R5'")


async def test_upload_a_picture_and_copy_paths(page, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    picture = photo_dir / "generated" / "07.jpg"
    await page.set_input_files("#upload", str(picture))
    await page.wait_for_selector("#grid .tile img")
    top = page.locator("#grid .tile").nth(0)
    assert "07.jpg" in (await top.locator(".open").get_attribute("aria-label") or "")
    assert await page.is_visible("#query-chip") and "picture" in (await page.text_content("#chip-text") or "")
    first = await ids(page)
    await page.reload()  # the picture is kept by the server: the round replays without it
    await on_page(page, "() => document.getElementById('round').textContent === 'Round 1 of 1'")
    assert await wait_for_new_grid(page, []) == first
    await on_page(page, "() => document.getElementById('chip-img').naturalWidth > 0")
    await page.locator("#grid .tile").nth(0).hover()
    await page.locator("#grid .tile").nth(0).locator("button.like").click()
    await page.click("#tray-toggle")
    await page.click("#copy-paths")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == str(picture)
    await page.screenshot(path=ARTIFACTS / "04-upload.png")


async def test_a_phone(browser, server: str) -> None:  # type: ignore[no-untyped-def]
    """390x844 with touch: the first photo starts within the top 300 px, every touch target is
    44x44 or more, names and dates show without hover, Refine stays on screen while judging far
    down, nothing scrolls sideways."""
    page = await open_page(browser, server, PHONE)
    results = await search(page, "city at night")
    top = await page.evaluate("document.querySelector('#grid .tile').getBoundingClientRect().top")
    assert top <= 300, top
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert await page.is_visible("#grid .tile .caption .name")
    small = await page.evaluate(
        """() => [...document.querySelectorAll('button, a, select, .query, label.button, label.keep-choice')]
          .filter(e => e.offsetParent !== null && !e.closest('.visually-hidden'))
          .map(e => [e.id || e.className || e.tagName, e.getBoundingClientRect()])
          .filter(([, r]) => r.width > 0 && (r.width < 44 || r.height < 44))
          .map(([name, r]) => `${name} ${Math.round(r.width)}x${Math.round(r.height)}`)"""
    )
    assert not small, small
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    last = page.locator("#grid .tile").nth(len(results) - 1)
    await last.locator("button.like").tap()
    assert await page.text_content("#liked-count") == "1"
    refine = await page.locator("#refine").bounding_box()
    assert refine and 0 <= refine["y"] and refine["y"] + refine["height"] <= 844
    await accessible(page, "the phone's results")
    await page.screenshot(path=ARTIFACTS / "05-phone.png")
    await last.locator(".open").tap()
    await page.wait_for_selector("#lightbox[open]")
    await accessible(page, "the phone's lightbox")
    await page.screenshot(path=ARTIFACTS / "05-phone-lightbox.png")
    assert not page.errors


async def test_timeline_by_month(page) -> None:  # type: ignore[no-untyped-def]
    await page.click("#filters-toggle")
    await page.select_option("#view", "timeline")
    await page.fill("#min-score", "-1")
    await page.dispatch_event("#min-score", "change")
    await page.fill("#q", "a photo")
    await page.press("#q", "Enter")
    await page.wait_for_selector("#grid .month .tile img")
    headings = await page.eval_on_selector_all("#grid .month h3", "hs => hs.map(h => h.textContent)")
    assert headings[-4:-1] == ["March 2021 · 1", "January 2021 · 1", "July 2019 · 1"]
    assert headings[-1].startswith("Undated · "), (
        "photos without a date taken are Undated, not dated by file time"
    )
    years = await page.eval_on_selector_all("#years a", "as => as.map(a => a.textContent)")
    assert [y.split(" · ")[0] for y in years][-3:] == ["2021", "2019", "Undated"]
    total = sum(int(y.split(" · ")[1]) for y in years)
    assert total == len(await ids(page))
    await page.click("#years a >> text=2019")
    await accessible(page, "the timeline")
    await page.screenshot(path=ARTIFACTS / "06-timeline.png")
    # A higher minimum score keeps fewer pictures.
    n = len(await ids(page))
    await page.fill("#min-score", "0.5")
    await page.dispatch_event("#min-score", "change")
    await on_page(page, "n => document.querySelectorAll('#grid .tile').length < n", n)
    assert await page.text_content("#round") == "Round 1 of 1"


async def test_honest_states(
    browser, page, served: Served, tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:  # type: ignore[no-untyped-def]
    """An inverted date range says so, as an error; a search made while photos arrive offers
    them; an empty library names its watched folders."""
    await search(page, "a photo")
    await page.click("#filters-toggle")
    await page.fill("#from", "2022-05-01")
    await page.dispatch_event("#from", "change")
    await page.fill("#to", "2021-01-01")
    await page.dispatch_event("#to", "change")
    await on_page(page, "() => document.getElementById('message').textContent.includes('is after')")
    assert await page.get_attribute("#message", "role") == "alert"
    assert "error" in (await page.get_attribute("#message", "class") or "")
    await accessible(page, "an error")
    await page.fill("#from", "")
    await page.dispatch_event("#from", "change")
    await on_page(page, "() => !document.getElementById('message').classList.contains('error')")
    for i in range(3):
        make_photo(served.root / "arrived" / f"{i}.jpg", seed=900 + i)
    await index_folder(served.store, served.root, served.embedder, batch_size=16)
    await on_page(page, "() => !document.getElementById('fresh').hidden", limit=20)
    assert "3 photos indexed since this search" in (await page.text_content("#fresh") or "")
    await page.click("#fresh-show")
    await on_page(page, "() => document.getElementById('fresh').hidden")

    empty_root = tmp_path / "Empty"
    empty_root.mkdir()
    async with Store("mem://") as store:
        config = app_config(tmp_path, tiny_model_dir, roots=[str(empty_root)])
        app = create_app(config, store=store, text_embedder=text_embedder)
        async with TestServer(app, host="127.0.0.1") as srv:
            empty = await open_page(browser, f"http://127.0.0.1:{srv.port}")
            await on_page(
                empty, "f => document.getElementById('message').textContent.includes(f)", str(empty_root)
            )
            assert "empty" in (await empty.text_content("#message") or "")
            await accessible(empty, "an empty library")
            await empty.screenshot(path=ARTIFACTS / "10-empty-library.png")


async def test_the_lightbox_shows_a_heic_and_a_dng(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    """An iPhone photo (HEIC) and a camera's RAW (DNG), which no browser shows, open as pictures:
    the server sends a WebP rendition; the original stays a link away. A RAW + JPEG pair shows
    once, as its JPEG, badged, with the RAW a link away in the lightbox."""
    from image_search.pictures.imaging import configure_pillow
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
    name = await page.text_content("#model")
    assert await page.get_attribute("#model", "aria-label") == f"Model: {name}"
    # Its panel: the model's full name, and what embedding the library again with another costs.
    await page.click("#model")
    await on_page(page, "() => !!document.querySelector('#model-panel:not([hidden]) li')")
    panel = await page.text_content("#model-panel")
    assert f"local:{name}:" in panel and "google/siglip2-base-patch16-224" in panel, panel
    assert "not measured here" in panel and "image-search benchmark --model ID" in panel, panel
    await accessible(page, "the model panel")
    await page.click("#model")
    assert await page.is_hidden("#model-panel")
    await page.fill("#q", "a photo")
    await page.press("#q", "Enter")
    for path, width, shot in ((phone, 1200, "09-lightbox-heic"), (camera, 450, "09-lightbox-dng")):
        key = image_key(str(path))
        tile = f"#grid .tile[data-id='{key}'] .open"
        await on_page(page, "sel => !!document.querySelector(sel)", tile, limit=20)
        await page.locator(tile).click()
        await page.wait_for_selector("#lightbox[open]")
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
    await page.locator(f"{shot} .open").click()
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


async def test_album_save_visit_new_lightbox_edit_rename_delete(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    first = await search(page, "a photo of a meadow")
    await page.locator("#grid .tile").nth(0).hover()
    await page.locator("#grid .tile").nth(0).locator("button.like").click()
    await page.fill("#q", "")  # the album is "pictures like this one"
    await page.click("#filters-toggle")
    await page.fill("#min-score", "0.99")
    await page.dispatch_event("#min-score", "change")
    await page.click("#tray-toggle")
    await page.click("#save-album")
    await page.fill("#album-name", "Meadows")
    await page.click("#album-save")
    await on_page(page, "() => document.getElementById('tray-note').textContent.startsWith('Saved')")

    await page.click("#nav-albums")
    await page.wait_for_selector(".album-card")
    assert "Meadows" in await page.text_content(".album-card")
    await accessible(page, "the album list")
    await page.click(".album-card a")
    await page.wait_for_selector("#album-grid .tile img")
    members = await page.eval_on_selector_all("#album-grid .tile", "ts => ts.map(t => t.dataset.id)")
    assert first[0] in members
    assert await page.eval_on_selector_all("#album-grid .new", "ts => ts.length") == 0

    # A copy of a liked photo arrives: it joins the album by itself, marked new once.
    liked_path = (await served.store.get_one(first[0]))["path"]
    copy = served.root / "later" / ("copy-" + Path(liked_path).stem + ".jpg")
    copy.parent.mkdir()
    with Image.open(liked_path) as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(copy)
    async with Indexer(served.store, served.embedder, workers=1) as indexer:
        await indexer.index([FileRef(str(copy), str(served.root))])
    album_url = page.url
    await page.goto(served.url + "/#/albums")  # the nav says so within a status poll or two
    await on_page(page, "() => document.getElementById('albums-new').textContent === '1 new'", limit=30)
    await on_page(page, "() => document.querySelector('.album-card').textContent.includes('1 new')")
    for _ in range(50):
        await page.goto(served.url + "/#/albums")
        await page.goto(album_url)
        await page.wait_for_selector("#album-grid .tile")
        if await page.eval_on_selector_all("#album-grid .new", "ts => ts.length"):
            break
        await asyncio.sleep(0.2)
    new = await page.eval_on_selector_all("#album-grid .new", "ts => ts.map(t => t.dataset.id)")
    assert len(new) == 1 and "new since your last visit" in await page.text_content("#album-counts")
    await accessible(page, "an album")
    await page.screenshot(path=ARTIFACTS / "07-album-new.png")

    # The album's photos open in the page's lightbox; a reject there feeds "Edit search".
    await page.locator(f"#album-grid .tile[data-id='{new[0]}'] .open").click()
    await page.wait_for_selector("#lightbox[open]")
    await page.keyboard.press("x")
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#lightbox", state="hidden")
    assert await page.evaluate("document.activeElement.closest('.tile').dataset.id") == new[0]
    assert "1 new choice" in await page.text_content("#album-edit")

    await page.click("#album-rename")
    await page.fill("#rename-name", "Green meadows")
    await page.press("#rename-name", "Enter")
    await on_page(page, "() => document.getElementById('album-title').textContent === 'Green meadows'")
    async with page.expect_download() as download:
        await page.click("#album-export")
    listed = Path(await (await download.value).path()).read_text().splitlines()
    assert str(copy) in listed and liked_path in listed
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
    await page.wait_for_selector("#search-page:not([hidden])")
    await on_page(page, "() => document.getElementById('round').textContent === 'Round 1 of 1'")
    assert await page.text_content("#liked-count") == "1"
    assert await page.text_content("#rejected-count") == "1"
    assert await page.input_value("#min-score") == "0.99"
    await page.click("#tray-toggle")
    assert "Green meadows" in await page.text_content("#save-album")

    await page.goto(album_url)
    await page.wait_for_selector("#album-grid .tile")
    await page.click("#album-delete")
    assert "photos stay" in await page.text_content("#album-delete")
    await page.click("#album-delete")
    await page.wait_for_selector("#album-list li.note")
    assert await page.text_content("#album-list") == "No albums yet."
    assert Path(liked_path).exists() and copy.exists()


async def test_an_album_without_a_liked_photo_takes_its_best_match_as_cover(page) -> None:  # type: ignore[no-untyped-def]
    await search(page, "a photo of a meadow")
    await page.click("#tray-toggle")
    await page.click("#save-album")
    await page.fill("#album-name", "Words only")
    await page.click("#album-save")
    await on_page(page, "() => document.getElementById('tray-note').textContent.startsWith('Saved')")
    await page.click("#nav-albums")
    await page.wait_for_selector(".album-card")
    if "0 photos" not in (await page.text_content(".album-card") or ""):
        await on_page(page, "() => document.querySelector('.album-card img')?.naturalWidth > 0")


async def test_duplicates_page(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    """The meadow and its smaller copy are a group; so are Debian's identical wallpaper files
    (photo_dir holds several copies of one of them). Each group keeps its largest copy unless
    told otherwise, by keyboard too; the others' paths export as lines or NUL-separated."""
    await page.click("#nav-duplicates")
    await page.wait_for_selector(".dup-group .dup-item img")
    groups = await page.eval_on_selector_all(
        ".dup-group",
        "gs => gs.map(g => [...g.querySelectorAll('.dup-item')].map(i => "
        "[i.classList.contains('keep'), i.querySelector('.caption').textContent,"
        " i.querySelector('.dims').textContent]))",
    )
    meadow_index = next(
        n for n, g in enumerate(groups) if any(c == "exports/meadow-small.jpg" for _, c, _ in g)
    )
    meadow = groups[meadow_index]
    assert len(meadow) == 2 and meadow[0][0] and not meadow[1][0]
    for group in groups:
        assert group[0][0] and not any(keep for keep, _, _ in group[1:])
        assert all("×" in dims and "B" in dims for _, _, dims in group)
    copies = sum(len(g) - 1 for g in groups)
    assert f"{len(groups)} groups: {copies} smaller copies" in await page.text_content("#dup-summary")
    await on_page(
        page, "() => [...document.querySelectorAll('.dup-item img')].every(i => i.naturalWidth > 0)"
    )
    if len(groups) > 1:  # several groups share a row on a desktop screen
        tops = await page.eval_on_selector_all(".dup-group", "gs => gs.slice(0, 2).map(g => g.offsetTop)")
        assert tops[0] == tops[1]
    await accessible(page, "near-duplicates")
    await page.screenshot(path=ARTIFACTS / "08-duplicates.png")
    # Keep the smaller meadow instead, with the keyboard: the radio group's arrow keys.
    group = page.locator(".dup-group").nth(meadow_index)
    await group.locator("input[type=radio]").nth(0).focus()
    await page.keyboard.press("ArrowRight")
    assert await group.locator("input[type=radio]").nth(1).is_checked()
    async with page.expect_download() as download:
        await page.click("#dup-export-lines")
    saved = Path(await (await download.value).path()).read_text().splitlines()
    assert len(saved) == copies and str(served.root / "exports" / "meadow-small.jpg") not in saved
    meadow_original = next(p for p in saved if p.endswith("GreenMeadow.jpg"))
    assert Path(meadow_original).exists() and all(Path(p).exists() for p in saved)
    async with page.expect_download() as download:
        await page.click("#dup-export-nul")
    raw = Path(await (await download.value).path()).read_bytes()
    assert raw.split(b"\0")[:-1] == [p.encode() for p in saved] and raw.endswith(b"\0")
    async with page.expect_download() as download:
        await page.click("#dup-export")
    smaller = Path(await (await download.value).path()).read_text().splitlines()
    assert len(smaller) == copies and str(served.root / "exports" / "meadow-small.jpg") in smaller


async def test_every_page_on_a_phone_is_accessible(browser, server: str) -> None:  # type: ignore[no-untyped-def]
    """axe-core finds nothing on a 390x844 touch screen: results with the tray and the filters
    open, the timeline, the albums, an album, the near-duplicates; and nothing scrolls sideways."""
    page = await open_page(browser, server, PHONE)
    await search(page, "a photo")
    await page.locator("#grid .tile").nth(0).locator("button.like").tap()
    await page.tap("#tray-toggle")
    await page.tap("#filters-toggle")
    await accessible(page, "phone: tray and filters open")
    await page.fill("#min-score", "-1")  # the tiny model's scores: below any "fair match"
    await page.dispatch_event("#min-score", "change")
    await page.select_option("#view", "timeline")
    await page.wait_for_selector("#grid .month .tile")
    await accessible(page, "phone: timeline")
    await page.tap("#save-album")
    await page.fill("#album-name", "Phone album")
    await page.tap("#album-save")
    await on_page(page, "() => document.getElementById('tray-note').textContent.startsWith('Saved')")
    await page.goto(server + "/#/albums")
    await page.wait_for_selector(".album-card")
    await accessible(page, "phone: albums")
    await page.tap(".album-card a")
    await page.wait_for_selector("#album-grid .tile")
    await accessible(page, "phone: an album")
    await page.screenshot(path=ARTIFACTS / "11-phone-album.png")
    await page.goto(server + "/#/duplicates")
    await page.wait_for_selector(".dup-group")
    await accessible(page, "phone: near-duplicates")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=ARTIFACTS / "12-phone-duplicates.png")
    assert not page.errors
