"""Shared fixtures: a tiny real CLIP checkpoint, real photos, and real SurrealDB stores."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from image_search.config import Config, load_config
from image_search.indexing.indexer import Indexer
from image_search.indexing.plan import FileRef, Summary
from image_search.models.model import ImageEmbedder, ModelSource, TextEmbedder
from image_search.pictures.scan import Filter, walk
from image_search.store import Store
from image_search.testing import build_tiny_clip

WALLPAPER_DIRS = [Path("/usr/share/wallpapers"), Path("/usr/share/backgrounds")]
# Real photos shipped by Debian's plasma-workspace-wallpapers, gnome-backgrounds, mate-backgrounds.
REAL_PHOTOS = [
    "/usr/share/backgrounds/mate/nature/GreenMeadow.jpg",
    "/usr/share/backgrounds/mate/nature/YellowFlower.jpg",
    "/usr/share/backgrounds/mate/abstract/Silk.png",
    "/usr/share/backgrounds/gnome/grid-l.webp",
    "/usr/share/wallpapers/Altai/contents/images/5120x2880.png",
]


def all_wallpapers() -> list[Path]:
    found = []
    for base in WALLPAPER_DIRS:
        for path in sorted(base.rglob("*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"} and path.is_file():
                found.append(path)
    return found


@pytest.fixture(scope="session")
def real_photos() -> list[Path]:
    """A few real photos of each format; .ci/run installs the packages that ship them. On a
    machine without them (the GPU host), IMAGE_SEARCH_TEST_PHOTOS names a folder of copies."""
    copies = os.environ.get("IMAGE_SEARCH_TEST_PHOTOS")
    if copies:
        return sorted(Path(copies).iterdir())
    missing = [p for p in REAL_PHOTOS if not Path(p).exists()]
    if missing:
        pytest.fail(
            f"real test photos missing ({missing[0]}): apt-get install mate-backgrounds "
            "gnome-backgrounds plasma-workspace-wallpapers"
        )
    jpegs = [
        p for p in all_wallpapers() if p.suffix.lower() in {".jpg", ".jpeg"} and str(p) not in REAL_PHOTOS
    ][:4]
    return [Path(p) for p in REAL_PHOTOS] + jpegs


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("model") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_source(tiny_model_dir: Path) -> ModelSource:
    return ModelSource(str(tiny_model_dir))


@pytest.fixture(scope="session")
def image_embedder(tiny_source: ModelSource) -> ImageEmbedder:
    # float32, not auto: on a CPU with AMX auto is bfloat16, and tests compare to float rounding.
    return ImageEmbedder(tiny_source, "cpu", "float32").load()


@pytest.fixture(scope="session")
def text_embedder(tiny_source: ModelSource) -> TextEmbedder:
    return TextEmbedder(tiny_source, "int8").load()


REMOTE_URL = os.environ.get("IMAGE_SEARCH_TEST_SURREALDB_URL")


@pytest.fixture(params=["mem", "surrealkv", "remote"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs on both embedded engines, and on a SurrealDB server when
    IMAGE_SEARCH_TEST_SURREALDB_URL (with ..._USER and ..._PASSWORD, default root/root) is set."""
    if request.param == "remote":
        if not REMOTE_URL:
            pytest.skip("no SurrealDB server: set IMAGE_SEARCH_TEST_SURREALDB_URL to test ws:// mode")
        return REMOTE_URL
    return "mem://" if request.param == "mem" else f"surrealkv://{tmp_path / 'db'}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    if db_url == REMOTE_URL:
        user = os.environ.get("IMAGE_SEARCH_TEST_SURREALDB_USER", "root")
        password = os.environ.get("IMAGE_SEARCH_TEST_SURREALDB_PASSWORD", "root")
        database = f"test_{uuid.uuid4().hex}"  # each test its own database on the shared server
        async with Store(db_url, "image_search_test", database, user, password) as s:
            yield s
            await s.query(f"REMOVE DATABASE {database}")
        return
    async with Store(db_url) as s:
        yield s


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home for config, data and cache, so nothing of the user's is read or written."""
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for name in list(os.environ):
        if name.startswith("IMAGE_SEARCH_"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def cli_env(xdg: Path, tiny_model_dir: Path) -> dict[str, str]:
    """The environment for running `image-search` as a process: an empty home, the tiny model,
    and none of the caller's image-search or systemd variables."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("IMAGE_SEARCH_", "NOTIFY_", "WATCHDOG_"))
    }
    environ.update(
        XDG_DATA_HOME=str(xdg / "data"),
        XDG_CONFIG_HOME=str(xdg / "config"),
        XDG_CACHE_HOME=str(xdg / "cache"),
        IMAGE_SEARCH_MODEL=str(tiny_model_dir),
        IMAGE_SEARCH_WORKERS="2",
    )
    return environ


def make_photo(
    path: Path, size: tuple[int, int] = (640, 480), *, seed: int = 0, fmt: str | None = None, **save: object
) -> Path:
    """A photo-like picture (smooth gradients plus noise) that differs by seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [
            (x / w) * 255 * rng.random(),
            (y / h) * 255 * rng.random(),
            ((x + y) / (w + h)) * 255 * rng.random(),
        ],
        axis=-1,
    )
    noise = rng.normal(0, 20, size=(h, w, 3))
    array = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **save)
    return path


@pytest.fixture
def photo_dir(tmp_path: Path, real_photos: list[Path]) -> Iterator[Path]:
    """A folder of real photos in subfolders, as a user's picture folder looks."""
    root = tmp_path / "Pictures"
    for i, src in enumerate(real_photos):
        dest = root / ("holiday" if i % 2 else "home") / f"{i:02d}-{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    yield root


# -- waiting for something that happens elsewhere (a daemon, a server, a page) ------------------


async def until(check: Callable[[], Any], *, limit: float = 15.0, every: float = 0.05, what: str = "") -> Any:
    """Poll ``check`` (plain or async) until it returns something true, and return that; fail
    after ``limit`` seconds. The one way tests wait for another task, process or page."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {limit} s: {what or check}")
        await asyncio.sleep(every)


def until_sync(check: Callable[[], Any], *, limit: float = 15.0, every: float = 0.05, what: str = "") -> Any:
    """:func:`until` for tests that wait outside an event loop (a process, a thread)."""
    return asyncio.run(until(check, limit=limit, every=every, what=what))


# -- a photo library, indexed -----------------------------------------------------------------


def dated(path: Path, when: str, seed: int) -> Path:
    """A photo whose EXIF DateTimeOriginal is ``when`` ("2019:07:01 12:00:00")."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = when
    return make_photo(path, (320, 240), seed=seed, exif=exif)


async def index_folder(
    store: Store, root: Path, embedder: ImageEmbedder, batch_size: int = 8, follow_symlinks: bool = False
) -> Summary:
    """Index every photo under ``root`` into ``store`` with the tiny model (two workers)."""
    await store.check_model(embedder.source.model_id)
    files = [FileRef(p, str(root)) for p in walk(str(root), Filter(follow_symlinks=follow_symlinks))]
    async with Indexer(store, embedder, workers=2, batch_size=batch_size) as indexer:
        return await indexer.index(files)


@pytest.fixture
async def library(photo_dir: Path, image_embedder: ImageEmbedder) -> AsyncIterator[tuple[Store, Path]]:
    """The real photos plus three made ones (two dated), indexed into an in-memory store."""
    dated(photo_dir / "2019" / "summer.jpg", "2019:07:01 12:00:00", 1)
    dated(photo_dir / "2021" / "winter.jpg", "2021:01:15 09:00:00", 2)
    make_photo(photo_dir / "2021" / "plain.png", seed=3)
    async with Store("mem://") as store:
        await index_folder(store, photo_dir, image_embedder)
        yield store, photo_dir


def app_config(tmp_path: Path, model_dir: Path, **extra: object) -> Config:
    """The web app's configuration for tests: the tiny model, an in-memory store, a private cache."""
    return load_config(
        {
            "model": str(model_dir),
            "cache_dir": str(tmp_path / "cache"),
            "export_dir": str(tmp_path / "exports"),
            "database_url": "mem://",
            **extra,
        }
    )


# -- processes and ports -------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now (on loopback)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(paths: list[Path], env: dict[str, str], port: int, exe: list[str] | None = None) -> Any:
    """`image-search serve PATHS --port PORT` as a process, its log on a pipe (stderr)."""
    import subprocess
    import sys

    return subprocess.Popen(
        [*(exe or [sys.executable, "-m", "image_search"]), "serve", *map(str, paths), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, theirs, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def all_gone(pids: set[int], limit: float = 30.0) -> float:
    """Wait until none of ``pids`` runs and return how long that took (a figure to print, not to
    assert: the limit only stops a hang); fail after ``limit`` seconds, naming the survivors."""
    import time

    start = time.monotonic()
    while any(running(p) for p in pids):
        if time.monotonic() > start + limit:
            left = {p: (Path("/proc") / str(p) / "cmdline").read_bytes()[:80] for p in pids if running(p)}
            raise AssertionError(f"still running after {limit} s: {left}")
        time.sleep(0.05)
    return time.monotonic() - start
