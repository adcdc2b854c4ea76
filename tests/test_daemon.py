"""The watcher daemon in-process: real watchdog events on real files, the tiny model, surrealkv."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from image_search.config import load_config
from image_search.daemon import Daemon
from image_search.duplicates.calibration import SAMPLE
from image_search.models.model import ImageEmbedder
from image_search.store import from_bytes, image_key, real_path

from .conftest import make_photo, until

SETTLE = 0.5


@asynccontextmanager
async def daemon_for(
    tmp_path: Path, roots: list[Path], embedder: ImageEmbedder, **options: object
) -> AsyncIterator[Daemon]:
    config = load_config(
        {
            "database_url": f"surrealkv://{tmp_path / 'db'}",
            "model": str(embedder.source.location),
            "settle": SETTLE,
            "workers": 2,
            "batch_size": 8,
            "cache_dir": str(tmp_path / "cache"),
            **options,
        }
    )
    async with Daemon(config, [str(r) for r in roots], embedders=[embedder]) as daemon:
        await daemon.wait_idle()
        yield daemon


async def paths_in_store(daemon: Daemon) -> set[str]:
    rows = await daemon.store.first("SELECT path, path_bytes FROM image WHERE embedding != NONE")
    return {real_path(r) for r in rows}


async def vector_of(daemon: Daemon, path: Path) -> np.ndarray | None:
    row = await daemon.store.get_one(image_key(str(path)), embedding=True)
    return None if not row or row["embedding"] is None else from_bytes(row["embedding"])


async def test_start_reconciles_then_new_photo_is_searchable_quickly(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    existing = make_photo(root / "old.jpg", seed=1)
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        assert await paths_in_store(daemon) == {str(existing)}
        written = time.monotonic()
        new = make_photo(root / "sub" / "new.jpg", seed=2)

        async def present() -> bool:
            return str(new) in await paths_in_store(daemon)

        await until(present, limit=60)  # how soon: benchmarks, not tests (a busy machine is slow)
        print(f"\nsearchable {time.monotonic() - written:.1f} s after it was written (settle {SETTLE} s)")
        status = await daemon.store.get_status("daemon")
        assert status is not None and {"state", "queue", "rate", "errors"} <= set(status)


async def test_half_written_file_is_indexed_once_with_its_full_content(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    root.mkdir()
    source = make_photo(tmp_path / "full.jpg", (1200, 900), seed=3)
    data = source.read_bytes()
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        target = root / "arriving.jpg"
        with open(target, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            await asyncio.sleep(SETTLE * 0.6)  # a pause shorter than the settle time
            fh.write(data[len(data) // 2 :])
        await until(lambda: _has(daemon, target))
        await daemon.wait_idle()
        assert daemon.status.embedded_total == 1 and daemon.status.failed_total == 0
        stored = await vector_of(daemon, target)
        whole = await _embed_alone(image_embedder, source)
        assert stored is not None and np.allclose(stored, whole, atol=2e-3)


async def _has(daemon: Daemon, path: Path) -> bool:
    return str(path) in await paths_in_store(daemon)


async def _embed_alone(embedder: ImageEmbedder, path: Path) -> np.ndarray:
    from image_search.pictures.imaging import prepare

    prepared = prepare(str(path), embedder.crop, 100)
    return embedder.embed_pixels(prepared.pixels[None])[0]


async def test_moves_copies_changes_and_deletes(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    a = make_photo(root / "trip" / "a.jpg", seed=1)
    b = make_photo(root / "trip" / "b.png", seed=2)
    c = make_photo(root / "c.jpg", seed=3)
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        embedded = daemon.status.embedded_total
        before = await vector_of(daemon, a)
        # Rename a file: the record follows, nothing is embedded again.
        renamed = root / "trip" / "a-renamed.jpg"
        a.rename(renamed)
        await until(lambda: _has(daemon, renamed))
        await daemon.wait_idle()
        assert str(a) not in await paths_in_store(daemon)
        assert np.array_equal(await vector_of(daemon, renamed), before)
        # Move a folder: every record follows.
        moved = root / "2024-trip"
        (root / "trip").rename(moved)
        await until(lambda: _has(daemon, moved / "b.png"))
        await daemon.wait_idle()
        assert await paths_in_store(daemon) == {str(moved / "a-renamed.jpg"), str(moved / "b.png"), str(c)}
        assert daemon.status.embedded_total == embedded
        # A copy reuses the stored embedding.
        copy = root / "copy-of-c.jpg"
        shutil.copy(c, copy)
        await until(lambda: _has(daemon, copy))
        await daemon.wait_idle()
        assert daemon.status.embedded_total == embedded and daemon.status.reused_total >= 1
        # Changed content is embedded again.
        make_photo(c, seed=30)
        await until(lambda: _changed(daemon, c, before=None))
        await daemon.wait_idle()
        assert daemon.status.embedded_total == embedded + 1
        assert np.allclose(await vector_of(daemon, c), await _embed_alone(image_embedder, c), atol=2e-3)
        # Deleting a file and a folder removes their records.
        copy.unlink()
        shutil.rmtree(moved)
        await until(lambda: _only(daemon, {str(c)}))
        del b


async def _changed(daemon: Daemon, path: Path, before: np.ndarray | None) -> bool:
    row = await daemon.store.get_one(image_key(str(path)))
    return bool(row) and row["mtime_ns"] == path.stat().st_mtime_ns and row["model"] is not None


async def _only(daemon: Daemon, paths: set[str]) -> bool:
    return await paths_in_store(daemon) == paths and (await daemon.store.counts()).total == len(paths)


async def test_deleted_photo_takes_its_thumbnail_along(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    a = make_photo(root / "a.jpg", seed=1)
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        row = await daemon.store.get_one(image_key(str(a)))
        thumb = daemon.thumbs.path(row["hash"], 256, "webp")
        assert thumb.exists()  # made while indexing, by the worker that decoded it
        a.unlink()
        await until(lambda: _only(daemon, set()))
        assert not thumb.exists()


async def test_a_root_that_disappears_goes_offline_and_comes_back_without_reembedding(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    """An unmounted disk or a dropped NAS looks like a missing folder: nothing may be deleted."""
    root = tmp_path / "nas"
    photos = {make_photo(root / f"{i}.jpg", seed=i) for i in range(3)}
    away = tmp_path / "nas-unmounted"
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        embedded = daemon.status.embedded_total
        root.rename(away)

        async def offline() -> bool:
            return (await daemon.store.counts()).offline == 3

        await until(offline)
        assert (await daemon.store.counts()).total == 3
        daemon.request_reconcile()  # a scheduled reconcile while it is away deletes nothing
        await daemon.wait_idle()
        assert (await daemon.store.counts()).total == 3
        away.rename(root)

        async def online() -> bool:
            return (await daemon.store.counts()).offline == 0

        await until(online)
        await daemon.wait_idle()
        assert await paths_in_store(daemon) == {str(p) for p in photos}
        assert daemon.status.embedded_total == embedded


async def test_an_unreadable_subfolder_goes_offline_not_deleted(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NAS permission hiccup on one sub-folder must not drop its photos: they go offline and
    come back with their embeddings (a reconcile reported "removed" before)."""
    root = tmp_path / "Pictures"
    make_photo(root / "a.jpg", seed=1)
    for i in range(2):
        make_photo(root / "nas" / "deep" / f"{i}.jpg", seed=10 + i)
    blocked = str(root / "nas")
    scandir = os.scandir

    def refusing(path: object = ".") -> object:  # what the kernel answers for a folder we may not read
        if os.fsdecode(path) == blocked:  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", path)
        return scandir(path)  # type: ignore[arg-type]

    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        embedded = daemon.status.embedded_total
        monkeypatch.setattr(os, "scandir", refusing)
        summary = await daemon.reconcile()
        assert (summary.removed, summary.offline) == (0, 2)
        counts = await daemon.store.counts()
        assert (counts.total, counts.offline, counts.indexed) == (3, 2, 1)
        monkeypatch.setattr(os, "scandir", scandir)
        summary = await daemon.reconcile()
        assert (summary.removed, summary.offline) == (0, 0)
        assert (await daemon.store.counts()).offline == 0
        assert daemon.status.embedded_total == embedded  # nothing embedded again


async def test_bad_files_are_recorded_not_fatal(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    root.mkdir()
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
        (root / "empty.png").write_bytes(b"")
        (root / "text.jpg").write_text("a text file with a photo's name")
        (root / "notes.txt").write_text("ignored: not an image name")
        (root / "download.jpg.part").write_bytes(b"partial")
        good = make_photo(root / "good.jpg", seed=4)

        async def recorded() -> bool:
            return (await daemon.store.counts()).failed == 3

        await until(recorded)
        await daemon.wait_idle()
        assert await paths_in_store(daemon) == {str(good)}
        reasons = {Path(f["path"]).name: f["error"] for f in await daemon.store.failures()}
        assert set(reasons) == {"corrupt.jpg", "empty.png", "text.jpg"}
        assert daemon.status.errors and daemon.status.failed_total == 3


async def test_symlink_loop_is_survived(xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder) -> None:
    root = tmp_path / "Pictures"
    photo = make_photo(root / "inner" / "a.jpg", seed=1)
    (root / "inner" / "loop").symlink_to(root, target_is_directory=True)
    async with daemon_for(tmp_path, [root], image_embedder, follow_symlinks=True) as daemon:
        assert await paths_in_store(daemon) == {str(photo)}
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        assert await paths_in_store(daemon) == {str(photo)}


async def test_a_thousand_photos_dropped_at_once(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    root.mkdir()
    staging = tmp_path / "camera"
    for i in range(1000):
        make_photo(staging / f"IMG_{i:04d}.jpg", (64, 48), seed=i)
    async with daemon_for(tmp_path, [root], image_embedder) as daemon:
        for path in staging.iterdir():
            shutil.copy(path, root / path.name)

        async def all_there() -> bool:
            return (await daemon.store.counts()).indexed == 1000

        await until(all_there, limit=120)
        assert len(await paths_in_store(daemon)) == 1000

        async def measured() -> bool:  # the near-duplicate threshold, once it has SAMPLE photos
            return await daemon.store.duplicate_calibration() is not None

        await until(measured, limit=60)
        assert (await daemon.store.duplicate_calibration() or {})["photos"] == SAMPLE


async def test_inotify_limit_falls_back_to_polling(
    xdg: Path,
    tmp_path: Path,
    image_embedder: ImageEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from watchdog.observers import Observer

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "schedule", refuse)
    root = tmp_path / "Pictures"
    root.mkdir()
    with caplog.at_level(logging.WARNING):
        async with daemon_for(tmp_path, [root], image_embedder) as daemon:
            assert daemon.watcher is not None and str(root) in daemon.watcher.polling
            photo = make_photo(root / "a.jpg")
            await until(lambda: _has(daemon, photo))
    assert "fs.inotify.max_user_watches" in caplog.text


async def test_hidden_and_excluded_paths_are_ignored(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    keep = make_photo(root / "keep.jpg")
    async with daemon_for(tmp_path, [root], image_embedder, exclude=["raw"]) as daemon:
        make_photo(root / ".cache" / "x.jpg")
        make_photo(root / ".hidden.jpg")
        make_photo(root / "raw" / "y.jpg")
        late = make_photo(root / "late.jpg", seed=5)
        await until(lambda: _has(daemon, late))
        await daemon.wait_idle()
        assert await paths_in_store(daemon) == {str(keep), str(late)}
