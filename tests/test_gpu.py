"""The GPU path: nvJPEG decoding, orientation and the indexer with both decoders. Skipped without
a CUDA GPU; run on one with `scripts/dev test -m gpu`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, ModelSource
from image_search.pictures.imaging import prepare
from image_search.pictures.scan import Filter, walk
from image_search.pictures.thumbs import Thumbnails
from image_search.store import Store, from_bytes, image_key

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def gpu_embedder(tiny_source: ModelSource) -> ImageEmbedder:
    return ImageEmbedder(tiny_source, "cuda", "float32").load()


def gpu_decoded(path: Path, embedder: ImageEmbedder, orientation: int = 1) -> tuple[np.ndarray, bytes]:
    from image_search.indexing.gpudecode import decode_batch

    pair = decode_batch([path.read_bytes()], [orientation], embedder.crop, embedder.device)[0]
    assert pair is not None
    return pair[0].cpu().numpy(), pair[1]


def gpu_crop(path: Path, embedder: ImageEmbedder, orientation: int = 1) -> np.ndarray:
    return gpu_decoded(path, embedder, orientation)[0]


def test_gpu_fingerprints_match_the_cpu_path(real_photos: list[Path], gpu_embedder: ImageEmbedder) -> None:
    """A photo decoded by nvJPEG and the same photo decoded by Pillow must be near-duplicates."""
    from image_search.pictures.fingerprint import Fingerprints

    jpegs = [p for p in real_photos if p.suffix.lower() in {".jpg", ".jpeg"}]
    assert jpegs
    for path in jpegs:
        cpu = prepare(str(path), gpu_embedder.crop, 1000).fingerprint
        _, gpu = gpu_decoded(path, gpu_embedder)
        prints = Fingerprints([cpu, gpu])
        a, b = np.array([0]), np.array([1])
        assert prints.hash_distance(a, b)[0] <= 4, path
        assert prints.colour_distance(a, b)[0] <= 2.0, path
        assert prints.confirm(a, b)[0], path


def test_gpu_decode_matches_the_cpu_path(real_photos: list[Path], gpu_embedder: ImageEmbedder) -> None:
    jpegs = [p for p in real_photos if p.suffix.lower() in {".jpg", ".jpeg"}]
    for path in jpegs:
        cpu = prepare(str(path), gpu_embedder.crop, 1000, draft=False).pixels
        gpu = gpu_crop(path, gpu_embedder)
        assert gpu.shape == cpu.shape
        assert np.abs(gpu.astype(float) - cpu).mean() <= 3.0, path
        a, b = gpu_embedder.embed_pixels(cpu[None]), gpu_embedder.embed_pixels(gpu[None])
        assert float((a * b).sum()) >= 0.99, path


def test_gpu_decode_matches_the_cpu_path_for_siglip(real_photos: list[Path], tmp_path: Path) -> None:
    """SigLIP's square resize (no crop) on the GPU, within the same tolerance as CLIP's crop."""
    from image_search.testing import build_tiny_siglip

    source = ModelSource(str(build_tiny_siglip(tmp_path / "siglip")))
    embedder = ImageEmbedder(source, "cuda", "float32").load()
    assert embedder.crop.square
    for path in [p for p in real_photos if p.suffix.lower() in {".jpg", ".jpeg"}]:
        cpu = prepare(str(path), embedder.crop, 1000, draft=False).pixels
        gpu = gpu_crop(path, embedder)
        assert gpu.shape == cpu.shape == (64, 64, 3)
        assert np.abs(gpu.astype(float) - cpu).mean() <= 3.0, path
        a, b = embedder.embed_pixels(cpu[None]), embedder.embed_pixels(gpu[None])
        assert float((a * b).sum()) >= 0.99, path


async def test_naflex_on_the_gpu(real_photos: list[Path], tmp_path: Path) -> None:
    """A NaFlex model on CUDA, float16 (as indexing runs it): the CPU's float32 embeddings within
    float16's tolerance; indexing asked for nvJPEG decodes its photos on the CPU instead."""
    from image_search.testing import build_tiny_siglip2_naflex

    source = ModelSource(str(build_tiny_siglip2_naflex(tmp_path / "naflex")))
    gpu = ImageEmbedder(source, "cuda", "float16").load()
    cpu = ImageEmbedder(source, "cpu", "float32").load()
    pictures = np.stack([prepare(str(p), gpu.crop, 1000).pixels for p in real_photos])  # type: ignore[misc]
    cosines = (gpu.embed_pixels(pictures) * cpu.embed_pixels(pictures)).sum(axis=1)
    assert cosines.min() >= 0.999, cosines
    root = tmp_path / "Pictures"
    root.mkdir()
    for path in real_photos[:4]:
        shutil.copy(path, root / path.name)
    async with Store("mem://") as store:
        await store.check_model(source.model_id)
        async with Indexer(store, gpu, workers=2, batch_size=4, gpu_decode="on") as indexer:
            assert indexer.share.value == 0.0  # no file goes to nvJPEG
            summary = await indexer.index([FileRef(str(p), str(root)) for p in sorted(root.iterdir())])
        assert summary.indexed == 4 and not summary.failed


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_on_the_gpu(tmp_path: Path, gpu_embedder: ImageEmbedder, orientation: int) -> None:
    array = np.zeros((300, 480, 3), dtype=np.uint8)
    array[:60, :] = (255, 0, 0)  # a red band along the top
    array[:, :80] = (0, 0, 255)  # and a blue one down the left: every flip and turn looks different
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    cpu = prepare(str(path), gpu_embedder.crop, 100, draft=False)
    assert cpu.error is None
    gpu = gpu_crop(path, gpu_embedder, cpu_orientation(path))
    assert np.abs(gpu.astype(float) - cpu.pixels).mean() <= 6.0


def cpu_orientation(path: Path) -> int:
    with Image.open(path) as image:
        return int(image.getexif().get(0x0112, 1))


async def test_indexer_with_both_decoders(
    tmp_path: Path, real_photos: list[Path], gpu_embedder: ImageEmbedder, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    for i, src in enumerate(real_photos):
        shutil.copy(src, root / f"{i:02d}-{src.name}")
    base = Image.open(real_photos[0]).convert("RGB")
    base.save(root / "progressive.jpg", progressive=True, quality=85)
    base.convert("CMYK").save(root / "cmyk.jpg", quality=85)
    (root / "broken.jpg").write_bytes((root / "progressive.jpg").read_bytes()[:3000])
    files = [FileRef(p, str(root)) for p in walk(str(root), Filter())]
    gpu_thumbs, cpu_thumbs = Thumbnails(tmp_path / "gpu-cache"), Thumbnails(tmp_path / "cpu-cache")
    async with Store("mem://") as gpu_store, Store("mem://") as cpu_store:
        async with Indexer(
            gpu_store, gpu_embedder, workers=2, batch_size=4, gpu_decode="on", thumbnails=gpu_thumbs
        ) as indexer:
            assert indexer.gpu_share > 0
            summary = await indexer.index(files)
        async with Indexer(
            cpu_store, image_embedder, workers=2, batch_size=4, gpu_decode="off", thumbnails=cpu_thumbs
        ) as indexer:
            expected = await indexer.index(files)
        # (Debian's wallpapers hold the same picture twice: one is reused, not embedded again.)
        done = summary.indexed + summary.reused
        assert done == expected.indexed + expected.reused == len(files) - 1
        assert [Path(p).name for p, _ in summary.failed] == ["broken.jpg"]
        for ref in files:
            if ref.path.endswith("broken.jpg"):
                continue
            got = await gpu_store.get_one(image_key(ref.path), embedding=True)
            want = await cpu_store.get_one(image_key(ref.path), embedding=True)
            a, b = from_bytes(got["embedding"]).astype(float), from_bytes(want["embedding"]).astype(float)
            assert float(a @ b) >= 0.99, ref.path
            assert got["hash"] == want["hash"], ref.path  # the same content hash, either decoder
            # Its grid thumbnail was made while indexing, by either decoder, and looks the same.
            with (
                Image.open(gpu_thumbs.path(got["hash"], 256, "webp")) as g,
                Image.open(cpu_thumbs.path(want["hash"], 256, "webp")) as c,
            ):
                assert max(g.size) == 256 and abs(g.width - c.width) <= 1 and abs(g.height - c.height) <= 1
                g2 = np.asarray(g.convert("RGB").resize(c.size), dtype=float)
                assert np.abs(g2 - np.asarray(c.convert("RGB"), dtype=float)).mean() < 8, ref.path


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more CUDA GPUs")
@pytest.mark.parametrize("gpu_decode", ["off", "on"])
async def test_every_visible_gpu_takes_batches(
    tmp_path: Path, tiny_source: ModelSource, image_embedder: ImageEmbedder, gpu_decode: str
) -> None:
    """One embedder per GPU (pick_embedders), batches spread over all of them, each file's own
    embedding whichever GPU (and decoder) took it."""
    from image_search.models.model import pick_embedders

    from .conftest import make_photo

    embedders = pick_embedders(tiny_source, "cuda", "float32")
    assert [e.device.index for e in embedders] == list(range(torch.cuda.device_count()))
    used: dict[int, int] = {}
    for embedder in embedders:
        embedder.load()
        forward = embedder.embed_pixels

        def counted(pixels, forward=forward, index=embedder.device.index):  # type: ignore[no-untyped-def]
            used[index] = used.get(index, 0) + len(pixels)
            return forward(pixels)

        embedder.embed_pixels = counted  # type: ignore[method-assign]
    files = [
        FileRef(str(make_photo(tmp_path / "p" / f"{i:03d}.jpg", (640, 480), seed=i)), str(tmp_path / "p"))
        for i in range(160)
    ]
    async with Store("mem://") as store:
        async with Indexer(
            store, embedders, workers=4, batch_size=16, gpu_decode=gpu_decode, gpus=len(embedders)
        ) as indexer:
            summary = await indexer.index(files)
        assert summary.indexed == len(files) and not summary.failed
        assert len(used) == len(embedders) and sum(used.values()) == len(files), used
        for ref in files[::10]:
            row = await store.get_one(image_key(ref.path), embedding=True)
            prepared = prepare(ref.path, image_embedder.crop, 100.0)
            want = image_embedder.embed_pixels(prepared.pixels[None])[0]  # type: ignore[index]
            assert float(from_bytes(row["embedding"]).astype(float) @ want) >= 0.99, ref.path


async def test_near_duplicates_with_gpu_decoding(tmp_path: Path, gpu_embedder: ImageEmbedder) -> None:
    """The wallpaper test set indexed with nvJPEG decoding most JPEGs: fingerprints made on the GPU
    and on the CPU meet in the same groups, and the groups are exactly the expected ones."""
    from image_search.duplicates.grouping import group
    from image_search.indexing.indexer import FileRef, Indexer
    from image_search.pictures.scan import Filter, walk
    from image_search.store import Store

    from .test_duplicates import build_set

    root = tmp_path / "Pictures"
    expected, _ = build_set(root)
    async with Store("mem://") as store:
        await store.check_model(gpu_embedder.source.model_id)
        files = [FileRef(p, str(root)) for p in walk(str(root), Filter())]
        async with Indexer(store, gpu_embedder, workers=2, batch_size=8, gpu_decode="on") as indexer:
            assert indexer.gpu_share > 0
            summary = await indexer.index(files)
        assert not summary.failed
        rows = await store.first("SELECT path, hash, fingerprint, embedding FROM image ORDER BY path")
    assert all(r["fingerprint"] for r in rows)
    matrix = np.stack([np.frombuffer(r["embedding"], dtype=np.float16).astype(np.float32) for r in rows])
    found = group(matrix, [r["fingerprint"] for r in rows], [r["hash"] for r in rows]).groups
    assert sorted(sorted(rows[i]["path"] for i in g) for g in found) == sorted(map(sorted, expected))
