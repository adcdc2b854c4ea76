"""Near-duplicates: the same picture in other sizes or encodings, or a burst, found and grouped.

Pairs need two witnesses, the image vectors and the perceptual fingerprints (grouping); the
pairs of close fingerprints are found by multi-index hashing (hashjoin), or by an exact vector
self-join where the fingerprints are too alike (vectorjoin); the vectors' threshold is measured
on the library's own photos with its own model (calibration). Reads the library in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import lazy

if TYPE_CHECKING:
    from .calibration import Calibration, chosen, measure_library
    from .grouping import Groups, Settings, group_library

# The face: what the shells use, each name loaded from its module on first use.
_FACE = {
    "Calibration": "calibration",
    "Groups": "grouping",
    "Settings": "grouping",
    "chosen": "calibration",
    "group_library": "grouping",
    "measure_library": "calibration",
}
__all__ = sorted(_FACE)
__getattr__ = lazy(__name__, _FACE)
