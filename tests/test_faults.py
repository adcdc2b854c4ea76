"""Faults, with figures for docs/reliability.md: kill -9 at random moments, a full or
read-only disk under the database, a model that cannot load, a device that fails mid-run.

The short versions run in CI; ``-m slow`` runs the full campaign (see docs/reliability.md)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from image_search.errors import DeviceFailed
from image_search.models.model import ImageEmbedder
from image_search.pictures.imaging import prepare
from image_search.store import Store, from_bytes, real_path

from .conftest import make_photo, until
from .test_daemon import daemon_for
from .test_daemon_process import start, wait_for_log

SEED = 20261126


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs root to mount a small tmpfs")


def mount_tmpfs(where: Path, size: str, *options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(where)], check=True
    )


def umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False)


def alone(embedder: ImageEmbedder, path: Path) -> np.ndarray:
    """The file's embedding computed on its own, through the indexer's own preprocessing."""
    prepared = prepare(str(path), embedder.crop, 100.0)
    assert prepared.pixels is not None, prepared.error
    return embedder.embed_pixels(prepared.pixels[None])[0]


async def stored(url: str) -> dict[str, list[np.ndarray | None]]:
    """path → the embeddings stored for it (a list, so a duplicate row would show)."""
    async with Store(url) as store:
        rows = await store.first("SELECT path, path_bytes, embedding FROM image")
    out: dict[str, list[np.ndarray | None]] = {}
    for row in rows:
        vector = None if row["embedding"] is None else from_bytes(row["embedding"]).astype(np.float32)
        out.setdefault(real_path(row), []).append(vector)
    return out


def check_exactly_once(found: dict[str, list[np.ndarray | None]], expected: dict[str, np.ndarray]) -> None:
    assert set(found) == set(expected), set(found) ^ set(expected)
    for path, vectors in found.items():
        assert len(vectors) == 1, f"{path} stored {len(vectors)} times"
        assert vectors[0] is not None, f"{path} has no embedding"
        cosine = float(vectors[0] @ expected[path])
        assert cosine > 0.999, f"{path}: stored embedding is not its own (cosine {cosine:.4f})"


# -- kill -9 at random moments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "trials", [pytest.param(3, id="short"), pytest.param(20, id="full", marks=pytest.mark.slow)]
)
async def test_kill_9_at_random_moments(
    trials: int, cli_env: dict[str, str], tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    """Each trial changes the library (new, rewritten and deleted photos), starts the daemon, kills
    it at a random moment (fixed seed) from start-up to the end of indexing, restarts it, lets it
    finish and stops it. Then every file is in the database exactly once with its own embedding."""
    rng = random.Random(SEED)
    env = dict(cli_env, IMAGE_SEARCH_SETTLE="0.5", IMAGE_SEARCH_BATCH_SIZE="16")
    url = f"surrealkv://{Path(env['XDG_DATA_HOME']) / 'image-search' / 'db'}"
    root = tmp_path / "Pictures"
    files: dict[str, np.ndarray] = {}
    made = 0

    def add(n: int) -> None:
        nonlocal made
        for _ in range(n):
            path = make_photo(root / f"{made // 40:02d}" / f"{made:05d}.jpg", (320, 240), seed=made)
            files[str(path)] = alone(image_embedder, path)
            made += 1

    add(160)
    moments = []
    interrupted = 0  # trials whose kill left work undone (else the trial proves nothing)
    for trial in range(trials):
        if trial:
            add(120)
            for path in rng.sample(sorted(files), 8):  # rewritten in place: new content
                make_photo(Path(path), (320, 240), seed=10_000 + made + rng.randrange(10**6))
                files[path] = alone(image_embedder, Path(path))
            for path in rng.sample(sorted(files), 4):
                os.unlink(path)
                del files[path]
        moment = rng.uniform(1.0, 4.5)  # seconds after spawn: start-up, reconcile, batches
        moments.append(round(moment, 2))
        proc = start(env, root)
        try:
            await asyncio.sleep(moment)
            proc.kill()
            proc.wait(timeout=10)
        finally:
            proc.kill()
        if await stored(url) != {}:
            before = await stored(url)
            interrupted += any(
                len(v) != 1 or v[0] is None or float(v[0] @ files[p]) < 0.999
                for p, v in before.items()
                if p in files
            ) or set(before) != set(files)
        else:
            interrupted += 1
        proc = start(env, root)  # the restart: opens the database, reconciles, and is stopped
        try:
            wait_for_log(proc, "reconcile: indexed")
            proc.terminate()
            assert proc.wait(timeout=10) == 0, Path(proc.log_path).read_text()  # type: ignore[attr-defined]
        finally:
            proc.kill()
        check_exactly_once(await stored(url), files)
    print(f"kill -9: {trials} trials, {interrupted} mid-work, moments {moments}, {len(files)} files")
    assert interrupted >= (trials + 1) // 2, "the kills missed the indexing: the test proves nothing"


# -- the disk under the database -------------------------------------------------------------------


@needs_mount
async def test_full_disk_pauses_indexing_then_resumes(
    xdg: Path, tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    """The disk fills up (another program's file takes the last byte): a clear error, nothing
    lost or half-written, and indexing resumes by itself when the space returns."""
    disk = tmp_path / "small-disk"
    mount_tmpfs(disk, "16m")
    url = f"surrealkv://{disk / 'db'}"
    root = tmp_path / "Pictures"
    photos = [make_photo(root / f"first-{i}.jpg", (320, 240), seed=i) for i in range(5)]
    try:
        async with daemon_for(tmp_path, [root], image_embedder, database_url=url) as daemon:
            ballast = disk / "ballast"
            with open(ballast, "wb") as fh:  # fill the disk to the last block
                try:
                    while True:
                        fh.write(b"\0" * (1 << 16))
                        fh.flush()
                except OSError:
                    pass
            photos += [make_photo(root / f"later-{i}.jpg", (320, 240), seed=100 + i) for i in range(40)]

            async def refused() -> bool:
                return daemon.status.paused is not None

            await until(refused, limit=30)
            assert "full" in daemon.status.paused and str(disk / "db") in daemon.status.paused  # type: ignore[operator]
            assert daemon.status.state == "paused"
            assert any("full" in e["error"] for e in daemon.status.errors)
            ballast.unlink()

            async def all_in() -> bool:
                return (await daemon.store.counts()).indexed == len(photos)

            await until(all_in, limit=60)
            assert daemon.status.paused is None
        found = await stored(url)  # reopened: a clean database, every photo once
        check_exactly_once(found, {str(p): alone(image_embedder, p) for p in photos})
    finally:
        umount(disk)


@needs_mount
def test_database_on_a_read_only_disk_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    disk = tmp_path / "ro-disk"
    mount_tmpfs(disk, "32m")
    try:
        asyncio.run(_create(f"surrealkv://{disk / 'db'}"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        make_photo(tmp_path / "Pictures" / "a.jpg")
        env = dict(cli_env, IMAGE_SEARCH_DATABASE_URL=f"surrealkv://{disk / 'db'}")
        out = subprocess.run(
            [sys.executable, "-m", "image_search", "daemon", str(tmp_path / "Pictures")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stderr
        assert "cannot open the database" in out.stderr and "Read-only file system" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        umount(disk)


async def _create(url: str) -> None:
    async with Store(url):
        pass


# -- the model and its device ----------------------------------------------------------------------


def test_a_model_that_cannot_load_exits_non_zero(cli_env: dict[str, str], tmp_path: Path) -> None:
    """systemd restarts on a non-zero exit (Restart=on-failure, tested in test_deployment)."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    make_photo(tmp_path / "Pictures" / "a.jpg")
    out = subprocess.run(
        [sys.executable, "-m", "image_search", "daemon", str(tmp_path / "Pictures")],
        env=dict(cli_env, IMAGE_SEARCH_MODEL=str(broken)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert str(broken) in out.stderr and "Traceback" not in out.stderr


class LostDevice(torch.nn.Module):
    """What a GPU that fell off the bus does to every kernel launch."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: unspecified launch failure")


async def test_a_device_that_fails_stops_the_daemon_with_a_clear_error(
    xdg: Path, tmp_path: Path, tiny_source: object, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    make_photo(root / "before.jpg", seed=1)
    device = ImageEmbedder(image_embedder.source, "cpu").load()
    async with daemon_for(tmp_path, [root], device) as daemon:
        assert (await daemon.store.counts()).indexed == 1
        device.model = LostDevice()
        make_photo(root / "after.jpg", seed=2)
        with pytest.raises(DeviceFailed, match="unspecified launch failure"):
            await asyncio.wait_for(daemon.run(), 30)
        counts = await daemon.store.counts()
        assert counts.total == 1, "nothing may be written for the batch the device failed on"
