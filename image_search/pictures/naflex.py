"""SigLIP 2 NaFlex pictures, without torch (it runs in the decoding workers).

A NaFlex model keeps the picture's shape: it is resized, aspect ratio kept, to the largest size
whose patch grid fits ``max_patches``, each side a multiple of the patch; cut into patches; and
padded with empty patches to ``max_patches``. :func:`patches` returns that as one uint8 array, so
a batch of pictures of any shapes stacks into one array and crosses processes in one piece:

    (1 + max_patches, patch * patch * 3): row 0 the grid (rows, then columns, in patches, each a
    little-endian uint16), then the patches, each ``patch x patch x 3`` in (row, column, channel)
    order, the padding zero.

The arithmetic is ``Siglip2ImageProcessor``'s (transformers): the same binary search for the size,
Pillow's resize with the processor's filter, the same patch order. Scaling to [0, 1], the mean and
std, the attention mask and the grid as a tensor are made on the model's device
(:meth:`image_search.models.model.ImageEmbedder.model_inputs`); tests compare both halves with the
processor on real photos.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

HEADER = 1  # rows before the patches


def size_for(height: int, width: int, patch: int, max_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """The resized (height, width): the largest scale whose grid of ``patch``-sided patches is at
    most ``max_patches``, each side rounded up to a whole patch, at least one patch."""

    def side(scale: float, size: int) -> int:
        return max(patch, math.ceil(size * scale / patch) * patch)

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        if (side(scale, height) / patch) * (side(scale, width) / patch) <= max_patches:
            low = scale
        else:
            high = scale
    return side(low, height), side(low, width)


def resize(image: Image.Image, patch: int, max_patches: int, resample: int) -> Image.Image:
    """The picture at its NaFlex size (:func:`size_for`)."""
    height, width = size_for(image.height, image.width, patch, max_patches)
    return image.resize((width, height), resample=resample)


def patches(resized: Image.Image, patch: int, max_patches: int) -> np.ndarray:
    """A picture at its NaFlex size → the model's uint8 input (module docstring)."""
    array = np.asarray(resized, dtype=np.uint8)
    rows, cols = array.shape[0] // patch, array.shape[1] // patch
    if rows * cols > max_patches or rows * patch != array.shape[0] or cols * patch != array.shape[1]:
        raise ValueError(f"a {array.shape[1]}x{array.shape[0]} picture is not a NaFlex size")
    out = np.zeros((HEADER + max_patches, patch * patch * 3), dtype=np.uint8)
    out[0, :4] = np.array([rows, cols], dtype="<u2").view(np.uint8)
    grid = array.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4)
    out[HEADER : HEADER + rows * cols] = grid.reshape(rows * cols, -1)
    return out


def blank(count: int, patch: int, max_patches: int) -> np.ndarray:
    """``count`` black inputs with a 4:3 picture's grid: for warming a model and for benchmarks."""
    height, width = size_for(3, 4, patch, max_patches)
    one = patches(Image.new("RGB", (width, height)), patch, max_patches)
    return np.repeat(one[None], count, axis=0)
