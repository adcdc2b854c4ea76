"""DNG files for the tests, written with PiDNG: the sensor data of an RGGB camera whose colours
are linear sRGB (so LibRaw's decode can be compared with the picture it came from), with or
without an embedded JPEG preview, an orientation and a date taken.

PiDNG writes the raw image alone; the preview is a second IFD chained after it (a reduced-
resolution JPEG image, NewSubfileType 1), where LibRaw looks for one.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from pidng.core import RAW2DNG
from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation
from pidng.dng import DNGTags, Tag
from PIL import Image

# XYZ (D65) to linear sRGB: with it as ColorMatrix1 the camera's colours are linear sRGB.
XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
WHITE = 4095  # 12 bits


def write_dng(
    path: Path,
    picture: Image.Image,
    *,
    preview: Image.Image | None = None,
    orientation: int = 1,
    taken: str = "2019:07:14 16:20:00",
) -> Path:
    """The picture as the sensor data of a DNG (its size even); ``preview`` embedded as JPEG."""
    rgb = np.asarray(picture.convert("RGB"))
    height, width = rgb.shape[:2]
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, width),
        (Tag.ImageLength, height),
        (Tag.TileWidth, width),
        (Tag.TileLength, height),
        (Tag.Orientation, orientation),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1),
        (Tag.BitsPerSample, 12),
        (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0),
        (Tag.WhiteLevel, WHITE),
        (Tag.ColorMatrix1, [[round(x * 10000), 10000] for row in XYZ_TO_SRGB for x in row]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_2),
        (Tag.Make, "image-search"),
        (Tag.Model, "Test camera"),
        (Tag.DateTime, taken),
    ):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    data = bytes(writer.convert(_mosaic(rgb)))
    if preview is not None:
        jpeg = io.BytesIO()
        preview.convert("RGB").save(jpeg, "JPEG", quality=90)
        data = _with_preview(data, jpeg.getvalue(), preview.size)
    path.write_bytes(data)
    return path


def _mosaic(rgb: np.ndarray) -> np.ndarray:
    """RGGB samples of the picture in linear light (the sRGB curve undone), 12 bits."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    v = np.round(linear * WHITE).astype(np.uint16)
    raw = np.empty(rgb.shape[:2], np.uint16)
    raw[0::2, 0::2] = v[0::2, 0::2, 0]
    raw[0::2, 1::2] = v[0::2, 1::2, 1]
    raw[1::2, 0::2] = v[1::2, 0::2, 1]
    raw[1::2, 1::2] = v[1::2, 1::2, 2]
    return raw


def _with_preview(dng: bytes, jpeg: bytes, size: tuple[int, int]) -> bytes:
    """Chain a JPEG preview IFD after PiDNG's only IFD (little-endian, first IFD at 8)."""
    count = struct.unpack_from("<H", dng, 8)[0]
    next_pointer = 8 + 2 + 12 * count
    if struct.unpack_from("<I", dng, next_pointer)[0] != 0:
        raise ValueError("the DNG already has a second IFD")
    out = bytearray(dng) + b"\0" * (-len(dng) % 4)
    at = len(out)
    entries = [  # (tag, type, value): SHORT = 3, LONG = 4, one value each, sorted by tag
        (254, 4, 1),  # NewSubfileType: reduced-resolution copy
        (256, 4, size[0]),
        (257, 4, size[1]),
        (258, 3, 8),
        (259, 3, 7),  # JPEG
        (262, 3, 6),  # YCbCr
        (273, 4, at + 2 + 12 * 10 + 4),  # StripOffsets: right after this IFD
        (277, 3, 3),
        (278, 4, size[1]),
        (279, 4, len(jpeg)),
    ]
    out += struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    out += struct.pack("<I", 0) + jpeg
    struct.pack_into("<I", out, next_pointer, at)
    return bytes(out)
