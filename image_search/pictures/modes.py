"""Pictures of any mode as 8-bit RGB, without widening a big one: 16-bit, 32-bit and float
greyscale are brought to 8 bits a band of rows at a time (a whole 100 MP 16-bit PNG widened to
float64 took 800 MB more); palette, alpha and CMYK convert through Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image

WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16-bit, 32-bit and float greyscale
BAND_PIXELS = 1 << 22


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode: palette, alpha, CMYK, 16-bit and float greyscale included."""
    if image.mode == "RGB":
        return image
    if image.mode in WIDE:
        image = eight_bits(image)
    if image.mode in ("P", "PA", "LA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def eight_bits(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale picture as 8-bit greyscale, scaled to its range
    (16-bit: 0-65535; else 0-255, or 0-65535 where values pass 255), a band of rows at a time: a
    whole 100 MP 16-bit PNG widened to float64 took 800 MB more, 2.7 GB with what followed."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // max(width, 1))
    bands = [(0, y, width, min(height, y + rows)) for y in range(0, height, rows)]
    top = 65535.0
    if not image.mode.startswith("I;16"):
        top = 255.0
        for box in bands:
            if np.nanmax(np.asarray(image.crop(box), dtype=np.float32), initial=0.0) > 255:
                top = 65535.0
                break
    out = np.empty((height, width), dtype=np.uint8)
    for box in bands:
        part = np.asarray(image.crop(box), dtype=np.float32)
        part = np.nan_to_num(part * (255.0 / top) + 0.5, nan=0.0, posinf=255.0, neginf=0.0)
        out[box[1] : box[3]] = np.clip(part, 0, 255)
    return Image.fromarray(out, "L")


def with_orientation(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` carrying the EXIF orientation of the picture it was made from."""
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.info["exif"] = exif.tobytes()
    return image
