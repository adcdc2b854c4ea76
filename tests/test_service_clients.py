"""The library commands beside a running service (#20, item 1).

The embedded database is one process's at a time. With `serve` running, `search`, `status`,
`duplicates`, `albums` and `album` become clients of its API and print what they print when they
open the database themselves; `status` adds the service's live state; `index` says why it cannot
run. Real processes, real HTTP, the real embedded engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_search.config import load_config
from image_search.running import Service, announced, find, service_file

from .conftest import free_port, start_serve, until_sync


def cli(*args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "image_search", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == code, proc.stderr
    return proc


def save_album(db: Path, photo: Path) -> None:
    from image_search.search import albums
    from image_search.store import Store, from_bytes, image_key

    async def save() -> None:
        async with Store(f"surrealkv://{db}") as store:
            row = await store.get_one(image_key(str(photo)), embedding=True)
            vector = from_bytes(row["embedding"]).astype(np.float32)
            album = albums.Album(
                name="Meadow", liked=[image_key(str(photo))], min_score=0.2, vector=vector, model=row["model"]
            )
            await albums.save_album(store, album)

    asyncio.run(save())


def outputs(env: dict[str, str]) -> dict[str, object]:
    """What every library command prints, as data."""
    return {
        "search": json.loads(cli("search", "a green meadow", "--limit", "7", "--json", env=env).stdout),
        "search-text": cli("search", "meadow + flower - city", "--limit", "3", env=env).stdout,
        "duplicates": json.loads(cli("duplicates", "--json", env=env).stdout),
        "smaller": cli("duplicates", "--smaller", env=env).stdout,
        "albums": json.loads(cli("albums", "--json", env=env).stdout),
        "album": json.loads(cli("album", "Meadow", "--json", env=env).stdout),
        "album-paths": cli("album", "Meadow", env=env).stdout,
        "status": json.loads(cli("status", "--json", env=env).stdout),
    }


def test_library_commands_are_clients_of_a_running_serve(
    photo_dir: Path, cli_env: dict[str, str], xdg: Path, tmp_path: Path
) -> None:
    env = cli_env
    meadow = next(photo_dir.rglob("*GreenMeadow.jpg"))
    copy = photo_dir / "exports" / "meadow-small.jpg"  # a near-duplicate for `duplicates`
    copy.parent.mkdir()
    with Image.open(meadow) as image:
        image.resize((image.width // 3, image.height // 3)).save(copy, quality=75)
    cli("index", str(photo_dir), env=env)
    db = xdg / "data" / "image-search" / "db"
    save_album(db, meadow)
    alone = outputs(env)
    assert alone["status"]["service"] is None  # type: ignore[index]
    assert "service    not running" in cli("status", env=env).stdout

    port = free_port()
    proc = start_serve([photo_dir], env, port)
    try:
        config = load_config({"database_url": f"surrealkv://{db}"})

        def watching() -> bool:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            if find(config) is None:
                return False
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
                state = json.load(r)
            return state["state"] == "watching" and state["queue"] == 0

        until_sync(watching, limit=180, every=0.3, what="serve watches its folders")
        served = find(config)
        assert served is not None and served.pid == proc.pid and served.url == f"http://127.0.0.1:{port}"
        assert (service_file(config).stat().st_mode & 0o777) == 0o600  # type: ignore[union-attr]

        beside = outputs(env)
        status = beside.pop("status")
        mine = alone.pop("status")
        # Scores come from the same vectors and the same model: equal to the last digit printed.
        assert beside == alone
        same = ("indexed", "failed", "offline", "total", "model", "schema_version", "albums", "failed_files")
        for key in same:
            assert status[key] == mine[key], key  # type: ignore[index]
        live = status["service"]  # type: ignore[index]
        assert live["state"] == "watching" and live["pid"] == proc.pid and live["queue"] == 0
        assert live["url"] == served.url and live["offline_roots"] == []
        text = cli("status", env=env).stdout
        assert f"service    watching  (pid {proc.pid}, url {served.url})" in text, text

        links = tmp_path / "links"
        cli("album", "Meadow", "--links", str(links), env=env)
        assert sorted(p.resolve() for p in links.iterdir()) == sorted(
            Path(p).resolve()
            for p in alone["album-paths"].splitlines()  # type: ignore[attr-defined]
        )
        # One rule with the web UI: no link folder inside a folder the service holds.
        inside = cli("album", "Meadow", "--links", str(photo_dir / "links"), env=env, code=1)
        assert "inside the picture folder" in inside.stderr and not (photo_dir / "links").exists()
        assert "no album called" in cli("album", "Nope", env=env, code=1).stderr
        refused = cli("index", str(photo_dir), env=env, code=1)
        assert f"image-search is running (pid {proc.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, err[-3000:]
    assert not service_file(config).exists()  # type: ignore[union-attr]
    assert cli("status", env=env).stdout.count("service    not running") == 1


def test_a_locked_database_without_a_service_says_who_holds_it(cli_env: dict[str, str], xdg: Path) -> None:
    """`daemon` and `index` hold the database without an API: a clear message, no traceback."""
    from image_search.store import Store

    db = xdg / "data" / "image-search" / "db"

    async def hold() -> subprocess.CompletedProcess[str]:
        async with Store(f"surrealkv://{db}"):
            return await asyncio.to_thread(cli, "status", env=cli_env, code=1)

    refused = asyncio.run(hold())
    assert "is in use by another process" in refused.stderr and "Traceback" not in refused.stderr


def test_the_service_file(tmp_path: Path) -> None:
    """Beside the database folder, owner-only; gone when its process is; only for embedded
    databases (a SurrealDB server has no lock to work around)."""
    config = load_config({"database_url": f"surrealkv://{tmp_path / 'db'}"})
    path = service_file(config)
    assert path == tmp_path / "db.service.json"
    assert find(config) is None
    with announced(config, "http://127.0.0.1:1234", "secret") as written:
        assert written == path and (path.stat().st_mode & 0o777) == 0o600
        assert find(config) is None  # this process's own file: a command in it opens the database
        data = json.loads(path.read_text())
        assert data == {"url": "http://127.0.0.1:1234", "pid": os.getpid(), "token": "secret"}
        parent = os.getppid()  # a live process of this account stands for a running service
        path.write_text(json.dumps(data | {"pid": parent}))
        assert find(config) == Service("http://127.0.0.1:1234", parent, "secret")
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        path.write_text(json.dumps(data | {"pid": int(gone.stdout)}))
        assert find(config) is None  # a process that died without cleaning up
        path.write_text("{not json")
        assert find(config) is None
        path.write_text(json.dumps(data | {"pid": parent}))
    assert path.exists()  # another process's file is not this one's to remove
    for url in ("mem://", "ws://localhost:8000"):
        assert service_file(load_config({"database_url": url})) is None


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:80"), ("0.0.0.0", "http://127.0.0.1:80"), ("::", "http://[::1]:80")],
)
def test_a_wildcard_listener_is_reached_on_loopback(host: str, url: str) -> None:
    from image_search.running import local_url

    assert local_url(host, 80) == url
