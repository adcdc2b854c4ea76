"""Decoding and preprocessing: equal to CLIPImageProcessor, upright, every mode, bad files named."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from image_search.models.model import ImageEmbedder
from image_search.pictures.imaging import CropSpec, is_candidate, prepare
from image_search.search.facts import taken_at

from .conftest import make_photo

SPEC = CropSpec()


def reference_pixels(proc: CLIPImageProcessorPil, image: Image.Image) -> torch.Tensor:
    return proc(images=image, return_tensors="pt")["pixel_values"]


def ours(embedder: ImageEmbedder, path: Path, draft: bool) -> torch.Tensor:
    prepared = prepare(str(path), embedder.crop, 1000, draft=draft)
    assert prepared.error is None, prepared.error
    return embedder.normalise_pixels(torch.from_numpy(prepared.pixels[None]))


def test_preprocessing_equals_clip_image_processor_on_real_photos(
    real_photos: list[Path], image_embedder: ImageEmbedder, tiny_model_dir: Path
) -> None:
    """Without draft decoding our pipeline is the processor's, to float rounding (≤ 1e-5)."""
    proc = CLIPImageProcessorPil.from_pretrained(tiny_model_dir)
    for path in real_photos:
        with Image.open(path) as image:
            expected = reference_pixels(proc, image.convert("RGB"))
        got = ours(image_embedder, path, draft=False)
        assert got.shape == expected.shape == (1, 3, 224, 224)
        assert (got - expected).abs().max().item() <= 1e-5, path


def test_draft_decoding_stays_within_stated_tolerance(
    real_photos: list[Path], image_embedder: ImageEmbedder, tiny_model_dir: Path
) -> None:
    """Draft mode (JPEG decoded at 1/2..1/8 scale, never below 448 px) changes pixels slightly:
    mean absolute difference ≤ 0.03 in normalised units (≈ 2/255) and the embedding's cosine to the
    full decode ≥ 0.995. This is the tolerance the README states."""
    proc = CLIPImageProcessorPil.from_pretrained(tiny_model_dir)
    jpegs = [p for p in real_photos if p.suffix.lower() in {".jpg", ".jpeg"}]
    assert jpegs
    for path in jpegs:
        with Image.open(path) as image:
            expected = reference_pixels(proc, image.convert("RGB"))
        got = ours(image_embedder, path, draft=True)
        assert (got - expected).abs().mean().item() <= 0.03, path
        with torch.inference_mode():
            a = image_embedder.model(got)
            b = image_embedder.model(expected)
        assert torch.nn.functional.cosine_similarity(a, b).item() >= 0.995, path


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A portrait photo stored landscape with Orientation=6 comes out upright, and its reported
    size is the upright size."""
    upright = np.zeros((400, 300, 3), dtype=np.uint8)
    upright[:100] = (255, 0, 0)  # red band on top of the upright picture
    rotated = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    rotated.save(path, exif=exif, quality=95)
    prepared = prepare(str(path), SPEC, 100)
    assert prepared.error is None
    assert (prepared.width, prepared.height) == (300, 400)
    top = prepared.pixels[:20].reshape(-1, 3).mean(axis=0)
    bottom = prepared.pixels[-20:].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[1] < 60, top
    assert bottom[0] < 60, bottom


def test_taken_at_from_exif_else_undated_unless_file_times(tmp_path: Path) -> None:
    """A photo without a date taken is undated (a copied file's time is the day it was copied),
    unless the user asks for file times; rows indexed before held the file time as their date
    (to the microsecond): those read as undated too."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 18:30:05"
    with_date = make_photo(tmp_path / "dated.jpg", exif=exif)
    taken = dt.datetime(2019, 7, 14, 18, 30, 5, tzinfo=dt.UTC)
    assert prepare(str(with_date), SPEC, 100).taken_at == taken
    plain = make_photo(tmp_path / "plain.png")
    os.utime(plain, ns=(0, 1_563_129_005_123_456_789))  # 2019-07-14 18:30:05.123456789
    facts = prepare(str(plain), SPEC, 100)
    assert facts.taken_at is None
    row = {"taken_at": None, "mtime_ns": facts.mtime_ns}
    assert math.isnan(taken_at(row)) and taken_at(row, file_times=True) == 1_563_129_005.123456789
    old = {"taken_at": dt.datetime(2019, 7, 14, 18, 30, 5, 123456, tzinfo=dt.UTC), "mtime_ns": facts.mtime_ns}
    assert math.isnan(taken_at(old)) and taken_at(old, file_times=True) == 1_563_129_005.123456789
    exif_dated = {"taken_at": taken, "mtime_ns": facts.mtime_ns}
    assert taken_at(exif_dated) == taken_at(exif_dated, file_times=True) == taken.timestamp()


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "CMYK", "L", "I;16", "1"])
def test_every_mode_becomes_rgb(tmp_path: Path, mode: str) -> None:
    base = Image.open(make_photo(tmp_path / "base.png", (300, 200)))
    if mode == "I;16":
        array = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(array)
        assert image.mode.startswith("I;16")
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    image.save(path)
    prepared = prepare(str(path), SPEC, 100)
    assert prepared.error is None, prepared.error
    assert prepared.pixels.shape == (224, 224, 3) and prepared.pixels.dtype == np.uint8
    if mode == "I;16":  # 16-bit scaled to 8-bit, not clipped to white
        assert 30 < prepared.pixels.mean() < 225


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    red = Image.new("RGB", (100, 100), (255, 0, 0))
    blue = Image.new("RGB", (100, 100), (0, 0, 255))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)
    prepared = prepare(str(path), SPEC, 100)
    assert prepared.error is None
    assert prepared.pixels[..., 0].mean() > 200 and prepared.pixels[..., 2].mean() < 50


def test_bad_files_give_reasons_not_exceptions(tmp_path: Path) -> None:
    good = make_photo(tmp_path / "good.jpg", (800, 600))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not a picture at all")
    cases = {
        truncated: "cannot decode",
        empty: "empty file",
        text: "not an image",
        tmp_path / "gone.jpg": "no longer exists",
    }
    for path, reason in cases.items():
        prepared = prepare(str(path), SPEC, 100)
        assert prepared.pixels is None
        assert prepared.error is not None and reason in prepared.error, (path, prepared.error)


def test_megapixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    """A 12000x10000 PNG (120 MP) is refused by its header, without decoding its pixels."""
    path = tmp_path / "huge.png"
    Image.new("L", (12000, 10000)).save(path, optimize=False, compress_level=9)
    prepared = prepare(str(path), SPEC, max_megapixels=100)
    assert prepared.pixels is None
    assert prepared.error is not None and "120 MP" in prepared.error and "max_megapixels" in prepared.error


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("a.jpg", True),
        ("B.JPEG", True),
        ("c.webp", True),
        ("d.heic.part", False),
        (".hidden.jpg", False),
        ("e.jpg~", False),
        ("f.crdownload", False),
        ("g.tmp", False),
        ("notes.txt", False),
        ("h.png", True),
    ],
)
def test_candidate_names(name: str, wanted: bool) -> None:
    assert is_candidate(name) is wanted


def test_only_complete_jpegs_are_left_to_the_gpu(tmp_path: Path) -> None:
    """nvJPEG can turn a truncated JPEG into grey garbage: such files stay on the CPU path, where
    Pillow reports them."""
    whole = make_photo(tmp_path / "whole.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:3000])
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(whole.read_bytes() + b"\0" * 100)
    spec = CropSpec()
    assert prepare(str(whole), spec, 100.0, gpu_jpeg=True).gpu
    assert prepare(str(padded), spec, 100.0, gpu_jpeg=True).gpu
    truncated = prepare(str(cut), spec, 100.0, gpu_jpeg=True)
    assert not truncated.gpu and truncated.error and "truncated" in truncated.error
    assert truncated.hash == prepare(str(cut), spec, 100.0).hash is not None
