"""Bad input against the real server over real HTTP: a fuzzed API, path traversal in every
encoding, hostile file names, huge uploads and image bombs. Only 2xx/4xx answers, each with a
message a user understands, and the server keeps serving.

The fuzzer runs 1,500 cases in CI and 5,000 with ``-m slow`` (see docs/reliability.md)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import resource
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from image_search.cli.serve import serving
from image_search.config import load_config
from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, ModelSource, TextEmbedder
from image_search.pictures.scan import Filter, walk
from image_search.store import Store, image_key
from image_search.webui import create_app

from .conftest import free_port, make_photo


@dataclass
class Server:
    port: int
    root: Path
    ids: list[str]
    outside: Path

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str | bytes] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    """`image-search web` over an indexed folder with hostile names, in its own thread and loop."""
    tmp = tmp_path_factory.mktemp("hostile")
    root = tmp / "Pictures"
    make_photo(root / "plain.jpg", seed=1)
    make_photo(root / ("x" * 200 + ".jpg"), seed=2)  # a 204-byte name
    make_photo(root / "deep" / ("d" * 200) / ("e" * 200) / "long-path.png", seed=3, fmt="PNG")
    make_photo(Path(os.fsdecode(bytes(root) + b"/caf\xe9-latin1.jpg")), seed=4)  # not UTF-8
    # not UTF-8 either, and the same text as the one above once the byte is undecodable (U+FFFD)
    make_photo(Path(os.fsdecode(bytes(root) + b"/caf\xe8-latin1.jpg")), seed=7)
    make_photo(root / "日本語 🌅.webp", seed=5, fmt="WEBP")
    outside = make_photo(tmp / "secret" / "outside.jpg", seed=6)
    (root / "escape.jpg").symlink_to(outside)  # a symlink leading out of the root
    ready: dict[str, object] = {}
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            source = ModelSource(str(tiny_model_dir))
            image_embedder = ImageEmbedder(source, "cpu").load()
            async with Store("mem://") as store:
                await store.check_model(source.model_id)
                files = [FileRef(p, str(root)) for p in walk(str(root), Filter())]
                async with Indexer(store, image_embedder, workers=2, batch_size=8) as indexer:
                    summary = await indexer.index(files)
                config = load_config(
                    {"model": str(tiny_model_dir), "cache_dir": str(tmp / "cache"), "database_url": "mem://"}
                )
                app = create_app(config, store=store, text_embedder=TextEmbedder(source, "int8").load())
                config.port = free_port()
                async with serving(app, config):  # the CLI's own listener
                    ready.update(port=config.port, ids=[image_key(f.path) for f in files], summary=summary)
                    await asyncio.to_thread(stop.wait)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the fixture below
            ready["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while "port" not in ready and "error" not in ready and time.monotonic() < deadline:
        time.sleep(0.05)
    if "error" in ready:
        raise ready["error"]  # type: ignore[misc]
    summary = ready["summary"]
    assert not summary.failed and summary.indexed == 6, summary  # type: ignore[attr-defined]
    yield Server(int(ready["port"]), root, list(ready["ids"]), outside)  # type: ignore[arg-type,call-overload]
    stop.set()
    thread.join(10)


def alive(server: Server) -> None:
    status, body, _ = server.request("GET", "/api/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}


# -- the fuzzer -----------------------------------------------------------------------------------

IDS = st.one_of(
    st.sampled_from(["0" * 32, "f" * 32, "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%00", "a%00b"]),
    st.text(max_size=40).map(lambda s: quote(s, safe="")),
    st.binary(max_size=20).map(lambda b: quote(b, safe="")),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Header values: any bytes but the line breaks that would end the header (http.client refuses them).
HEADER_BYTES = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
FIELDS = {
    "text": st.one_of(st.text(max_size=200), JSON),
    "liked": st.one_of(st.lists(st.text(max_size=34), max_size=3), JSON),
    "rejected": st.one_of(st.lists(st.text(max_size=34), max_size=3), JSON),
    "exclude": JSON,
    "limit": st.one_of(st.integers(-5, 1000), JSON),
    "offset": st.one_of(st.integers(-5, 10**9), JSON),
    "min_score": st.one_of(st.floats(allow_nan=True), JSON),
    "sort": st.one_of(st.sampled_from(["score", "taken", "-taken", "path"]), st.text(max_size=10)),
    "weights": st.one_of(st.dictionaries(st.sampled_from(["text", "liked", "rejected", "x"]), JSON), JSON),
    "filters": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "root": JSON,
                "folder": st.text(max_size=30),
                "taken_from": st.text(max_size=30),
                "taken_to": JSON,
                "formats": JSON,
            },
        ),
        JSON,
    ),
}
SEARCH_BODY = st.fixed_dictionaries({}, optional=FIELDS)


ALBUM_IDS = st.one_of(st.text(alphabet="0123456789abcdef", min_size=16, max_size=16), st.text(max_size=20))


@st.composite
def requests(
    draw: st.DrawFn, ids: list[str], albums: list[str]
) -> tuple[str, str, bytes | None, dict[str, str | bytes]]:
    real = st.sampled_from(ids)
    key = draw(st.one_of(real, IDS))
    kind = draw(st.integers(0, 8))
    if kind == 6:  # albums: save, edit, rename, mark seen (not the folder export: it writes)
        body = draw(SEARCH_BODY)
        if draw(st.booleans()):
            body["name"] = draw(st.one_of(st.text(max_size=40), JSON))
        if draw(st.booleans()):
            body["liked"] = [draw(real)]
        album = quote(draw(st.one_of(st.sampled_from(albums), ALBUM_IDS)), safe="")
        method, path = draw(
            st.sampled_from(
                [
                    ("POST", "/api/albums"),
                    ("PUT", f"/api/albums/{album}"),
                    ("PATCH", f"/api/albums/{album}"),
                    ("POST", f"/api/albums/{album}/seen"),
                    ("DELETE", f"/api/albums/{album}"),
                ]
            )
        )
        payload = None if method == "DELETE" else json.dumps(body).encode()
        return method, path, payload, {"Content-Type": "application/json"} if payload else {}
    if kind == 8:  # any bytes in the headers a server reads (token, cookie, Host) and the query
        name = draw(st.sampled_from(["Authorization", "Cookie", "Sec-Fetch-Site", "If-None-Match", "X-Any"]))
        value = draw(HEADER_BYTES)
        if name == "Authorization" and draw(st.booleans()):
            value = b"Bearer " + value
        if name == "Cookie" and draw(st.booleans()):
            value = b"image_search_session=" + value
        path = draw(st.sampled_from(["/api/status", f"/api/images/{key}/thumbnail", "/api/folders", "/"]))
        raw = draw(st.binary(max_size=30))
        return "GET", path + "?" + quote(raw, safe="=&"), None, {name: value}
    if kind == 7:  # the album and duplicate pages' GETs with any query
        album = quote(draw(st.one_of(st.sampled_from(albums), ALBUM_IDS)), safe="")
        path = draw(
            st.sampled_from(
                [
                    "/api/albums",
                    f"/api/albums/{album}",
                    f"/api/albums/{album}/export",
                    "/api/duplicates",
                    "/api/duplicates/export",
                ]
            )
        )
        query = draw(
            st.dictionaries(
                st.sampled_from(["limit", "offset", "similarity", "hash_bits", "sep"]),
                st.one_of(st.text(max_size=8), st.integers(-5, 600).map(str), st.floats().map(str)),
                max_size=3,
            )
        )
        if query:
            path += "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        return "GET", path, None, {}
    if kind == 0:  # GET anything
        path = draw(
            st.sampled_from(
                [
                    "/api/health",
                    "/api/status",
                    "/api/folders",
                    f"/api/images/{key}",
                    f"/api/images/{key}/meta",
                    f"/api/images/{key}/thumbnail",
                    "/",
                    "/static/main.js",
                    f"/static/{key}",
                ]
            )
        )
        query = draw(
            st.dictionaries(st.sampled_from(["size", "format", "x"]), st.text(max_size=12), max_size=2)
        )
        if query:
            path += "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        return "GET", path, None, {}
    if kind in (1, 2):  # a JSON search, close to valid
        body = draw(SEARCH_BODY)
        if draw(st.booleans()) and "liked" not in body:
            body["liked"] = [draw(real)]
        return "POST", "/api/search", json.dumps(body).encode(), {"Content-Type": "application/json"}
    if kind == 3:  # more like this
        body = draw(st.one_of(SEARCH_BODY, JSON))
        return (
            "POST",
            f"/api/images/{key}/similar",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
    if kind == 4:  # any bytes, any content type
        content_type = draw(
            st.sampled_from(
                ["application/json", "multipart/form-data; boundary=x", "text/plain", "image/jpeg"]
            )
        )
        return "POST", "/api/search", draw(st.binary(max_size=300)), {"Content-Type": content_type}
    # a multipart upload whose image part is junk or a truncated picture
    junk = draw(st.binary(max_size=200))
    blob = draw(st.sampled_from([junk, b"\xff\xd8\xff\xe0" + junk, b"\x89PNG\r\n\x1a\n" + junk]))
    body = (
        b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n'
        + json.dumps(draw(SEARCH_BODY)).encode()
        + b'\r\n--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        + b"Content-Type: image/jpeg\r\n\r\n"
        + blob
        + b"\r\n--b--\r\n"
    )
    return "POST", "/api/search", body, {"Content-Type": "multipart/form-data; boundary=b"}


def fuzz(server: Server, examples: int) -> None:
    seen: dict[int, int] = {}
    status, made, _ = server.request(
        "POST",
        "/api/albums",
        json.dumps({"name": f"fuzz {examples}", "liked": server.ids[:1]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201, made
    albums = [json.loads(made)["id"]]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run: a failure is reproducible
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests(server.ids, albums))
    def case(req: tuple[str, str, bytes | None, dict[str, str | bytes]]) -> None:
        method, path, body, headers = req
        status, payload, answer = server.request(method, path, body, headers)
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (method, path, body, headers, status, payload[:300])
        if status >= 400 and path.startswith("/api/"):
            if "application/json" in answer.get("Content-Type", ""):
                assert json.loads(payload)["error"], payload  # a message, not an empty error
            else:  # refused by the HTTP parser itself, before any route (bytes no header may hold)
                assert status == 400, (headers, payload[:200])

    case()
    alive(server)
    print(f"\nfuzzed {sum(seen.values())} requests: {dict(sorted(seen.items()))}")
    assert seen.get(200, 0) > examples // 10, "the fuzzer hardly reached a working request"


def test_fuzzed_api_never_fails_the_server(server: Server) -> None:
    fuzz(server, 1500)


@pytest.mark.slow
def test_fuzzed_api_never_fails_the_server_full(server: Server) -> None:
    fuzz(server, 5000)


# -- paths ----------------------------------------------------------------------------------------

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..%c0%af..%c0%afetc%c0%afpasswd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "....//....//etc/passwd",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "..;/..;/etc/passwd",
    "%u002e%u002e%u2215etc%u2215passwd",
    "%00../../etc/passwd",
]


@pytest.mark.parametrize("attack", TRAVERSALS)
def test_path_traversal_in_every_encoding(server: Server, attack: str) -> None:
    for path in (
        f"/api/images/{attack}",
        f"/api/images/{attack}/thumbnail",
        f"/static/{attack}",
        f"/{attack}",
    ):
        status, body, _ = server.request("GET", path)
        assert status in (400, 403, 404), (path, status)
        assert b"root:" not in body
    alive(server)


def test_hostile_file_names_are_indexed_and_served(server: Server) -> None:
    """Very long names, a long path, names that are not UTF-8 (two of one text), emoji: each
    indexed and served."""
    for path in walk(str(server.root), Filter()):
        key = image_key(path)
        status, body, _ = server.request("GET", f"/api/images/{key}")
        assert status == 200 and body == Path(path).read_bytes(), path
        status, _, _ = server.request("GET", f"/api/images/{key}/thumbnail")
        assert status == 200, path
        status, meta, _ = server.request("GET", f"/api/images/{key}/meta")
        assert status == 200
        assert json.loads(meta)["path"].startswith(("plain", "x", "deep", "caf", "日本語")), meta


def test_a_symlink_out_of_the_root_is_not_followed(server: Server) -> None:
    assert image_key(str(server.root / "escape.jpg")) not in server.ids
    status, _, _ = server.request("GET", f"/api/images/{image_key(str(server.outside))}")
    assert status == 404


def test_nul_bytes_and_huge_or_empty_queries(server: Server) -> None:
    def search(body: object) -> tuple[int, dict]:
        status, payload, _ = server.request(
            "POST", "/api/search", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        return status, json.loads(payload)

    assert search({"text": "sun\x00set"})[0] == 200
    assert search({"text": "x" * 1_000})[0] == 200
    status, body = search({"text": "x" * 10_000})
    assert status == 400 and "longer than 1,000 characters" in body["error"]
    assert search({"text": "🌅" * 1_000})[0] == 200
    status, body = search({"text": "9" * 400 + ":dog"})  # a weight that was Infinity in the JSON
    assert status == 400 and "weight" in body["error"]
    status, body = search({"text": "   "})
    assert status == 400 and "nothing to search for" in body["error"]
    status, body = search({"text": "beach", "filters": {"folder": "a\x00b"}})
    assert status == 200 and body["results"] == []
    status, _, _ = server.request("GET", "/api/images/%00/meta")
    assert status == 404


# -- uploads and image bombs ----------------------------------------------------------------------


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A valid PNG of ``width`` x ``height`` black pixels, zlib-compressed to a few MB (with
    ``rows``, only that many rows of data follow the header: a file that lies about its size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + 3 * width)
    squeeze = zlib.compressobj(9)
    data = b"".join(squeeze.compress(row) for _ in range(height if rows is None else rows)) + squeeze.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )


def upload(server: Server, blob: bytes) -> tuple[int, str]:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + blob + b"\r\n--b--\r\n"
    )
    status, payload, _ = server.request(
        "POST", "/api/search", body, {"Content-Type": "multipart/form-data; boundary=b"}
    )
    return status, json.loads(payload)["error"] if status != 200 else ""


def test_200_megapixel_png_and_a_declared_giant_are_refused_before_decoding(server: Server) -> None:
    big = png_bomb(16_330, 12_250)  # 200 MP of zeros: 600 MB decoded, ~0.6 MB on the wire
    status, message = upload(server, big)
    assert status == 415 and "200 MP" in message and "max_megapixels=100" in message
    status, message = upload(server, png_bomb(100_000, 100_000, rows=1))
    assert status == 415 and "max_megapixels" in message
    alive(server)


def test_a_1_gb_upload_is_refused_without_reading_it(server: Server) -> None:
    """Announced as 1 GB and streamed: 413 at once, from the announced length, nothing of it
    buffered. (The server drains what the client keeps sending for 2 s at most, then closes.)"""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sent = 0
    started = time.monotonic()
    try:
        conn.putrequest("POST", "/api/search")
        conn.putheader("Content-Type", "multipart/form-data; boundary=b")
        conn.putheader("Content-Length", str(1 << 30))
        conn.endheaders()
        conn.send(b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n')
        chunk = b"\xff" * (1 << 20)
        try:
            while sent < 1 << 30:
                conn.send(chunk)
                sent += len(chunk)
        except OSError:  # the server closed the connection: it stopped reading
            pass
        response = conn.getresponse()
        assert response.status == 413
    finally:
        conn.close()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"\n1 GB upload: refused after {sent >> 20} MiB sent, {time.monotonic() - started:.1f} s")
    assert grown_mib < 100, f"peak memory grew {grown_mib:.0f} MiB"
    alive(server)


def test_image_bomb_in_the_library_is_recorded_not_decoded(
    tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    """A decompression bomb dropped among the photos costs one recorded failure."""
    root = tmp_path / "Pictures"
    make_photo(root / "fine.jpg")
    (root / "bomb.png").write_bytes(png_bomb(16_330, 12_250))

    async def main() -> None:
        async with Store("mem://") as store:
            await store.check_model(image_embedder.source.model_id)
            async with Indexer(store, image_embedder, workers=1, batch_size=4) as indexer:
                summary = await indexer.index([FileRef(p, str(root)) for p in walk(str(root), Filter())])
            assert summary.indexed == 1
            assert len(summary.failed) == 1 and "200 MP" in summary.failed[0][1]

    asyncio.run(main())
