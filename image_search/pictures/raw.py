"""Camera RAW files through LibRaw (rawpy), without torch: the pixels come from the embedded
JPEG preview when it covers what the caller needs (every camera writes one; most are full size
or 1-2 MP), else from LibRaw's half-size decode (no demosaicing: each 2x2 sensor block becomes
one pixel). Size, orientation and date taken come from the raw data, not the preview.

Runs in the decoding workers beside :mod:`image_search.pictures.imaging`, which calls it for the
extensions in :data:`RAW_EXTENSIONS`.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .exifdate import date_taken

RAW = importlib.util.find_spec("rawpy") is not None

# Adobe DNG, Canon, Nikon, Sony, Fujifilm, Olympus/OM, Panasonic, Pentax, Samsung, Leica, Hasselblad.
NAMES = (
    ".dng",
    ".cr2",
    ".cr3",
    ".nef",
    ".nrw",
    ".arw",
    ".raf",
    ".orf",
    ".rw2",
    ".pef",
    ".srw",
    ".rwl",
    ".3fr",
)
RAW_EXTENSIONS = frozenset(NAMES if RAW else ())

# LibRaw's flip (0, 3, 5, 6) as the transpose that shows the picture upright.
FLIPS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
EXIF_WINDOW = 1 << 20  # a TIFF-based RAW's EXIF block sits in its first KBs; read no more than this
ASPECT_SLACK = 0.02  # a preview whose shape differs more is a crop or letterboxed: not a scaled copy


class RawError(Exception):
    """A RAW file LibRaw cannot read; the message is the reason recorded for it."""


@dataclass
class RawPicture:
    """One RAW file, read: the upright full-resolution size, the date taken, the decoded picture
    and where its pixels came from ("preview" or "half-size decode")."""

    width: int
    height: int
    taken_at: dt.datetime | None
    image: Image.Image
    source: str


def is_raw(path: str | os.PathLike[str]) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in RAW_EXTENSIONS


def read(path: str | os.PathLike[str], max_megapixels: float, need: int | None) -> RawPicture:
    """Read a RAW file. ``need``: the shortest side the caller needs (the model's input, the
    lightbox's); a preview at least that large is decoded instead of the sensor data. ``None``:
    the sensor data always."""
    import rawpy

    try:
        raw = rawpy.imread(os.fspath(path))
    except (rawpy.LibRawError, rawpy.NotSupportedError, OSError) as exc:
        raise RawError(f"cannot read RAW: {_reason(exc)}") from None
    with raw:
        sizes = raw.sizes
        width, height = sizes.width, sizes.height
        if width <= 0 or height <= 0:
            raise RawError("RAW file has no pixels")
        megapixels = width * height / 1e6
        if megapixels > max_megapixels:
            raise RawError(
                f"image is {width}x{height} ({megapixels:.0f} MP), above max_megapixels={max_megapixels:g}"
            )
        flip = sizes.flip
        upright = (height, width) if flip in (5, 6) else (width, height)
        preview = None if need is None else _preview(raw, upright, flip, need)
        if preview is not None:
            image, source = preview, "preview"
        else:
            image, source = _half_size(raw), "half-size decode"
        taken = date_taken(_header_exif(path))
        if taken is None and preview is not None:
            taken = date_taken(preview.getexif())
        if taken is None:
            taken = _libraw_taken_at(raw)  # costs a decode of the sensor data where none was made
    return RawPicture(width=upright[0], height=upright[1], taken_at=taken, image=image, source=source)


def _preview(raw: object, upright: tuple[int, int], flip: int, need: int) -> Image.Image | None:
    """The embedded preview, upright RGB, when it is a scaled copy of the picture whose shortest
    side is at least ``need``; else None (no preview, too small, another shape, undecodable)."""
    import rawpy

    try:
        thumb = raw.extract_thumb()  # type: ignore[attr-defined]
    except (rawpy.LibRawError, rawpy.NotSupportedError):
        return None
    image: Image.Image
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            jpeg = Image.open(io.BytesIO(thumb.data), formats=["JPEG"])
            own = jpeg.getexif().get(0x0112, 1)
            jpeg.draft("RGB", (need, need))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                jpeg.load()
            # A preview that says how to turn itself is turned so; most do not, and show the
            # sensor's orientation, which LibRaw's flip turns upright.
            image = ImageOps.exif_transpose(jpeg) if own in range(2, 9) else _flipped(jpeg, flip)
        else:
            image = _flipped(Image.fromarray(np.ascontiguousarray(thumb.data)), flip)
    except Exception:  # a broken preview: the sensor data is still there
        return None
    image = image.convert("RGB")
    w, h = image.size
    if min(w, h) < need or abs(w * upright[1] - h * upright[0]) > ASPECT_SLACK * h * upright[0]:
        return None
    return image


def _flipped(image: Image.Image, flip: int) -> Image.Image:
    turn = FLIPS.get(flip)
    return image.transpose(turn) if turn is not None else image


def _half_size(raw: object) -> Image.Image:
    """LibRaw's half-size decode: camera white balance, sRGB (its own curve, not LibRaw's default
    BT.709 one), 8 bits, LibRaw's orientation. No auto-brightening: dcraw's stretches the
    histogram until 1% of pixels clip, which made a test scene 27 levels brighter on average."""
    import rawpy

    try:
        array = raw.postprocess(  # type: ignore[attr-defined]
            half_size=True, use_camera_wb=True, output_bps=8, gamma=(2.4, 12.92), no_auto_bright=True
        )
    except (rawpy.LibRawError, rawpy.NotSupportedError, MemoryError) as exc:
        raise RawError(f"cannot decode RAW: {_reason(exc)}") from None
    return Image.fromarray(array)


def _header_exif(path: str | os.PathLike[str]) -> Image.Exif:
    """The EXIF of a TIFF-based RAW (DNG, NEF, CR2, ARW, PEF, and ORF and RW2 under their own
    magic numbers), read from its first MiB: the date with its offset, and no sensor data
    decoded. Empty for other layouts (CR3, RAF)."""
    exif = Image.Exif()
    with open(path, "rb") as fh:
        head = fh.read(EXIF_WINDOW)
    order = head[:2]
    if order not in (b"II", b"MM") or len(head) < 8:
        return exif
    try:
        exif.load(order + (b"*\0" if order == b"II" else b"\0*") + head[4:])
    except Exception:  # not a TIFF after all, or a broken block: no date from here
        return Image.Exif()
    return exif


def _libraw_taken_at(raw: object) -> dt.datetime | None:
    """LibRaw's date taken (DateTimeOriginal where the file has it). LibRaw turns the EXIF wall
    clock into a time_t with the local zone and rawpy back with the same zone: the wall clock,
    kept like every other format's date without an offset (as UTC)."""
    try:
        stamp = raw.other.timestamp  # type: ignore[attr-defined]
    except Exception:
        return None
    if not isinstance(stamp, dt.datetime) or stamp.year <= 1970:
        return None
    return stamp.replace(tzinfo=dt.UTC)


def _reason(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else type(exc).__name__
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
