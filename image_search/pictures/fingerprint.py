"""Perceptual fingerprints: what confirms that two photos with close CLIP vectors are the same
picture (another resolution, another compression, a burst), not two similar pictures.

A fingerprint is 57 bytes: a flag, a 64-bit DCT hash of the luminance (pHash: 32x32 box-reduced
grey, 2-D DCT, the 8x8 lowest frequencies against their median) and a 4x4 grid of mean colours.
The hash sees structure and is blind to colour; the grid sees colour and tone. Measured on Debian's
wallpapers (89 distinct files), ``benchmarks/test_duplicates.py`` and README "Near-duplicates":

* each picture resized to 1/2..1/8 and saved as JPEG at quality 30-85: hash distance <= 6 bits,
  colour distance <= 1.6;
* recoloured variants (Ubuntu-Mate Cold/Warm, Plasma light/dark): hash 6-8 bits, but colour
  13.7-57, so the grid tells them apart;
* a flat picture (std of the grey 32x32 below 2 levels) has no structure to hash: the flag is off
  and only an identical file can be its duplicate.

Pure functions of arrays; the reductions to 32x32 grey and 4x4 colour are made by Pillow (CPU
decoding) or torch (GPU decoding), and both end in :func:`from_reduced`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

SIZE = 57
GREY = 32
GRID = 4
FLAT_STD = 2.0
# Defaults for grouping, from the measurements above (with headroom for bursts).
HASH_BITS = 10
COLOUR = 8.0

_k = np.arange(GREY)
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:, None] / (2 * GREY))  # DCT-II basis, unscaled


def from_reduced(grey: np.ndarray, grid: np.ndarray) -> bytes:
    """The fingerprint of a picture from its 32x32 grey reduction (0-255) and its 4x4x3 colour
    reduction (0-255)."""
    grey = np.asarray(grey, dtype=np.float64).reshape(GREY, GREY)
    textured = grey.std() >= FLAT_STD
    low = (_DCT @ grey @ _DCT.T)[:8, :8].ravel()
    bits = low > np.median(low)
    hashed = int(np.packbits(bits).view(">u8")[0]) if textured else 0
    colours = np.clip(np.rint(np.asarray(grid, dtype=np.float64)), 0, 255).astype(np.uint8)
    return bytes([int(textured)]) + hashed.to_bytes(8, "big") + colours.reshape(-1).tobytes()


def of_image(image: Image.Image) -> bytes:
    """The fingerprint of an upright RGB picture (any size: it is box-reduced here)."""
    grey = image.convert("L").resize((GREY, GREY), Image.Resampling.BOX)
    grid = image.resize((GRID, GRID), Image.Resampling.BOX)
    return from_reduced(np.asarray(grey), np.asarray(grid))


class Fingerprints:
    """Many fingerprints unpacked into arrays, for comparing pairs quickly. ``None`` entries are
    rows without one (indexed before fingerprints existed): they match nothing."""

    def __init__(self, blobs: Sequence[bytes | None]) -> None:
        n = len(blobs)
        raw = np.zeros((n, SIZE), dtype=np.uint8)
        present = np.zeros(n, dtype=bool)
        for i, blob in enumerate(blobs):
            if blob is not None and len(blob) == SIZE:
                raw[i] = np.frombuffer(blob, dtype=np.uint8)
                present[i] = True
        self.present = present
        self.textured = present & (raw[:, 0] == 1)
        self.hash = raw[:, 1:9].copy().view(">u8")[:, 0].astype(np.uint64)
        self.colour = raw[:, 9:].astype(np.int16)

    def __len__(self) -> int:
        return len(self.present)

    def hash_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Hamming distances between the hashes of rows ``a`` and rows ``b`` (index arrays)."""
        x = np.bitwise_xor(self.hash[a], self.hash[b])
        return np.unpackbits(x.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)

    def colour_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Mean absolute difference of the colour grids (0-255)."""
        return np.abs(self.colour[a] - self.colour[b]).mean(axis=1)

    def confirm(
        self, a: np.ndarray, b: np.ndarray, hash_bits: int = HASH_BITS, colour: float = COLOUR
    ) -> np.ndarray:
        """Which pairs (a[i], b[i]) the fingerprints confirm as the same picture: both textured,
        hashes within ``hash_bits``, colours within ``colour``."""
        if len(a) == 0:
            return np.zeros(0, dtype=bool)
        ok = self.textured[a] & self.textured[b]
        return ok & (self.hash_distance(a, b) <= hash_bits) & (self.colour_distance(a, b) <= colour)
