"""Who may call what, and what no request, file or file name can make the server do: each test
here failed before the security review's fixes (see the README's threat model)."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from image_search.config import load_config
from image_search.duplicates.vectorjoin import TooManyPairs, similar_pairs
from image_search.models.model import TextEmbedder
from image_search.pictures.imaging import ImageError, open_checked
from image_search.store import Store, image_key
from image_search.webui import create_app
from webui.peer import _decode, peer_uid
from webui.security import Security, is_loopback

from .conftest import app_config
from .test_web_api import client  # noqa: F401  (fixture)

NOBODY = 65534
ROUTES = [
    ("GET", "/api/status"),
    ("GET", "/api/folders"),
    ("POST", "/api/search"),
    ("GET", "/api/images/{id}"),
    ("GET", "/api/images/{id}/meta"),
    ("GET", "/api/images/{id}/thumbnail"),
    ("POST", "/api/images/{id}/similar"),
    ("GET", "/api/albums"),
    ("POST", "/api/albums"),
    ("POST", "/api/albums/0123456789abcdef/export"),
    ("GET", "/api/duplicates"),
    ("GET", "/api/duplicates/export"),
]
CLIENT = r"""
import json, sys, urllib.request, urllib.error
port, token, routes = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
out = []
for method, path in routes:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    body = b'{"text": "x", "name": "n", "folder": "/tmp/x"}' if method == "POST" else None
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            out.append(r.status)
    except urllib.error.HTTPError as e:
        out.append(e.code)
print(json.dumps(out))
"""


async def statuses_as(uid: int, port: int, routes: list[tuple[str, str]], token: str = "") -> list[int]:
    """The answers to ``routes`` for a client running as another account (Debian's own python3,
    which every account can run)."""
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", CLIENT, str(port), token, json.dumps(routes), user=uid, cwd="/",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.mark.skipif(
    os.getuid() != 0 or not Path("/proc/net/tcp").exists(), reason="needs root and Linux /proc"
)
async def test_another_local_account_is_refused_on_loopback(
    library: tuple[Store, Path], tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:
    store, root = library
    key = image_key(str(root / "2021" / "plain.png"))
    routes = [(m, p.replace("{id}", key)) for m, p in ROUTES]
    for token in ("", "s3cret"):
        config = app_config(tmp_path, tiny_model_dir, token=token or None)
        app = create_app(config, store=store, text_embedder=text_embedder)
        async with TestClient(TestServer(app, host="127.0.0.1")) as owner:
            assert (await owner.get("/api/status")).status == 200  # the owner's browser: nothing to type
            port = owner.server.port
            assert port is not None
            refused = await statuses_as(NOBODY, port, routes)
            assert refused == [401] * len(routes)
            assert await statuses_as(NOBODY, port, [("GET", "/api/health")]) == [200]
            if token:
                assert (await statuses_as(NOBODY, port, [("GET", "/api/status")], token)) == [200]


def test_the_kernel_socket_table_is_read_right(tmp_path: Path) -> None:
    assert _decode("0100007F:0BB8") == (_decode("0100007F:0BB8")[0], 3000)
    assert str(_decode("0100007F:0BB8")[0]) == "127.0.0.1"
    assert str(_decode("00000000000000000000000001000000:0050")[0]) == "::1"
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:9C40 0100007F:0BB8 01 00000000:00000000 00:00000000 00000000  1000        0 1\n"
        "   1: 0100007F:0BB8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2\n"
    )
    assert peer_uid(("127.0.0.1", 40000), ("127.0.0.1", 3000), [str(table)]) == 1000
    assert peer_uid(("::ffff:127.0.0.1", 40000), ("127.0.0.1", 3000), [str(table)]) == 1000
    assert peer_uid(("127.0.0.1", 40001), ("127.0.0.1", 3000), [str(table)]) is None


def test_an_empty_host_is_not_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        not is_loopback("") and not is_loopback("0.0.0.0") and is_loopback("127.0.0.2") and is_loopback("::1")
    )
    security = Security(load_config({"host": "", "cache_dir": str(tmp_path)}))
    assert not security.loopback and security.required and "access token" in capsys.readouterr().out


async def test_cross_site_reads_are_refused(client: TestClient, library: tuple[Store, Path]) -> None:  # noqa: F811
    key = image_key(str(library[1] / "2021" / "plain.png"))
    for path in (
        "/api/status",
        f"/api/images/{key}",
        f"/api/images/{key}/thumbnail",
        "/api/duplicates/export",
    ):
        response = await client.get(path, headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status == 403, path
        assert (await client.get(path, headers={"Sec-Fetch-Site": "same-site"})).status == 403
        same = await client.get(path, headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status == 200 and same.headers["Cross-Origin-Resource-Policy"] == "same-origin"


@pytest.fixture
async def with_token(
    library: tuple[Store, Path], tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> AsyncIterator[TestClient]:
    """A server listening beyond loopback (so the token is required), reached on loopback."""
    config = app_config(tmp_path, tiny_model_dir, host="0.0.0.0", token="s3cret-token")
    app = create_app(config, store=library[0], text_embedder=text_embedder)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def test_no_cookie_a_session_credential_and_signed_picture_urls(
    with_token: TestClient, library: tuple[Store, Path], tmp_path: Path
) -> None:
    """Nothing a browser keeps for this app is sent to another port: no cookie is ever set (a
    cookie reaches every port of the host); the page's credential is for its origin's storage, and
    a picture URL opens one photo for a short time."""
    c = with_token
    page = await c.get("/?token=s3cret-token", allow_redirects=False)
    assert page.status == 200 and "Set-Cookie" not in page.headers
    assert (await c.post("/api/session")).status == 401
    assert (await c.post("/api/session", headers={"Authorization": "Bearer wrong"})).status == 401
    traded = await c.post("/api/session", headers={"Authorization": "Bearer s3cret-token"})
    session = (await traded.json())["session"]
    assert "Set-Cookie" not in traded.headers and "s3cret-token" not in session
    assert (await c.get("/api/status", headers={"Authorization": f"Bearer {session}"})).status == 200
    assert (await c.get("/api/status", headers={"Cookie": f"image_search_session={session}"})).status == 401
    found = await c.post(
        "/api/search", json={"text": "a photo", "limit": 2}, headers={"Authorization": f"Bearer {session}"}
    )
    assert "Set-Cookie" not in found.headers
    first, second = (await found.json())["results"]
    for url in (first["thumbnail"], first["image"], first["original"]):
        assert (await c.get(url)).status == 200, url  # no header: the signature is enough
    assert first["thumbnail"].split("&e=")[1] == second["thumbnail"].split("&e=")[1].replace(
        second["thumbnail"].split("&s=")[1], first["thumbnail"].split("&s=")[1]
    )
    mark = "&e=" + first["image"].split("&e=")[1]
    refused = [
        f"/api/images/{second['id']}{mark.replace('&', '?', 1)}",  # another photo's signature
        f"/api/images/{first['id']}/meta{mark.replace('&', '?', 1)}",  # not a picture route
        f"/api/status{mark.replace('&', '?', 1)}",
        first["image"][:-1] + ("0" if first["image"][-1] != "0" else "1"),  # altered
        first["image"].split("&e=")[0],  # none
    ]
    for url in refused:
        assert (await c.get(url)).status == 401, url
    config = load_config({"host": "0.0.0.0", "token": "s3cret-token", "cache_dir": str(tmp_path)})
    security = Security(config)
    mark = security.sign(first["id"], now=1_000_000)
    expires = int(mark.split("&e=")[1].split("&")[0])
    assert 1_000_000 + 3600 <= expires <= 1_000_000 + 7200  # one to two hours
    request = make_mocked_request("GET", f"/api/images/{first['id']}?v=1{mark}")
    assert security.signed(request, now=expires - 1) and not security.signed(request, now=expires + 1)
    other = Security(load_config({"host": "0.0.0.0", "token": "another", "cache_dir": str(tmp_path)}))
    assert other.session() != security.session()  # a new token: old credentials are worthless
    assert not other.signed(request, now=expires - 1)


def raw_get(port: int, path: str, headers: list[tuple[str, bytes]]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


async def test_hostile_headers_and_bodies_are_400s_not_500s(
    with_token: TestClient, library: tuple[Store, Path]
) -> None:
    c = with_token
    port = c.server.port
    assert port is not None
    for headers in (
        [("Authorization", b"Bearer \xff\xfe\x80")],
        [("Cookie", b"image_search_session=\xff\xfe; x=\xc3")],
        [("Authorization", b"Bearer s3cret-token\xff")],
    ):
        assert await asyncio.to_thread(raw_get, port, "/api/status", headers) == 401
    auth = {"Authorization": "Bearer s3cret-token"}
    nested = "[" * 100_000 + "]" * 100_000
    deep = await c.post("/api/search", data=nested, headers={**auth, "Content-Type": "application/json"})
    assert deep.status == 400
    saved = await c.post(
        "/api/albums",
        json={
            "name": "Junk",
            "text": "photo",
            "filters": {"root": str(library[1]), "junk": {"a": [1] * 50}},
        },
        headers=auth,
    )
    assert saved.status == 201 and (await saved.json())["filters"] == {"root": str(library[1])}
    junk = json.dumps({"name": "Huge", "text": "x", "filters": {"folder": "a" * 5_000_000}}).encode()
    json_headers = {**auth, "Content-Type": "application/json"}
    huge = await c.post("/api/albums", data=io.BytesIO(junk), headers=json_headers)
    assert huge.status == 413  # an album's body needs kilobytes: 5 MB is refused unread
    low = await c.get("/api/duplicates?similarity=0.5&hash_bits=32", headers=auth)
    assert low.status == 400


def test_duplicate_pairs_are_bounded() -> None:
    """A threshold every pair passes is refused before n² pairs are gathered."""
    matrix = np.ones((3000, 8), dtype=np.float32) / np.sqrt(8)
    with pytest.raises(TooManyPairs, match="more than 100,000 candidate pairs"):
        similar_pairs(matrix, 0.5, bf16=False, max_pairs=100_000)
    assert len(similar_pairs(matrix[:400], 0.5, bf16=False, max_pairs=100_000)) == 400 * 399 // 2


def test_only_the_formats_we_index_are_opened(tmp_path: Path) -> None:
    """Pillow's EPS plugin runs Ghostscript: a file that is EPS inside is never handed to it."""
    eps = tmp_path / "holiday.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not an image in a format"):
        open_checked(eps, 100)


async def test_files_are_private_and_thumbnails_never_collide(
    library: tuple[Store, Path], tmp_path: Path, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:
    async with Store(f"surrealkv://{tmp_path / 'data' / 'db'}"):
        pass
    assert (tmp_path / "data").stat().st_mode & 0o077 == 0 and (
        tmp_path / "data" / "db"
    ).stat().st_mode & 0o077 == 0
    app = create_app(app_config(tmp_path, tiny_model_dir), store=library[0], text_embedder=text_embedder)
    key = image_key(str(library[1] / "2019" / "summer.jpg"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        answers = await asyncio.gather(*(c.get(f"/api/images/{key}/thumbnail?size=512") for _ in range(40)))
        assert [a.status for a in answers] == [200] * 40
    files = list((tmp_path / "cache" / "thumbs").rglob("*"))
    assert files and all(f.stat().st_mode & 0o077 == 0 for f in files)
    assert not [f for f in files if f.name.startswith(".")]  # no temporary file left behind


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    "name", ["image-search.service", "image-search-daemon.service", "image-search-web.service"]
)
def test_the_units_expose_little(name: str) -> None:
    unit = Path(__file__).parents[1] / "systemd" / name
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True, cwd="/"
    )
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr).group(1))  # type: ignore[union-attr]
    assert level <= 4.0, out.stdout[-3000:]
    text = unit.read_text()
    for option in (
        "UMask=0077",
        "MemoryMax=",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
    ):
        assert option in text


async def test_text_that_is_not_unicode_is_a_400_and_fails_no_one_else(client: TestClient) -> None:  # noqa: F811
    """A lone surrogate (JSON's "\\ud800") gave 500s from the tokenizer and the store, and failed
    every search batched with it: 15 of 24 ordinary searches, three rounds in a row."""
    hostile = b'{"text": "dog \\ud800"}'
    headers = {"Content-Type": "application/json"}
    assert (await client.post("/api/search", data=hostile, headers=headers)).status == 400
    album = b'{"name": "x\\ud800", "text": "dog"}'
    assert (await client.post("/api/albums", data=album, headers=headers)).status == 400
    for _ in range(3):
        answers = await asyncio.gather(
            client.post("/api/search", data=hostile, headers=headers),
            *(client.post("/api/search", json={"text": f"a photo {n}", "limit": 3}) for n in range(24)),
        )
        assert [a.status for a in answers] == [400] + [200] * 24


async def test_a_batch_that_fails_fails_only_the_request_that_broke_it() -> None:
    """The batcher runs each request alone when their batch fails: one bad input costs one answer."""
    import concurrent.futures

    from image_search.search.queries import Batcher

    def double(items: list[str]) -> list[int]:
        if "bad" in items:
            raise ValueError("bad input")
        return [2 * len(i) for i in items]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batcher: Batcher[str, int] = Batcher(double, pool)
        runner = asyncio.create_task(batcher.run())
        answers = await asyncio.gather(
            *(batcher.submit(i) for i in ["a", "bb", "bad", "ccc"] * 4), return_exceptions=True
        )
        runner.cancel()
    assert [a if isinstance(a, int) else "error" for a in answers] == [2, 4, "error", 6] * 4


async def test_weights_are_bounded(client: TestClient) -> None:  # noqa: F811
    for weights in ({"text": 1e300}, {"liked": -1}, {"rejected": 101}):
        answer = await client.post("/api/search", json={"text": "dog", "weights": weights})
        assert answer.status == 400 and "from 0 to 100" in (await answer.json())["error"]
    fine = await client.post("/api/search", json={"text": "dog", "weights": {"text": 100, "liked": 0}})
    assert fine.status == 200
    assert all(np.isfinite(r["score"]) for r in (await fine.json())["results"])


async def test_bodies_are_judged_by_their_size_before_they_are_read(client: TestClient) -> None:  # noqa: F811
    """A search body needs kilobytes: 256 KB is its ceiling (1 MB for a search's rounds, 20 MB for
    an upload), refused from its Content-Length, and from its bytes when it comes without one."""
    big = json.dumps({"text": "dog", "liked": ["0" * 32] * 9000}).encode()
    assert len(big) > 256 * 1024
    answer = await client.post("/api/search", data=big, headers={"Content-Type": "application/json"})
    assert answer.status == 413 and "256 KB" in (await answer.json())["error"]

    async def chunked():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    answer = await client.post("/api/search", data=chunked(), headers={"Content-Type": "application/json"})
    assert answer.status == 413
    rounds = {"rounds": [{"text": "dog", "marks": {"liked": ["a" * 32] * 2000}}] * 5}
    assert (await client.put(f"/api/rounds/{'b' * 32}", json=rounds)).status == 204  # 330 KB


def test_trees_made_before_the_private_defaults_are_made_private_at_start(tmp_path: Path) -> None:
    """An install from before 0.14 kept 0755 folders and 0644 thumbnails after an upgrade."""
    from image_search.private import make_private

    cache = tmp_path / "cache"
    thumb = cache / "thumbs" / "ab" / "abcd-256.webp"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"x")
    tool = cache / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_bytes(b"#!/bin/sh\n")
    for path, mode in ((cache, 0o755), (cache / "thumbs", 0o755), (thumb, 0o644), (tool, 0o755)):
        path.chmod(mode)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (cache / "link").symlink_to(outside)
    assert make_private(cache) == 6  # cache, thumbs, ab, bin and the two files
    assert {p.stat().st_mode & 0o777 for p in (cache, cache / "thumbs", thumb.parent)} == {0o700}
    assert thumb.stat().st_mode & 0o777 == 0o600 and tool.stat().st_mode & 0o777 == 0o700  # still runs
    assert outside.stat().st_mode & 0o777 == 0o644  # a link's target is left alone
    assert make_private(cache) == 0  # walked once: the marker says so
    thumb.chmod(0o644)
    cache.chmod(0o755)
    assert make_private(cache) == 1  # the tree's own folder is checked every time


async def test_a_huge_or_foreign_file_is_refused_before_it_is_hashed(
    tmp_path: Path, image_embedder: object
) -> None:
    """A 6 GiB sparse ".jpg" took 12.7 s to hash before its format was known (a terabyte one
    would outlast the stuck-indexer watchdog): refused from its size, recorded with the reason; a
    text file named .png from its first bytes."""
    from image_search.pictures.imaging import CropSpec, prepare

    from .conftest import index_folder, make_photo

    root = tmp_path / "Pictures"
    make_photo(root / "fine.jpg", seed=1)
    huge = root / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.truncate(6 << 30)
    (root / "notes.png").write_text("not a picture at all\n" * 100)
    facts = prepare(str(huge), CropSpec(), 100)
    assert facts.hash is None and "6.0 GiB" in (facts.error or "")
    async with Store("mem://") as store:
        summary = await index_folder(store, root, image_embedder)  # type: ignore[arg-type]
        reasons = dict(summary.failed)
        assert summary.indexed == 1 and "GiB" in reasons[str(huge)]
        assert "first bytes" in reasons[str(root / "notes.png")]
        recorded = {row["path"]: row["error"] for row in await store.failures()}
        assert recorded[str(huge)] == reasons[str(huge)]


def test_the_owner_is_asked_of_the_kernel_for_one_socket() -> None:
    """sock_diag answers for the one connection (IPv4, IPv6 and an IPv4 client of a dual-stack
    listener): no socket table is read, so another account's 15k sockets cost the owner nothing
    (parsing /proc/net/tcp took the owner's connections from 6 to 146 ms)."""
    import socket

    from webui.peer import owner

    for family, host, connect in (
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, "::1", "::1"),
        (socket.AF_INET6, "::", "127.0.0.1"),
    ):
        with socket.socket(family) as listener:
            listener.bind((host, 0))
            listener.listen()
            port = listener.getsockname()[1]
            with socket.create_connection((connect, port)) as client:
                accepted, peer = listener.accept()
                with accepted:
                    local = accepted.getsockname()[:2]
                    assert owner(peer[:2], local, ["/nonexistent"]) == os.getuid()
                    assert client.getsockname()[1] == peer[1]
        assert owner(("127.0.0.1", 1), ("127.0.0.1", port), ["/nonexistent"]) is None


MEASURE_DECODE = r"""
import resource, sys
from image_search.pictures.imaging import CropSpec, configure_pillow, load_upright
configure_pillow()
path, small, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
load_upright(small, 1000, CropSpec(side, side, side))  # the same kind of file, 64x64: imports warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
picture = load_upright(path, 1000, CropSpec(shortest_edge=side, crop_height=side, crop_width=side))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, picture.mode, *picture.size)
"""


@pytest.mark.parametrize("mode", ["I;16", "I;16-tiff", "F", "1", "CMYK", "P", "LA"])
def test_decoding_any_mode_costs_at_most_twice_its_8_bit_rgb(tmp_path: Path, mode: str) -> None:
    """A 16-bit or float picture was widened to float64 whole (a 212 KB 16-bit PNG of 100 MP cost
    2.7 GB): it is brought to 8 bits a band of rows at a time, then reduced. Growth while a 16 MP
    picture of each mode is decoded for a thumbnail, in a process of its own (peak RSS): at most
    twice its 8-bit RGB size, decoded picture included."""
    import sys

    from PIL import Image

    size = 4000

    def picture(n: int) -> Image.Image:
        ramp = np.add.outer(np.arange(n), np.arange(n)) * (size // n)
        if mode.startswith("I;16"):
            return Image.fromarray((ramp * 8).astype(np.uint16))
        if mode == "F":
            return Image.fromarray((ramp / (2 * size)).astype(np.float32))
        return Image.fromarray((ramp % 256).astype(np.uint8)).convert("RGB").convert(mode)

    suffix = ".tif" if mode in ("F", "CMYK", "I;16-tiff") else ".png"
    path, small = tmp_path / f"x{suffix}", tmp_path / f"small{suffix}"
    picture(size).save(path)
    picture(64).save(small)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE_DECODE, str(path), str(small), "128"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    grown_kb, shown, width, height = out.stdout.split()
    assert shown == "RGB" and min(int(width), int(height)) >= 128
    rgb_kb = size * size * 3 // 1024
    assert int(grown_kb) <= 2 * rgb_kb, f"{mode}: {int(grown_kb) >> 10} MB for a {rgb_kb >> 10} MB picture"
