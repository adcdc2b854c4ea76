"""Near-duplicates: the same picture in other sizes or encodings, or a burst, found and grouped.

Pairs need two witnesses, the image vectors and the perceptual fingerprints (grouping); the
pairs of close fingerprints are found by multi-index hashing (hashjoin), or by an exact vector
self-join where the fingerprints are too alike (vectorjoin); the vectors' threshold is measured
on the library's own photos with its own model (calibration). Reads the library in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import face

if TYPE_CHECKING:  # what the shells use, named for readers and type checkers
    from .calibration import Calibration, chosen, measure_library
    from .grouping import Groups, Settings, group_library
else:  # loaded on first use (image_search/_face.py)
    __getattr__, __all__ = face(
        __name__,
        calibration=("Calibration", "chosen", "measure_library"),
        grouping=("Groups", "Settings", "group_library"),
    )
