"""The CPU image tower in int8 (dynamic quantisation of its linear layers), kept only where it
stays true to float32 with the weights actually loaded (:func:`quantise_checked`)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch

log = logging.getLogger("image_search.models.model")

# The int8 tower must give embeddings within this cosine of float32's, checked on the user's own
# weights when the model loads; below it the float32 tower stays (and the log says so).
INT8_MIN_COSINE = 0.99


def photo_like(height: int, width: int, n: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` uint8 pictures of smooth colour ramps and noise, as photos have both."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramps = [x / width, y / height, (x + y) / (width + height)]
    pictures = [
        np.clip(
            np.stack([r * 255 * rng.random() for r in ramps], -1) + rng.normal(0, 20, (height, width, 3)),
            0,
            255,
        )
        for _ in range(n)
    ]
    return np.stack(pictures).astype(np.uint8)


def quantise_checked(embedder: Any) -> bool:
    """Swap ``embedder.model`` for its int8 version (weights per channel, activations per batch)
    where four photo-like pictures embed within :data:`INT8_MIN_COSINE` of float32 with these very
    weights: random weights measured 0.9997 (SigLIP 2 B/16, Debian's wallpapers), and a trained
    tower's outlying activations could do worse. Records the cosine and the precision."""
    pictures = photo_like(embedder.crop.crop_height, embedder.crop.crop_width)
    exact = embedder.embed_pixels(pictures)
    plain = embedder.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice, not ours to act on
        embedder.model = torch.ao.quantization.quantize_dynamic(plain, {torch.nn.Linear}, dtype=torch.qint8)
    embedder.int8_cosine = float((embedder.embed_pixels(pictures) * exact).sum(axis=1).min())
    if embedder.int8_cosine >= INT8_MIN_COSINE:
        log.info("image model in int8 (cosine %.4f to float32)", embedder.int8_cosine)
        embedder.precision = "int8"
        return True
    log.warning(
        "the image model stays float32: in int8 its embeddings were %.4f from float32's (at least %.2f "
        "wanted); dtype=float32 skips this check",
        embedder.int8_cosine,
        INT8_MIN_COSINE,
    )
    embedder.model = plain
    return False
