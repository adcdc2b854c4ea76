"""The web API through the real app factory and real HTTP on loopback."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.store import Store, image_key
from image_search.webui import create_app

from .conftest import app_config, make_photo, until


@pytest.fixture
async def client(
    library: tuple[Store, Path], tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> AsyncIterator[TestClient]:
    store, _ = library
    app = create_app(
        app_config(tmp_path, tiny_model_dir), store=store, text_embedder=text_embedder, follow_interval=0.2
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def search(client: TestClient, **body: object) -> dict:
    response = await client.post("/api/search", json=body)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_health_and_status(client: TestClient, library: tuple[Store, Path]) -> None:
    assert (await (await client.get("/api/health")).json()) == {"status": "ok"}
    status = await (await client.get("/api/status")).json()
    total = len(list(library[1].rglob("*.*")))
    assert status["indexed"] == total and status["queue"] == 0 and status["searchable"] == total


async def test_text_search_contract_and_pagination(client: TestClient) -> None:
    page = await search(client, text="a photo of a dog on the beach", limit=5)
    results = page["results"]
    assert len(results) == 5
    for r in results:
        assert {"id", "score", "path", "thumbnail", "taken_at", "width", "height"} <= set(r)
        assert not r["path"].startswith("/")  # relative to its root
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    rest = await search(client, text="a photo of a dog on the beach", limit=5, offset=5)
    everything = await search(client, text="a photo of a dog on the beach", limit=10)
    assert [r["id"] for r in everything["results"]] == [r["id"] for r in results + rest["results"]]


async def test_refine_moves_results_and_keeps_judged_out(client: TestClient) -> None:
    first = (await search(client, text="mountain", limit=12))["results"]
    liked = [r["id"] for r in first[6:9]]
    rejected = [first[0]["id"]]
    second = (await search(client, text="mountain", liked=liked, rejected=rejected, limit=12))["results"]
    ids = [r["id"] for r in second]
    assert not set(ids) & set(liked + rejected)
    # The query moved: the photos both rounds show score otherwise (with the tiny random model
    # their order may not change, so the scores tell).
    before = {r["id"]: r["score"] for r in first}
    moved = [abs(r["score"] - before[r["id"]]) for r in second if r["id"] in before]
    assert moved and max(moved) > 1e-3, moved
    no_text = (await search(client, liked=liked, limit=3))["results"]
    assert len(no_text) == 3


async def test_query_arithmetic_is_reported(client: TestClient) -> None:
    page = await search(client, text="beach + sunset - people", limit=3)
    assert page["terms"] == [
        {"weight": 1.0, "text": "beach"},
        {"weight": 1.0, "text": "sunset"},
        {"weight": -1.0, "text": "people"},
    ]


async def test_filters_sort_and_min_score(client: TestClient, library: tuple[Store, Path]) -> None:
    root = str(library[1])
    in_2021 = (await search(client, text="photo", limit=50, filters={"root": root, "folder": "2021"}))[
        "results"
    ]
    assert {r["path"] for r in in_2021} == {"2021/winter.jpg", "2021/plain.png"}
    dated_range = (
        await search(
            client, text="photo", limit=50, filters={"taken_from": "2019-01-01", "taken_to": "2019-12-31"}
        )
    )["results"]
    assert [r["path"] for r in dated_range] == ["2019/summer.jpg"]
    pngs = (await search(client, text="photo", limit=50, filters={"formats": ["png"]}))["results"]
    assert pngs and all(r["format"] == "PNG" for r in pngs)
    by_date = (await search(client, text="photo", limit=50, sort="date"))["results"]
    stamps = [r["taken_at"] for r in by_date]
    dated = [s for s in stamps if s is not None]  # newest first, then the undated ones
    assert dated and stamps == sorted(dated, reverse=True) + [None] * (len(stamps) - len(dated))
    top = (await search(client, text="photo", limit=50))["results"]
    cut = top[2]["score"]
    assert all(
        r["score"] >= cut for r in (await search(client, text="photo", limit=50, min_score=cut))["results"]
    )


async def test_more_like_this(
    client: TestClient, image_embedder: ImageEmbedder, library: tuple[Store, Path]
) -> None:
    anchor = (await search(client, text="photo", limit=1))["results"][0]
    response = await client.post(f"/api/images/{anchor['id']}/similar", json={"limit": 3})
    assert response.status == 200
    results = (await response.json())["results"]
    assert anchor["id"] not in [r["id"] for r in results]
    keys, matrix = await library[0].load_embeddings(image_embedder.source.model_id)
    vectors = matrix.astype(np.float32)
    me = vectors[keys.index(anchor["id"])]
    order = [keys[i] for i in np.argsort(-(vectors @ me)) if keys[i] != anchor["id"]]
    assert [r["id"] for r in results] == order[:3]


async def test_upload_a_picture_as_the_query(client: TestClient, library: tuple[Store, Path]) -> None:
    photo = library[1] / "2019" / "summer.jpg"
    form = FormData()
    form.add_field("query", '{"limit": 3}', content_type="application/json")
    form.add_field("image", photo.read_bytes(), filename="summer.jpg", content_type="image/jpeg")
    response = await client.post("/api/search", data=form)
    assert response.status == 200, await response.text()
    results = (await response.json())["results"]
    assert results[0]["id"] == image_key(str(photo)) and results[0]["score"] > 0.99


async def test_upload_errors(client: TestClient) -> None:
    form = FormData()
    form.add_field("image", b"definitely not a picture", filename="x.jpg", content_type="image/jpeg")
    response = await client.post("/api/search", data=form)
    assert response.status == 415 and "not a usable image" in (await response.json())["error"]
    big = FormData()
    big.add_field(
        "image", io.BytesIO(b"\0" * (21 * 1024 * 1024)), filename="big.jpg", content_type="image/jpeg"
    )
    response = await client.post("/api/search", data=big)
    assert response.status == 413
    empty = FormData(default_to_multipart=True)
    empty.add_field("query", "{}")
    assert (await client.post("/api/search", data=empty)).status == 400


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"text": 5}', 400, "text must be"),
        (b'{"text": "x", "limit": "ten"}', 400, "limit"),
        (b'{"text": "x", "limit": 100000}', 400, "limit"),
        (b'{"text": "x", "liked": "abc"}', 400, "liked"),
        (b'{"text": "x", "sort": "random"}', 400, "sort"),
        (b'{"text": "x", "filters": {"taken_from": "yesterday"}}', 400, "taken_from"),
        (b'{"text": ""}', 400, "nothing to search for"),
        (b'{"liked": ["0123456789abcdef0123456789abcdef"]}', 404, "unknown image id"),
    ],
)
async def test_bad_search_input(client: TestClient, body: bytes, status: int, message: str) -> None:
    response = await client.post("/api/search", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    assert message in (await response.json())["error"]


async def test_long_and_unicode_queries(client: TestClient) -> None:
    # 140 words: far past CLIP's 77 tokens (truncated, never an error), within the 1,000 characters.
    assert len((await search(client, text="sunset " * 140, limit=2))["results"]) == 2
    too_long = await client.post("/api/search", json={"text": "sunset " * 1500})
    assert too_long.status == 400 and "1,000 characters" in (await too_long.json())["error"]
    assert len((await search(client, text="日没のビーチ 🌅", limit=2))["results"]) == 2


async def test_image_by_id(client: TestClient, library: tuple[Store, Path]) -> None:
    photo = library[1] / "2021" / "plain.png"
    response = await client.get(f"/api/images/{image_key(str(photo))}")
    assert response.status == 200 and response.content_type == "image/png"
    assert await response.read() == photo.read_bytes()
    meta = await (await client.get(f"/api/images/{image_key(str(photo))}/meta")).json()
    assert meta["path"] == "2021/plain.png"
    for bad in ("0" * 32, "nothing", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd"):
        response = await client.get(f"/api/images/{bad}")
        assert response.status == 404, bad


async def test_thumbnails_are_cached_with_etags(
    client: TestClient, library: tuple[Store, Path], tmp_path: Path
) -> None:
    key = image_key(str(library[1] / "2019" / "summer.jpg"))
    response = await client.get(f"/api/images/{key}/thumbnail")
    assert response.status == 200 and response.content_type == "image/webp"
    etag = response.headers["ETag"]
    assert "max-age" in response.headers["Cache-Control"]
    image = Image.open(io.BytesIO(await response.read()))
    assert max(image.size) == 256
    assert list((tmp_path / "cache" / "thumbs").rglob("*-256.webp"))
    again = await client.get(f"/api/images/{key}/thumbnail", headers={"If-None-Match": etag})
    assert again.status == 304
    large = await client.get(f"/api/images/{key}/thumbnail?size=1024&format=jpeg")
    assert large.status == 200 and large.content_type == "image/jpeg"
    assert (await client.get(f"/api/images/{key}/thumbnail?size=5000")).status == 400
    assert (await client.get(f"/api/images/{key}/thumbnail?format=gif")).status == 400


async def test_cross_site_and_wrong_host_are_refused(client: TestClient) -> None:
    evil = await client.post("/api/search", json={"text": "x"}, headers={"Origin": "http://evil.example"})
    assert evil.status == 403
    form_post = await client.post(
        "/api/search", data=b"text=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form_post.status == 415
    rebinding = await client.get("/api/status", headers={"Host": "attacker.example:3000"})
    assert rebinding.status == 403
    same_site = await client.post(
        "/api/search", json={"text": "x"}, headers={"Origin": f"http://{client.host}:{client.port}"}
    )
    assert same_site.status == 200


async def test_token_required_beyond_loopback(
    library: tuple[Store, Path], tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:
    config = app_config(tmp_path, tiny_model_dir, host="0.0.0.0")
    config.token = "s3cret-token"
    app = create_app(config, store=library[0], text_embedder=text_embedder)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        assert (await c.get("/api/health")).status == 200
        for method, url in (
            ("GET", "/api/status"),
            ("POST", "/api/search"),
            ("GET", "/api/folders"),
            ("GET", f"/api/images/{'0' * 32}"),
            ("GET", f"/api/images/{'0' * 32}/thumbnail"),
        ):
            response = await c.request(method, url, json={"text": "x"})
            assert response.status == 401, url
        ok = await c.get("/api/status", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status == 200
        wrong = await c.get("/api/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        login = await c.get("/?token=s3cret-token", allow_redirects=False)
        assert login.status == 200 and "Set-Cookie" not in login.headers  # the page trades it
        assert (await c.get("/api/status")).status == 401  # no cookie was set


async def test_generated_token_is_printed_once(
    library: tuple[Store, Path],
    tmp_path: Path,
    tiny_model_dir: Path,
    text_embedder: TextEmbedder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_app(
        app_config(tmp_path, tiny_model_dir, host="0.0.0.0"), store=library[0], text_embedder=text_embedder
    )
    out = capsys.readouterr().out
    assert out.count("access token") == 1 and "?token=" in out


async def test_web_follows_the_store(
    client: TestClient, library: tuple[Store, Path], image_embedder: ImageEmbedder
) -> None:
    """Under `image-search web` the daemon is another process: new, moved and deleted images
    appear within 2 s through the store's change counter."""
    store, root = library
    new = make_photo(root / "new" / "fresh.jpg", seed=77)
    async with Indexer(store, image_embedder, workers=1, batch_size=4) as indexer:
        await indexer.index([FileRef(str(new), str(root))])
    key = image_key(str(new))

    async def visible(expected: bool) -> None:
        async def seen() -> bool:
            page = await search(client, text="photo", limit=200)
            return (key in [r["id"] for r in page["results"]]) == expected

        started = time.monotonic()
        # "Within 2 s" is the figure printed here; the limit only stops a hang (a busy machine lags).
        await until(seen, limit=30, what=f"{key} visible={expected}")
        print(f"\n{key} visible={expected} after {time.monotonic() - started:.2f} s")

    await visible(True)
    moved = root / "new" / "moved.jpg"
    shutil.move(new, moved)
    await store.move([(str(new), str(moved), str(root))])
    key = image_key(str(moved))
    await visible(True)
    await store.delete([key])
    await visible(False)


async def test_page_is_served(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200 and "Content-Security-Policy" in page.headers
    html = await page.text()
    assert 'id="grid"' in html and "/static/main.js" in html
    assert (await client.get("/static/main.js")).status == 200


async def test_tensor_work_runs_on_the_one_compute_thread(
    library: tuple[Store, Path], tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text tower (loaded and run), searches, the library's matrix and an upload's image tower
    run on the app's one compute thread: every other thread that keeps an OpenMP team slows the
    text tower (webui/app.py, ``_compute_ctx``). Loading the upload's tower and grouping
    near-duplicates run on threads that end with the work."""
    import threading

    import image_search.webui.services as services
    from image_search.models.model import ModelSource
    from image_search.search.vectors import VectorIndex

    seen: dict[str, set[str]] = {}

    def spy(owner: object, name: str, bound: bool = False) -> None:
        original = getattr(owner, name)
        target = original.__func__ if bound else original

        def wrapper(*args: object, **kwargs: object) -> object:
            seen.setdefault(name, set()).add(threading.current_thread().name)
            return target(*args, **kwargs)

        monkeypatch.setattr(owner, name, classmethod(wrapper) if bound else wrapper)

    spy(TextEmbedder, "load")
    spy(TextEmbedder, "embed_texts")
    spy(VectorIndex, "build", bound=True)
    spy(VectorIndex, "search_many")
    spy(ImageEmbedder, "load")
    spy(ImageEmbedder, "embed_images")
    spy(services, "group_library")
    store, folder = library
    unloaded = TextEmbedder(ModelSource(str(tiny_model_dir)))
    app = create_app(app_config(tmp_path, tiny_model_dir), store=store, text_embedder=unloaded)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        anchor = (await search(client, text="a dog", limit=2))["results"][0]
        assert (await client.post(f"/api/images/{anchor['id']}/similar", json={"limit": 2})).status == 200
        form = FormData()
        form.add_field("image", (folder / "2019" / "summer.jpg").read_bytes(), filename="s.jpg")
        assert (await client.post("/api/search", data=form)).status == 200
        assert (await client.get("/api/duplicates")).status == 200
    compute = {"compute_0"}
    assert seen == {
        "load": compute | {"upload-model"},  # the text tower's, then the upload's on its own
        "embed_texts": compute,
        "build": compute,
        "search_many": compute,
        "embed_images": compute,
        "group_library": {"duplicates"},
    }
    for thread in threading.enumerate():  # they end with their work (and their teams with them)
        if thread.name in ("upload-model", "duplicates"):
            thread.join(5)
            assert not thread.is_alive(), thread.name


async def test_status_never_reports_a_dead_daemons_state(
    library: tuple[Store, Path], tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:
    """`web` on the embedded database said `state: watching` from the record of a daemon that had
    exited: nothing can write to a database this process holds, so there is no daemon."""
    store, _ = library
    await store.set_status("daemon", {"state": "watching", "queue": 5, "rate": 2.0, "pid": 1})
    app = create_app(app_config(tmp_path, tiny_model_dir), store=store, text_embedder=text_embedder)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        status = await (await c.get("/api/status")).json()
    assert status["state"] == "stopped" and status["queue"] == 0 and status["daemon"] is None
