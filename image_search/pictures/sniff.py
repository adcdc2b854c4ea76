"""What a file is before a byte of it is hashed or decoded: no larger than a photo can be, and
starting as a format image-search reads (a 6 GiB sparse ".jpg" was hashed for 12.7 s first)."""

from __future__ import annotations

import os

MAX_FILE = 1 << 30  # the largest file indexed (and served): no photo is larger
# The first bytes of every format Pillow opens for us (HEIF and AVIF: an ISO box "ftyp" at 4).
MAGIC = (
    b"\xff\xd8\xff",  # JPEG, MPO
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little- and big-endian, and BigTIFF
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
)


def looks_like_an_image(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts as a format image-search reads does (camera RAW files aside: their
    formats are LibRaw's to know)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return True  # the read that follows says why
    return head.startswith(MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head[4:8] == b"ftyp"
