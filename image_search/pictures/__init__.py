"""Pictures: finding them in folders and reading them.

What a file is (sniff, modes, raw for camera RAW, exifdate for when it was taken), decoding it
upright to the model's input (imaging, naflex for a variable patch grid), its perceptual
fingerprint, its thumbnails, the folders' walk and filters (scan), and a served file opened once
beneath its folder (opening). Pillow and numpy only: no torch, no database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import lazy

if TYPE_CHECKING:
    from .imaging import CropSpec, ImageError, camera, configure_pillow, decode_rgb, open_checked
    from .opening import Indexed, NotServable, open_indexed, read_at
    from .scan import Filter, normalise_root, root_of, walk
    from .thumbs import DEFAULT_SIZE, FORMATS, SIZES, Thumbnails

# The face: what the shells use, each name loaded from its module on first use.
_FACE = {
    "CropSpec": "imaging",
    "DEFAULT_SIZE": "thumbs",
    "FORMATS": "thumbs",
    "Filter": "scan",
    "ImageError": "imaging",
    "Indexed": "opening",
    "NotServable": "opening",
    "SIZES": "thumbs",
    "Thumbnails": "thumbs",
    "camera": "imaging",
    "configure_pillow": "imaging",
    "decode_rgb": "imaging",
    "normalise_root": "scan",
    "open_checked": "imaging",
    "open_indexed": "opening",
    "read_at": "opening",
    "root_of": "scan",
    "walk": "scan",
}
__all__ = sorted(_FACE)
__getattr__ = lazy(__name__, _FACE)
