"""The date a photo was taken, from its EXIF block, for every format (:mod:`image_search.pictures.imaging`
reads the block from an image, :mod:`image_search.pictures.raw` from a RAW file's TIFF header)."""

from __future__ import annotations

import datetime as dt

from PIL import Image

EXIF_IFD = 0x8769
DATETIME = 0x0132
DATETIME_ORIGINAL = 0x9003
OFFSET_TIME_ORIGINAL = 0x9011


def date_taken(exif: Image.Exif) -> dt.datetime | None:
    """EXIF DateTimeOriginal (with its offset when recorded), else DateTime; None without either.
    A time without an offset is kept as the wall clock, in UTC."""
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except Exception:  # a broken EXIF block must not fail the photo
        return None
    raw = sub.get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    if not isinstance(raw, str):
        return None
    try:
        stamp = dt.datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = sub.get(OFFSET_TIME_ORIGINAL)
    if isinstance(offset, str):
        try:
            return dt.datetime.strptime(stamp.isoformat() + offset.strip("\x00 "), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            pass
    return stamp.replace(tzinfo=dt.UTC)
