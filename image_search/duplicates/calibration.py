"""The near-duplicate finder's vector threshold, measured with the library's own model on its own
photos: how close a photo and its everyday copies (an export, a messenger's copy, a
re-compression) come. No value tuned on one model is applied to another.

Once per library and model, after an index run has embedded at least ``SAMPLE`` photos, the
first ``SAMPLE`` of them in key order (BLAKE2b of their paths: a spread over the folders) are
decoded in full and made into the copies of ``COPIES``; each photo and each copy is decoded and
embedded the way indexing does a file. The threshold is the lowest cosine between a photo and one
of its copies, less ``MARGIN``, within [``FLOOR``, ``CEILING``]. It is recorded on the library's
model row (so embedding again with another model drops it). Until then, the model family's value
applies (:attr:`image_search.models.families.Family.duplicate_similarity`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..pictures.imaging import CropSpec, ImageError, decode_rgb, open_checked
from ..pictures.raw import is_raw

SAMPLE = 16  # photos; each with len(COPIES) copies
MARGIN = 0.02  # below the lowest cosine seen: the sample's 80 pairs are not every library's
FLOOR = 0.8  # the web API's lowest: below it the vectors' self-join becomes n² work
CEILING = 0.99
LONGEST = 4096  # the "original" is decoded at most this long: a 100 MP panorama's copies are smaller
# (longest side, None for the photo's own; JPEG quality; share cut off the left and top): a
# re-compression, a full-size export, a web export, a messenger's copy, and the next shot of a
# burst (the camera moved a little).
COPIES: tuple[tuple[int | None, int, float], ...] = (
    (None, 50, 0.0),
    (2048, 85, 0.0),
    (1024, 75, 0.0),
    (512, 60, 0.0),
    (2048, 90, 0.04),
)

log = logging.getLogger(__name__)

Embed = Callable[[list[Image.Image]], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class Calibration:
    similarity: float  # the threshold
    lowest: float  # the lowest cosine between a photo and one of its copies
    photos: int
    copies: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, facts: dict[str, Any] | None) -> Calibration | None:
        if not isinstance(facts, dict):
            return None
        try:
            return cls(
                float(facts["similarity"]), float(facts["lowest"]), int(facts["photos"]), int(facts["copies"])
            )
        except (KeyError, TypeError, ValueError):
            return None


def threshold(lowest: float) -> float:
    """The threshold for the lowest cosine seen, in hundredths, rounded down."""
    return min(CEILING, max(FLOOR, math.floor(round((lowest - MARGIN) * 100, 6)) / 100))


def derive(originals: np.ndarray, copies: np.ndarray) -> Calibration:
    """``originals`` (n, d) unit vectors, ``copies`` (n, k, d) those of each photo's k copies."""
    cosines = np.einsum("nd,nkd->nk", originals.astype(np.float64), copies.astype(np.float64))
    lowest = float(cosines.min())
    return Calibration(threshold(lowest), round(lowest, 4), int(copies.shape[0]), int(cosines.size))


def copies_of(picture: Image.Image) -> list[bytes]:
    """The JPEG files of ``COPIES`` made from an upright RGB picture."""
    made = []
    for longest, quality, cut in COPIES:
        copy = picture
        if cut:
            width, height = picture.size
            copy = picture.crop((round(width * cut), round(height * cut), width, height))
        if longest is not None and max(copy.size) > longest:
            copy = copy.copy()
            copy.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        copy.save(out, "JPEG", quality=quality)
        made.append(out.getvalue())
    return made


def as_indexed(source: str | bytes, spec: CropSpec, max_megapixels: float) -> Image.Image:
    """A file or a JPEG's bytes decoded as indexing decodes it (JPEG draft mode included)."""
    if isinstance(source, bytes):
        with Image.open(io.BytesIO(source), formats=["JPEG"]) as image:
            return decode_rgb(image, spec)
    with open_checked(source, max_megapixels) as image:
        return decode_rgb(image, spec)


def pictures(path: str, spec: CropSpec, max_megapixels: float) -> list[Image.Image] | None:
    """The photo as indexed, then its copies as indexed; None where it cannot be read now (a RAW
    file is left out: its copies would be of its embedded rendition)."""
    if is_raw(path):
        return None
    try:
        with open_checked(path, max_megapixels) as image:
            if image.format == "JPEG":  # no larger than LONGEST, without decoding it all
                image.draft("RGB", (LONGEST, LONGEST))
            full = decode_rgb(image, spec, draft=False)
        full.thumbnail((LONGEST, LONGEST), Image.Resampling.LANCZOS)
        return [as_indexed(path, spec, max_megapixels)] + [
            as_indexed(data, spec, max_megapixels) for data in copies_of(full)
        ]
    except (ImageError, OSError):
        return None
    except Exception:  # a decoder's bug costs this photo its place in the sample, nothing more
        log.debug("%s left out of the near-duplicate sample", path, exc_info=True)
        return None


async def calibrate(
    paths: Sequence[str], spec: CropSpec, max_megapixels: float, embed: Embed
) -> Calibration | None:
    """Measure on these photos (the first ``SAMPLE`` that can be read); None with fewer than
    ``SAMPLE`` readable ones. Decodes in a thread, one photo at a time."""
    originals, copies = [], []
    for path in paths:
        made = await asyncio.to_thread(pictures, path, spec, max_megapixels)
        if made is None:
            continue
        vectors = await embed(made)
        originals.append(vectors[0])
        copies.append(vectors[1:])
        if len(originals) == SAMPLE:
            return derive(np.stack(originals), np.stack(copies))
    return None


def chosen(configured: float, stored: Calibration | None, family: float) -> tuple[float, str]:
    """The similarity to group with, and where it comes from (for the output and the page)."""
    if configured:
        return configured, "the duplicate_similarity option"
    if stored is not None:
        return stored.similarity, (
            f"measured on {stored.photos} of this library's photos: the lowest cosine to one of their "
            f"{stored.copies} copies was {stored.lowest:.3f}"
        )
    return family, f"the model family's default, until {SAMPLE} photos are indexed"


async def measure_library(store: Any, indexer: Any) -> Calibration | None:
    """The library's measurement: the one recorded for its model, else measured now with the
    indexer's model where the library has ``SAMPLE`` searchable photos, and recorded (None while
    it has fewer). Photos that cannot be read now are passed over; a few spares are sampled."""
    found = Calibration.from_dict(await store.duplicate_calibration())
    if found is not None:
        return found
    paths = await store.some_searchable_paths(indexer.model_id, 4 * SAMPLE)
    if len(paths) < SAMPLE:
        return None
    measured = await calibrate(paths, indexer.embedder.crop, indexer.max_megapixels, indexer.embed_images)
    if measured is not None:
        await store.record_duplicate_calibration(indexer.model_id, measured.as_dict())
        log.info("near-duplicate similarity %.2f, %s", measured.similarity, chosen(0, measured, 0)[1])
    return measured
