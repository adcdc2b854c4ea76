"""Reading photos: file facts, decoding and the model's resize/crop, without torch.

This module runs in the decoding worker processes, so it imports only Pillow and numpy.
The crop it returns is uint8 (H, W, 3) (a NaFlex model's patches: :mod:`image_search.pictures.naflex`);
scaling to [0, 1] and the model's mean/std are applied on the model's device
(:mod:`image_search.models.model`), which equals the ``CLIPImageProcessor`` pipeline: convert to RGB,
resize the shortest side with bicubic, centre crop, rescale, normalise (SigLIP's: the whole
picture resized to the square input).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import fingerprint, naflex, raw
from .exifdate import date_taken
from .modes import WIDE, eight_bits, to_rgb, with_orientation
from .opening import signed64
from .sniff import MAX_FILE, looks_like_an_image


class ThumbnailSink(Protocol):
    """Where :func:`prepare` leaves the grid's thumbnail (:class:`image_search.pictures.thumbs.Thumbnails`,
    which reads pictures through this module: this one names no thumbnail code)."""

    def save(self, rgb: Image.Image, content_hash: str) -> bool: ...


# HEIC/HEIF through pillow-heif, a dependency (registered with Pillow by configure_pillow());
# still optional in the code, for an install that lacks its wheel.
HEIF = importlib.util.find_spec("pillow_heif") is not None

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
    | ({".heic", ".heif"} if HEIF else set())
    | raw.RAW_EXTENSIONS
)

HASH_CHUNK = 1 << 20
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def configure_pillow(heif_threads: int | None = None) -> None:
    """Start-up, in every process that decodes photos (the CLI, the web app, each decoding
    worker): Pillow's own bomb check is replaced by ours (``max_megapixels``, checked from the
    header with a reason we record), and HEIC/HEIF is registered (pillow-heif). A decoding worker
    passes ``heif_threads``, its share of the cores: libheif's default of 4 threads in each of
    several workers would oversubscribe them. Idempotent."""
    Image.MAX_IMAGE_PIXELS = None
    if HEIF:
        from pillow_heif import options, register_heif_opener

        register_heif_opener()
        if heif_threads is not None:
            options.DECODE_THREADS = max(1, heif_threads)


class ImageError(Exception):
    """A file that cannot be used as a photo; the message is the reason recorded for it."""


@dataclass(frozen=True)
class CropSpec:
    """The model's preprocessing geometry (from its processor config): CLIP resizes the shortest
    side and crops the centre; SigLIP (``square``) resizes the whole picture to the input size;
    SigLIP 2 NaFlex (``max_patches``) keeps its shape in at most that many ``patch``-sided patches
    (the other sides then say how large a decode it needs: ``patch * sqrt(max_patches)``)."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    resample: int = Image.Resampling.BICUBIC
    square: bool = False
    patch: int = 0
    max_patches: int = 0  # NaFlex when above 0


@dataclass
class Prepared:
    """What a worker returns for one file: its facts, and the crop or the reason it failed."""

    path: str
    size: int
    mtime_ns: int
    dev: int | None = None  # the device and inode read (see image_search.pictures.opening)
    ino: int | None = None
    hash: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: dt.datetime | None = None
    pixels: np.ndarray | None = None
    fingerprint: bytes | None = None  # see image_search.pictures.fingerprint
    error: str | None = None
    vanished: bool = False  # the file no longer exists: nothing to record
    orientation: int = 1  # EXIF orientation, for a JPEG left to the GPU to decode
    gpu: bool = False  # facts only: the pixels are decoded on the GPU (nvJPEG)


def _hash_and_tail(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """The content hash and the file's last bytes (a complete JPEG ends with its EOI marker)."""
    digest = hashlib.blake2b(digest_size=16)
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            tail = (tail + chunk)[-4096:]
    return digest.hexdigest(), tail


def _complete_jpeg(tail: bytes) -> bool:
    """Whether a JPEG's data ends with the EOI marker (zero padding after it allowed). nvJPEG
    may decode a truncated file into grey garbage instead of failing; Pillow reports it."""
    return tail.rstrip(b"\0").endswith(b"\xff\xd9")


def taken_at(image: Image.Image) -> dt.datetime | None:
    """EXIF DateTimeOriginal (with its offset when recorded), or None."""
    try:
        exif = image.getexif()
    except Exception:  # a broken EXIF block must not fail the photo
        return None
    return date_taken(exif)


# The formats this project indexes and serves. Pillow is asked to try these plugins alone: never
# EPS (which runs Ghostscript where it is installed), PSD, ICO or any other it knows.
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")


def open_formats() -> list[str]:
    """FORMATS as far as this Pillow has their plugins (AVIF and HEIF depend on the build)."""
    Image.init()
    return [name for name in FORMATS if name in Image.OPEN]


def open_checked(path: str | os.PathLike[str], max_megapixels: float) -> Image.Image:
    """Open an image lazily, refusing non-images, other formats and oversized ones before any
    pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(path, formats=open_formats())
    except UnidentifiedImageError:
        raise ImageError("not an image in a format image-search reads") from None
    except OSError as exc:
        raise ImageError(f"cannot open: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError("image has no pixels")
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        image.close()
        raise ImageError(
            f"image is {width}x{height} ({megapixels:.0f} MP), above max_megapixels={max_megapixels:g}"
        )
    return image


def decode_rgb(image: Image.Image, spec: CropSpec, *, draft: bool = True) -> Image.Image:
    """Decode to upright RGB. JPEGs decode at a reduced scale (Pillow's draft mode) that keeps
    the shortest side at least twice the model's input, which is 5x faster on a 12 MP photo.
    A HEIC/HEIF decodes its embedded rendition instead of the full image when one covers the
    model's input and is a scaled copy of it (same orientation, crop, colour profile): an iPhone
    photo carries a 320x240 one, 60x faster to decode than its 12 MP tiles."""
    side = _side(spec)
    if draft and image.format == "JPEG":
        image.draft("RGB", (2 * side, 2 * side))
    elif draft and image.format == "HEIF":
        image.draft(image.mode, (side, side))
    if image.format != "HEIF":  # a HEIF file opens at its primary image, which need not be the first
        image.seek(0)  # animated files: the first frame
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            if image.mode in WIDE:  # 8 bits first, then smaller: no full-size wide copies
                narrow = eight_bits(image)
                factor = min(narrow.size) // (2 * side) if draft else 0
                if factor >= 2:
                    narrow = narrow.reduce(factor)
                upright = ImageOps.exif_transpose(with_orientation(narrow, _orientation(image)))
            else:
                upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode: {exc}") from None
    return to_rgb(upright)


def model_input(image: Image.Image, spec: CropSpec) -> np.ndarray:
    """Resize the shortest side to ``spec.shortest_edge`` (bicubic), centre crop: uint8 (H, W, 3)
    (for a NaFlex spec: its patches, :func:`image_search.pictures.naflex.patches`).

    Same arithmetic as transformers' ``get_resize_output_image_size(default_to_square=False)``
    and ``center_crop``.
    """
    return model_pixels(model_resize(image, spec), spec)


def model_resize(image: Image.Image, spec: CropSpec) -> Image.Image:
    """The first half of :func:`model_input`: the whole picture, shortest side ``spec.shortest_edge``
    (for a ``square`` spec: resized to the input, its shape not kept; NaFlex: to its patch grid)."""
    if spec.max_patches:
        return naflex.resize(image, spec.patch, spec.max_patches, spec.resample)
    if spec.square:
        return image.resize((spec.crop_width, spec.crop_height), resample=spec.resample)
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return image.resize((new_w, new_h), resample=spec.resample)


def model_pixels(resized: Image.Image, spec: CropSpec) -> np.ndarray:
    """The second half of :func:`model_input`: the centre, padded where the picture is too thin
    (NaFlex: the patches)."""
    if spec.max_patches:
        return naflex.patches(resized, spec.patch, spec.max_patches)
    new_w, new_h = resized.size
    array = np.asarray(resized)
    ch, cw = spec.crop_height, spec.crop_width
    if new_h < ch or new_w < cw:  # a very thin image: pad like transformers does
        padded = np.zeros((max(ch, new_h), max(cw, new_w), 3), dtype=np.uint8)
        top, left = (padded.shape[0] - new_h) // 2, (padded.shape[1] - new_w) // 2
        padded[top : top + new_h, left : left + new_w] = array
        array, new_h, new_w = padded, padded.shape[0], padded.shape[1]
    top = (new_h - ch) // 2
    left = (new_w - cw) // 2
    return array[top : top + ch, left : left + cw].copy()  # owned and writable: it crosses processes


def prepare(
    path: str,
    spec: CropSpec,
    max_megapixels: float,
    draft: bool = True,
    gpu_jpeg: bool = False,
    thumbnails: ThumbnailSink | None = None,
) -> Prepared:
    """Everything the indexer needs from one file. Never raises for a bad file: the reason is
    in ``error``, so one file cannot disturb another's result.

    With ``gpu_jpeg`` a baseline RGB/greyscale JPEG is not decoded here: only its facts are read
    and ``gpu`` is set, for the GPU to decode it (other files are decoded as usual). With
    ``thumbnails`` the grid's thumbnail is made from the same decoded picture."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Prepared(path=path, size=0, mtime_ns=0, error="file no longer exists", vanished=True)
    except OSError as exc:
        return Prepared(path=path, size=0, mtime_ns=0, error=f"cannot stat: {exc.strerror or exc}")
    result = Prepared(path, st.st_size, st.st_mtime_ns, dev=st.st_dev, ino=signed64(st.st_ino))
    if st.st_size == 0:
        result.error = "empty file"
        return result
    if st.st_size > MAX_FILE:  # before a byte is hashed: a 6 GiB sparse ".jpg" took 12.7 s
        result.error = f"file is {st.st_size / 2**30:.1f} GiB, above the {MAX_FILE >> 30} GiB a photo can be"
        return result
    if not raw.is_raw(path) and not looks_like_an_image(path):
        result.error = "not an image in a format image-search reads (its first bytes say so)"
        return result
    try:
        result.hash, tail = _hash_and_tail(path)
        decoded = _read(path, result, spec, max_megapixels, draft, gpu_jpeg and _complete_jpeg(tail))
        if decoded is not None:
            result.fingerprint = fingerprint.of_image(decoded)
            resized = model_resize(decoded, spec)
            result.pixels = model_pixels(resized, spec)
            if thumbnails is not None and result.hash:
                # From the model's resized picture (the whole of it, ~400 px wide): a few ms,
                # where shrinking a 15 MP PNG again would cost as much as the model's resize.
                # A square model input has lost the shape (a NaFlex one rounded it): then a resize
                # of its own.
                own = spec.square or spec.max_patches
                shaped = model_resize(decoded, replace(spec, square=False, max_patches=0)) if own else resized
                thumbnails.save(shaped, result.hash)
    except ImageError as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"cannot read: {exc.strerror or exc}"
    except Exception as exc:  # a decoder bug must cost one file, not the batch
        result.error = f"cannot decode: {type(exc).__name__}: {exc}"
    return result


def _read(
    path: str, result: Prepared, spec: CropSpec, max_megapixels: float, draft: bool, gpu_jpeg: bool
) -> Image.Image | None:
    """Fill in the file's facts and return its upright picture, or None for a JPEG left to the
    GPU (``gpu_jpeg``: a complete baseline RGB/greyscale one)."""
    if raw.is_raw(path):
        picture = read_raw(path, max_megapixels, _side(spec) if draft else None)
        result.format = Path(path).suffix[1:].upper()
        result.taken_at = picture.taken_at
        result.width, result.height = picture.width, picture.height
        return picture.image
    with open_checked(path, max_megapixels) as image:
        result.format = image.format
        result.taken_at = taken_at(image)
        # The full-resolution upright size, read before draft mode shrinks the image.
        width, height = image.size
        result.width, result.height = (height, width) if _swaps_axes(image) else (width, height)
        if gpu_jpeg and image.format == "JPEG" and image.mode in ("RGB", "L"):
            result.orientation = _orientation(image)
            result.gpu = True
            return None
        return decode_rgb(image, spec, draft=draft)


def read_raw(path: str | os.PathLike[str], max_megapixels: float, need: int | None) -> raw.RawPicture:
    """A camera RAW file (:mod:`image_search.pictures.raw`): its preview when at least ``need`` pixels on
    the shortest side, else LibRaw's half-size decode (``None``: always that)."""
    try:
        return raw.read(path, max_megapixels, need)
    except raw.RawError as exc:
        raise ImageError(str(exc)) from None


def load_upright(
    path: str | os.PathLike[str], max_megapixels: float, spec: CropSpec, name: str | None = None
) -> Image.Image:
    """The upright RGB picture of any indexed file, decoded no larger than ``spec`` needs
    (JPEG draft mode, a HEIC's or a RAW's embedded rendition): what thumbnails and the lightbox's
    renditions are made from. ``name``: the file's own name where ``path`` has none of its
    suffix (``/proc/self/fd/N`` of a descriptor :mod:`.opening` opened)."""
    if raw.is_raw(name or path):
        return read_raw(path, max_megapixels, _side(spec)).image
    with open_checked(path, max_megapixels) as image:
        return decode_rgb(image, spec)


def camera(path: str | os.PathLike[str], name: str | None = None) -> str | None:
    """The camera that took the photo (EXIF Make and Model), from the header alone; None for a
    RAW file or a picture without them."""
    if raw.is_raw(name or path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=open_formats()) as image:
                exif = image.getexif()
    except Exception:  # no picture, or a broken EXIF block: no camera to tell
        return None
    make = str(exif.get(0x010F) or "").strip("\x00 ")
    model = str(exif.get(0x0110) or "").strip("\x00 ")
    if model.lower().startswith(make.lower()):  # "Canon" + "Canon EOS R5"
        make = ""
    text = " ".join(part for part in (make, model) if part)
    return "".join(c for c in text if c.isprintable())[:100] or None


def _side(spec: CropSpec) -> int:
    return max(spec.shortest_edge, spec.crop_height, spec.crop_width)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _swaps_axes(image: Image.Image) -> bool:
    return _orientation(image) in (5, 6, 7, 8)


def is_candidate(name: str) -> bool:
    """Whether a file name may be a photo: a known extension, not hidden, not a partial download."""
    if name.startswith(".") or name.endswith("~"):
        return False
    lower = name.lower()
    if lower.endswith((".part", ".crdownload", ".tmp", ".partial", ".download")):
        return False
    return Path(lower).suffix in IMAGE_EXTENSIONS
