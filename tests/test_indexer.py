"""The indexing pipeline: isolation of bad files, incremental runs, reuse by content hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder
from image_search.pictures.imaging import prepare
from image_search.pictures.scan import Filter, walk
from image_search.store import Store, from_bytes, image_key

from .conftest import make_photo


def embedded_alone(embedder: ImageEmbedder, path: Path) -> np.ndarray:
    prepared = prepare(str(path), embedder.crop, 100)
    assert prepared.error is None
    return embedder.embed_pixels(prepared.pixels[None])[0]


async def stored_vector(store: Store, path: Path) -> np.ndarray | None:
    row = await store.get_one(image_key(str(path)), embedding=True)
    return (
        None if row is None or row["embedding"] is None else from_bytes(row["embedding"]).astype(np.float32)
    )


async def index(store: Store, embedder: ImageEmbedder, root: Path, **kw: object):
    files = [FileRef(p, str(root)) for p in walk(str(root), Filter())]
    async with Indexer(store, embedder, workers=2, batch_size=kw.pop("batch_size", 4)) as indexer:  # type: ignore[arg-type]
        return await indexer.index(files, **kw)  # type: ignore[arg-type]


async def test_bad_files_in_a_batch_never_shift_good_ones(
    store: Store, image_embedder: ImageEmbedder, photo_dir: Path, tmp_path: Path
) -> None:
    """The old prototype dropped failures and zipped results onto the full path list. Here a
    corrupt, a zero-byte and a non-image file sit between good ones in one batch: every good
    file's stored embedding equals the one it gets alone, and each bad one has its reason."""
    root = tmp_path / "mixed"
    good = sorted(photo_dir.rglob("*.*"))
    names = []
    for i, src in enumerate(good):
        dest = root / f"{2 * i:02d}-{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        names.append(dest)
    (root / "01-corrupt.jpg").write_bytes(good[0].read_bytes()[:2000])
    (root / "03-empty.jpg").write_bytes(b"")
    (root / "05-text.png").write_text("hello")
    summary = await index(store, image_embedder, root, batch_size=len(good) + 3)
    assert summary.indexed == len(good)
    assert sorted(Path(p).name for p, _ in summary.failed) == [
        "01-corrupt.jpg",
        "03-empty.jpg",
        "05-text.png",
    ]
    for path in names:
        got = await stored_vector(store, path)
        assert got is not None, path
        alone = embedded_alone(image_embedder, path)
        assert np.allclose(got, alone, atol=2e-3), path  # float16 storage
        assert float(got @ alone) > 0.999
    failures = {Path(f["path"]).name: f["error"] for f in await store.failures()}
    assert "cannot decode" in failures["01-corrupt.jpg"]
    assert failures["03-empty.jpg"] == "empty file"
    assert "not an image" in failures["05-text.png"]


async def test_incremental_skips_unchanged_and_retries_failed_only_when_changed(
    store: Store, image_embedder: ImageEmbedder, tmp_path: Path
) -> None:
    root = tmp_path / "pics"
    a = make_photo(root / "a.jpg", seed=1)
    b = make_photo(root / "b.png", seed=2)
    bad = root / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    first = await index(store, image_embedder, root)
    assert (first.indexed, len(first.failed), first.unchanged) == (2, 1, 0)
    second = await index(store, image_embedder, root)
    assert (second.indexed, second.reused, len(second.failed), second.unchanged) == (0, 0, 0, 3)
    make_photo(a, seed=9)  # changed content: re-embedded
    make_photo(bad, seed=3)  # the failed file is fixed: retried
    third = await index(store, image_embedder, root)
    assert (third.indexed, len(third.failed), third.unchanged) == (2, 0, 1)
    assert np.allclose(await stored_vector(store, a), embedded_alone(image_embedder, a), atol=2e-3)
    assert (await store.counts()).failed == 0
    del b


async def test_copy_reuses_the_stored_embedding(
    store: Store, image_embedder: ImageEmbedder, tmp_path: Path
) -> None:
    root = tmp_path / "pics"
    a = make_photo(root / "a.jpg", seed=1)
    await index(store, image_embedder, root)
    shutil.copy(a, root / "copy-of-a.jpg")
    summary = await index(store, image_embedder, root)
    assert (summary.indexed, summary.reused, summary.unchanged) == (0, 1, 1)
    assert np.array_equal(await stored_vector(store, root / "copy-of-a.jpg"), await stored_vector(store, a))


async def test_duplicates_within_one_batch_are_embedded_once(
    store: Store, image_embedder: ImageEmbedder, tmp_path: Path
) -> None:
    root = tmp_path / "pics"
    a = make_photo(root / "a.jpg", seed=1)
    shutil.copy(a, root / "b.jpg")
    summary = await index(store, image_embedder, root)
    assert summary.indexed + summary.reused == 2
    assert np.array_equal(await stored_vector(store, root / "b.jpg"), await stored_vector(store, a))


@pytest.mark.parametrize("batch_size", [1, 3, 64])
async def test_every_file_lands_once_whatever_the_batch_size(
    store: Store, image_embedder: ImageEmbedder, tmp_path: Path, batch_size: int
) -> None:
    root = tmp_path / "pics"
    paths = [make_photo(root / f"{i:03d}.jpg", (200, 150), seed=i) for i in range(20)]
    summary = await index(store, image_embedder, root, batch_size=batch_size)
    assert summary.indexed == 20
    keys, _ = await store.load_embeddings(image_embedder.source.model_id)
    assert sorted(keys) == sorted(image_key(str(p)) for p in paths)
    for p in paths[::7]:
        assert np.allclose(await stored_vector(store, p), embedded_alone(image_embedder, p), atol=2e-3)


async def test_indexing_makes_the_grid_thumbnails(
    image_embedder: ImageEmbedder, photo_dir: Path, tmp_path: Path
) -> None:
    """The worker that decodes a photo for the model writes its grid thumbnail too (owner-only,
    the right shape); a file that cannot be decoded gets none; the web route serves that file."""
    from PIL import Image

    from image_search.pictures.thumbs import DEFAULT_SIZE, Thumbnails

    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    thumbs = Thumbnails(tmp_path / "cache")
    files = [FileRef(p, str(photo_dir)) for p in walk(str(photo_dir), Filter())]
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        async with Indexer(store, image_embedder, workers=2, batch_size=4, thumbnails=thumbs) as indexer:
            summary = await indexer.index(files)
        assert summary.indexed + summary.reused == len(files) - 1 and len(summary.failed) == 1
        made = sorted(thumbs.root.rglob("*.webp"))
        rows = [await store.get_one(f.key) for f in files]
        assert len(made) == len({r["hash"] for r in rows if not r["error"]})  # copies share one
        for ref in files:
            row = await store.get_one(ref.key)
            if row["error"]:
                assert row["hash"] is None or not thumbs.path(row["hash"], DEFAULT_SIZE, "webp").exists()
                continue
            target = thumbs.path(row["hash"], DEFAULT_SIZE, "webp")
            assert target.stat().st_mode & 0o777 == 0o600
            with Image.open(target) as small:
                assert max(small.size) == DEFAULT_SIZE
                assert abs(small.width / small.height - row["width"] / row["height"]) < 0.02
            assert thumbs.get(ref.path, row["hash"]) == target  # what the route serves: no decoding
