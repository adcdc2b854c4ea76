"""Pictures: finding them in folders and reading them.

What a file is (sniff, modes, raw for camera RAW, exifdate for when it was taken), decoding it
upright to the model's input (imaging, naflex for a variable patch grid), its perceptual
fingerprint, its thumbnails, the folders' walk and filters (scan), and a served file opened once
beneath its folder (opening). Pillow and numpy only: no torch, no database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import face

if TYPE_CHECKING:  # what the shells use, named for readers and type checkers
    from .imaging import CropSpec, ImageError, camera, configure_pillow, decode_rgb, open_checked
    from .opening import Indexed, NotServable, open_indexed, read_at
    from .scan import Filter, normalise_root, root_of, walk
    from .thumbs import DEFAULT_SIZE, FORMATS, SIZES, Thumbnails
else:  # loaded on first use (image_search/_face.py)
    __getattr__, __all__ = face(
        __name__,
        imaging=("CropSpec", "ImageError", "camera", "configure_pillow", "decode_rgb", "open_checked"),
        opening=("Indexed", "NotServable", "open_indexed", "read_at"),
        scan=("Filter", "normalise_root", "root_of", "walk"),
        thumbs=("DEFAULT_SIZE", "FORMATS", "SIZES", "Thumbnails"),
    )
