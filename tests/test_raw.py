"""Camera RAW through LibRaw (#17, item 3), with DNGs the tests write (PiDNG): the embedded
preview when it covers the model's input, else the half-size decode; size, orientation and date
from the raw data; indexed, thumbnailed and served as a rendition like HEIC."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.pictures import raw
from image_search.pictures.exifdate import date_taken
from image_search.pictures.imaging import IMAGE_EXTENSIONS, CropSpec, configure_pillow, is_candidate, prepare
from image_search.pictures.thumbs import Thumbnails
from image_search.store import Store, image_key
from image_search.webui import create_app

from .conftest import app_config
from .dng import write_dng
from .test_formats import picture

SPEC = CropSpec()
configure_pillow()


def jpeg_of(path: Path, image: Image.Image) -> Path:
    image.save(path, quality=95)
    return path


def test_every_raw_extension_is_a_candidate() -> None:
    for name in ("a.DNG", "b.cr2", "c.CR3", "d.nef", "e.arw", "f.raf", "g.orf", "h.rw2", "i.pef"):
        assert is_candidate(name), name
    assert raw.RAW_EXTENSIONS <= IMAGE_EXTENSIONS


def test_a_dng_without_preview_is_decoded_from_its_sensor_data(tmp_path: Path) -> None:
    scene = picture((1200, 800))
    dng = write_dng(tmp_path / "IMG_1.dng", scene, orientation=6, taken="2019:07:14 16:20:00")
    got = prepare(str(dng), SPEC, 100)
    assert got.error is None and got.format == "DNG"
    assert (got.width, got.height) == (800, 1200)  # upright: LibRaw's flip 6 turns it
    assert got.taken_at == dt.datetime(2019, 7, 14, 16, 20, tzinfo=dt.UTC)
    assert raw.read(dng, 100, 224).source == "half-size decode"
    want = prepare(
        str(jpeg_of(tmp_path / "same.jpg", scene.transpose(Image.Transpose.ROTATE_270))), SPEC, 100
    )
    assert np.abs(got.pixels.astype(int) - want.pixels.astype(int)).mean() < 8  # type: ignore[union-attr]
    blue = got.pixels[:40, -40:].mean(axis=(0, 1))  # type: ignore[index]
    assert blue[2] > 180 and blue[0] < 80, blue  # the blue corner is top right once upright


def test_the_preview_is_used_when_it_covers_the_model_input(tmp_path: Path) -> None:
    scene = picture((1200, 800))
    # The preview differs from the sensor data (grey) so that the test sees which one was used.
    grey = scene.convert("L").convert("RGB")
    dng = write_dng(tmp_path / "big.dng", scene, preview=grey.resize((600, 400)), orientation=6)
    read = raw.read(dng, 100, 224)
    assert read.source == "preview" and read.image.size == (400, 600)  # turned like the photo
    got = prepare(str(dng), SPEC, 100)
    assert (got.width, got.height) == (800, 1200)  # the photo's size, not the preview's
    assert np.ptp(got.pixels.astype(int), axis=2).max() <= 6  # type: ignore[union-attr]  # grey: the preview
    # A preview below the model's input, or of another shape, is not used.
    small = write_dng(tmp_path / "small.dng", scene, preview=grey.resize((240, 160)))
    assert raw.read(small, 100, 224).source == "half-size decode"
    square = write_dng(tmp_path / "square.dng", scene, preview=grey.resize((500, 500)))
    assert raw.read(square, 100, 224).source == "half-size decode"
    # The original picture on request: the sensor data, never the preview.
    assert raw.read(dng, 100, None).source == "half-size decode"


def test_the_date_comes_from_the_header_of_tiff_like_raws(tmp_path: Path) -> None:
    """Read without decoding the sensor data; ORF ("IIRO") and RW2 ("IIU") are TIFF under
    another magic number."""
    dng = write_dng(tmp_path / "a.dng", picture((400, 300)), taken="2018:02:03 04:05:06")
    when = dt.datetime(2018, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    for name, magic in (("a.orf", b"IIRO"), ("a.rw2", b"IIU\0")):
        other = tmp_path / name
        other.write_bytes(magic + dng.read_bytes()[4:])
        assert date_taken(raw._header_exif(other)) == when
    assert date_taken(raw._header_exif(jpeg_of(tmp_path / "a.jpg", picture()))) is None


def test_a_broken_raw_is_recorded_and_costs_only_itself(tmp_path: Path) -> None:
    whole = write_dng(tmp_path / "whole.dng", picture((400, 300)))
    cut = tmp_path / "cut.dng"
    cut.write_bytes(whole.read_bytes()[:300])
    fake = tmp_path / "fake.nef"
    fake.write_bytes(b"not a raw file at all" * 100)
    for path in (cut, fake):
        got = prepare(str(path), SPEC, 100)
        assert got.error and got.pixels is None, got
    assert "max_megapixels" in str(prepare(str(whole), SPEC, 0.1).error)
    assert prepare(str(whole), SPEC, 100).error is None


async def test_raw_files_are_indexed_thumbnailed_and_served(
    tmp_path: Path, image_embedder: ImageEmbedder, text_embedder: TextEmbedder, tiny_model_dir: Path
) -> None:
    root = tmp_path / "Pictures"
    root.mkdir()
    scene = picture((1600, 1200))
    with_preview = write_dng(root / "DSC_0001.dng", scene, preview=scene.resize((800, 600)), orientation=6)
    bare = write_dng(root / "DSC_0002.dng", picture((800, 600)))
    broken = root / "DSC_0003.dng"
    broken.write_bytes(bare.read_bytes()[:500])
    config = app_config(tmp_path, tiny_model_dir)
    thumbs = Thumbnails(config.cache_dir)
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        async with Indexer(store, image_embedder, workers=2, batch_size=4, thumbnails=thumbs) as indexer:
            summary = await indexer.index([FileRef(str(p), str(root)) for p in (with_preview, bare, broken)])
        assert summary.indexed == 2 and [Path(p).name for p, _ in summary.failed] == ["DSC_0003.dng"]
        row = await store.get_one(image_key(str(with_preview)))
        assert (row["format"], row["width"], row["height"]) == ("DNG", 1200, 1600)
        assert thumbs.path(row["hash"], 256, "webp").is_file()  # made while indexing
        app = create_app(config, store=store, text_embedder=text_embedder)
        async with TestClient(TestServer(app)) as client:
            for path in (with_preview, bare):
                key = image_key(str(path))
                shown = await client.get(f"/api/images/{key}")
                assert shown.status == 200 and shown.content_type == "image/webp"
                with Image.open(io.BytesIO(await shown.read())) as rendition:
                    assert rendition.width > 0
                    if path == with_preview:
                        assert rendition.width < rendition.height  # upright
                assert (await client.get(f"/api/images/{key}/thumbnail?size=512")).status == 200  # made now
            original = await client.get(f"/api/images/{image_key(str(with_preview))}?original=1")
            assert original.content_type == "image/x-adobe-dng"
            assert await original.read() == with_preview.read_bytes()
            assert original.headers["Content-Disposition"] == 'attachment; filename="DSC_0001.dng"'
