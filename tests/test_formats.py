"""The formats phones write (#17, items 1 and 4): HEIC/HEIF and AVIF in the default install, made
here with pillow-heif and Pillow (orientation, date taken, 10-bit, alpha, several images, a
corrupt file), and shown in any browser: HEIC and TIFF reach the lightbox as a WebP rendition,
the original stays downloadable with its own type."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
import pillow_heif
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageOps

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.pictures.imaging import CropSpec, configure_pillow, decode_rgb, open_checked, prepare
from image_search.store import Store, image_key
from image_search.webui import create_app

from .conftest import all_wallpapers, app_config

SPEC = CropSpec()
FAST = {"preset": "ultrafast"}  # x265's default preset takes seconds a file on this machine
configure_pillow()


def picture(size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like picture whose top-left quarter is blue, to see where it ends up."""
    rng = np.random.default_rng(5)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], axis=-1).astype(np.uint8)
    arr = np.clip(arr.astype(int) + rng.integers(-8, 8, arr.shape), 0, 255).astype(np.uint8)
    arr[: h // 2, : w // 2] = (20, 40, 230)
    return Image.fromarray(arr)


def heic(path: Path, image: Image.Image, exif: Image.Exif | None = None) -> Path:
    image.save(path, "HEIF", quality=92, enc_params=FAST, **({"exif": exif.tobytes()} if exif else {}))
    return path


def test_heic_orientation_and_date(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    exif.get_ifd(0x8769)[0x9003] = "2021:06:05 04:03:02"
    got = prepare(str(heic(tmp_path / "phone.heic", picture(), exif)), SPEC, 100)
    assert got.error is None and got.format == "HEIF"
    assert (got.width, got.height) == (480, 640)  # upright: as a viewer shows it
    assert got.taken_at == dt.datetime(2021, 6, 5, 4, 3, 2, tzinfo=dt.UTC)
    # The same pixels and tag as a JPEG: the same upright crop (within HEVC's loss).
    jpeg = tmp_path / "same.jpg"
    picture().save(jpeg, quality=95, exif=exif)
    want = prepare(str(jpeg), SPEC, 100, draft=False)
    assert np.abs(got.pixels.astype(int) - want.pixels.astype(int)).mean() < 6  # type: ignore[union-attr]
    blue = got.pixels[:40, -40:].mean(axis=(0, 1))  # type: ignore[index]
    assert blue[2] > 180 and blue[0] < 60, blue  # the blue corner is now top right


def test_ten_bit_alpha_and_several_images(tmp_path: Path) -> None:
    deep = np.asarray(picture(), dtype=np.uint16) * 257
    ten = pillow_heif.from_bytes(mode="RGB;16", size=(640, 480), data=deep.tobytes())
    ten.save(tmp_path / "ten.heic", quality=92)
    with Image.open(tmp_path / "ten.heic") as check:
        assert check.info["bit_depth"] == 10
    eight = prepare(str(heic(tmp_path / "eight.heic", picture())), SPEC, 100)
    got = prepare(str(tmp_path / "ten.heic"), SPEC, 100)
    assert got.error is None and np.abs(got.pixels.astype(int) - eight.pixels.astype(int)).mean() < 6  # type: ignore[union-attr]

    alpha = picture().convert("RGBA")
    alpha.putalpha(128)
    assert prepare(str(heic(tmp_path / "alpha.heic", alpha)), SPEC, 100).error is None

    # A burst or a depth map: several images; the primary one (here the second) is the photo.
    many = pillow_heif.from_pillow(Image.new("RGB", (320, 240), (0, 200, 0)))
    many.add_from_pillow(picture())
    many[0].info["primary"], many[1].info["primary"] = False, True
    many.save(tmp_path / "many.heic", quality=92)
    got = prepare(str(tmp_path / "many.heic"), SPEC, 100)
    assert (got.width, got.height) == (640, 480)
    assert np.abs(got.pixels.astype(int) - eight.pixels.astype(int)).mean() < 6  # type: ignore[union-attr]


def heic_with_rendition(path: Path, image: Image.Image, box: int, exif: Image.Exif | None = None) -> Path:
    """A HEIC as a phone writes it: the full image and a small rendition of it (an iPhone's is
    320x240)."""
    extra = {"exif": exif.tobytes()} if exif else {}
    image.save(path, "HEIF", quality=90, thumbnails=[box], enc_params=FAST, **extra)
    return path


def decoded_size(path: Path) -> tuple[int, int]:
    with open_checked(path, 100) as image:
        return decode_rgb(image, SPEC).size


def test_a_heic_decodes_its_rendition_when_it_covers_the_model_input(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    big = picture((1600, 1200))
    phone = heic_with_rendition(tmp_path / "phone.heic", big, 320, exif)
    assert decoded_size(phone) == (240, 320)  # the rendition, upright like the photo
    full = prepare(str(heic(tmp_path / "plain.heic", big, exif)), SPEC, 100)
    fast = prepare(str(phone), SPEC, 100)
    assert (fast.width, fast.height) == (full.width, full.height) == (1200, 1600)  # the photo's size
    assert np.abs(fast.pixels.astype(int) - full.pixels.astype(int)).mean() < 6  # type: ignore[union-attr]
    # Renditions that do not cover the model's input are not used: too small, or a panorama's.
    assert decoded_size(heic_with_rendition(tmp_path / "small.heic", big, 160)) == (1600, 1200)
    pano = heic_with_rendition(tmp_path / "pano.heic", picture((2400, 600)), 640)
    assert decoded_size(pano) == (2400, 600)  # its rendition is 640x160
    # Without draft (what a caller asks for the full picture) the full image.
    with open_checked(phone, 100) as image:
        assert decode_rgb(image, SPEC, draft=False).size == (1200, 1600)


def test_the_rendition_embeds_like_the_full_heic_on_real_photos(
    tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    """What the model sees from an iPhone-like rendition (4:3, 320x240) against the full decode of
    the same HEIC: real photos, cropped to 4:3 like a phone's."""
    fast, full = [], []
    for i, source in enumerate(all_wallpapers()[:6:2]):
        with Image.open(source) as photo:
            photo = ImageOps.fit(photo.convert("RGB"), (1600, 1200))
        path = heic_with_rendition(tmp_path / f"{i}.heic", photo, 320)
        assert decoded_size(path) == (320, 240)
        fast.append(prepare(str(path), SPEC, 100).pixels)
        full.append(prepare(str(path), SPEC, 100, draft=False).pixels)
    a, b = image_embedder.embed_pixels(np.stack(fast)), image_embedder.embed_pixels(np.stack(full))
    cosines = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert len(cosines) == 3 and cosines.min() >= 0.99, cosines


def test_avif(tmp_path: Path) -> None:
    picture().save(tmp_path / "photo.avif", quality=90)
    got = prepare(str(tmp_path / "photo.avif"), SPEC, 100)
    assert got.error is None and got.format == "AVIF" and (got.width, got.height) == (640, 480)


async def test_a_corrupt_heic_costs_only_itself(tmp_path: Path, image_embedder: ImageEmbedder) -> None:
    root = tmp_path / "phone"
    root.mkdir()
    good = [heic(root / f"{i}.heic", picture((640 + 32 * i, 480))) for i in range(3)]
    (root / "1b-broken.heic").write_bytes(good[1].read_bytes()[: len(good[1].read_bytes()) // 2])
    files = [FileRef(str(p), str(root)) for p in sorted(root.iterdir())]
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        async with Indexer(store, image_embedder, workers=2, batch_size=4) as indexer:
            summary = await indexer.index(files)
        assert summary.indexed == 3 and [Path(p).name for p, _ in summary.failed] == ["1b-broken.heic"]
        for i, path in enumerate(good):
            row = await store.get_one(image_key(str(path)))
            assert row["error"] is None and row["width"] == 640 + 32 * i


async def test_heic_and_tiff_reach_the_browser_as_renditions(
    tmp_path: Path, image_embedder: ImageEmbedder, text_embedder: TextEmbedder, tiny_model_dir: Path
) -> None:
    root = tmp_path / "Pictures"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    phone = heic(root / "IMG_0001.HEIC", picture((3000, 2000)), exif)
    scan = root / "scan.tif"
    picture((900, 600)).save(scan)
    jpeg = root / "plain.jpg"
    picture().save(jpeg, quality=90)
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        async with Indexer(store, image_embedder, workers=2, batch_size=4) as indexer:
            await indexer.index([FileRef(str(p), str(root)) for p in (phone, scan, jpeg)])
        app = create_app(app_config(tmp_path, tiny_model_dir), store=store, text_embedder=text_embedder)
        async with TestClient(TestServer(app)) as client:
            shown = await client.get(f"/api/images/{image_key(str(phone))}")
            assert shown.status == 200 and shown.content_type == "image/webp"
            with Image.open(io.BytesIO(await shown.read())) as rendition:
                assert (
                    max(rendition.size) == 2560 and rendition.width < rendition.height
                )  # upright, a screen's
            original = await client.get(f"/api/images/{image_key(str(phone))}?original=1")
            assert original.content_type == "image/heif" and await original.read() == phone.read_bytes()
            assert original.headers["Content-Disposition"] == 'attachment; filename="IMG_0001.heic"'
            tiff = await client.get(f"/api/images/{image_key(str(scan))}")
            assert tiff.content_type == "image/webp"
            plain = await client.get(f"/api/images/{image_key(str(jpeg))}")
            assert plain.content_type == "image/jpeg" and await plain.read() == jpeg.read_bytes()
            assert (await client.get(f"/api/images/{image_key(str(jpeg))}?original=maybe")).status == 400
