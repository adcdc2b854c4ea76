"""The model families image-search loads, told apart by the checkpoint's ``model_type``, and what
differs between them: the transformers classes of each tower, how pictures and text are prepared,
and the thresholds that depend on the family's score range.

- **CLIP** (``clip``: OpenAI CLIP, and MetaCLIP 1 checkpoints, saved as CLIP): shortest side
  resized then centre-cropped; text padded to the longest query (77 positions at most); the
  embedding is the projected class token (the lean tower of :mod:`image_search.models.vit`).
- **SigLIP** (``siglip``: SigLIP and SigLIP 2 at a fixed resolution): the whole picture resized to
  the square input, no crop; text lower-cased (as SigLIP 2 was trained; SigLIP's own tokenizer
  lower-cases anyway) and padded to all of its positions (64), because its pooling reads the last
  one; the embedding is the attention-pooled output.

- **SigLIP 2 NaFlex** (``siglip2``: e.g. ``google/siglip2-base-patch16-naflex``): the picture keeps
  its shape, resized to at most ``max_num_patches`` patches (:mod:`image_search.pictures.naflex`); text as
  SigLIP's; the embedding is the attention-pooled output over the picture's own patches.

MetaCLIP 2 (``metaclip_2``: transformers' MetaClip2 classes, an XLM-V tokenizer) is refused: its
weights are licensed for non-commercial use only (CC-BY-NC 4.0, the MetaCLIP repository's
LICENSE), and the message names a multilingual model that is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ModelUnavailable


@dataclass(frozen=True)
class Family:
    name: str
    config: str  # the transformers config class of the whole checkpoint
    vision: str  # the class that reads the vision tower alone
    text: str  # the class that reads the text tower alone
    square: bool  # resize the whole picture to the square input (no crop)
    pad_to_max: bool  # text padded to every position (SigLIP) rather than the longest query
    lower_case: bool
    # Near-duplicates: the image-image cosine a pair must reach before its fingerprints are
    # compared, until :mod:`image_search.duplicates.calibration` has measured the library's own.
    duplicate_similarity: float
    sigmoid: bool = False  # trained with SigLIP's sigmoid loss: its album default from its bias
    naflex: bool = False  # a variable patch grid (:mod:`image_search.pictures.naflex`), not a fixed square


CLIP = Family(
    "CLIP",
    "CLIPConfig",
    "CLIPVisionModelWithProjection",
    "CLIPTextModelWithProjection",
    square=False,
    pad_to_max=False,
    lower_case=False,
    duplicate_similarity=0.92,  # measured on Debian's wallpapers (README "Near-duplicates")
)
SIGLIP = Family(
    "SigLIP", "SiglipConfig", "SiglipVisionModel", "SiglipTextModel",
    square=True, pad_to_max=True, lower_case=True,
    # Not measured on real SigLIP weights (none reach this machine): lower than CLIP's so that the
    # candidate stage loses no pair until the library's own is measured (image_search.duplicates.calibration).
    duplicate_similarity=0.85, sigmoid=True,
)  # fmt: skip
SIGLIP2_NAFLEX = Family(
    "SigLIP 2 NaFlex", "Siglip2Config", "Siglip2VisionModel", "Siglip2TextModel",
    square=False, pad_to_max=True, lower_case=True,
    duplicate_similarity=0.85, sigmoid=True, naflex=True,  # as SigLIP's (same training)
)  # fmt: skip
FAMILIES = {"clip": CLIP, "siglip": SIGLIP, "siglip2": SIGLIP2_NAFLEX}


@dataclass(frozen=True)
class ModelDefaults:
    """The defaults that depend on the model (the options override them)."""

    duplicate_similarity: float
    album_min_score: float
    # The cosines the page's words start at: "fair", "good" (= album_min_score), "strong" match.
    match_bands: tuple[float, float, float] = (0.16, 0.2, 0.26)


def family_of(model_type: str | None) -> Family:
    family = FAMILIES.get(model_type or "")
    if family is not None:
        return family
    if model_type == "metaclip_2":
        raise ModelUnavailable(
            "MetaCLIP 2 checkpoints (model_type metaclip_2) are not supported yet (and their weights are "
            "CC-BY-NC 4.0, non-commercial use only); for multilingual search use SigLIP 2, e.g. "
            "google/siglip2-base-patch16-224"
        )
    raise ModelUnavailable(
        f"model type {model_type!r} is not one image-search loads: it reads CLIP, SigLIP and "
        "SigLIP 2 (fixed resolution or NaFlex) checkpoints"
    )


def album_min_score(family: Family, logit_scale: float | None, logit_bias: float | None) -> float:
    """The album default: a photo belongs when the model itself says "matches". For CLIP, 0.2
    (its cosines for a match run about 0.2-0.35); for SigLIP, the cosine where its sigmoid crosses
    one half, -bias / exp(logit_scale), from the checkpoint's own two scalars."""
    return match_bands(family, logit_scale, logit_bias)[1]


# A sigmoid model's own odds at the edges of "fair" and "strong": 1 in 10 and 9 in 10.
FAIR_ODDS, STRONG_ODDS = math.log(1 / 9), math.log(9)


def match_bands(
    family: Family, logit_scale: float | None, logit_bias: float | None
) -> tuple[float, float, float]:
    """The cosines where a match turns fair, good and strong. A SigLIP checkpoint says it
    itself: its probability of a match is sigmoid(exp(scale) * cosine + bias), so the bands
    start where that is 10%, 50% and 90%, from the checkpoint's two scalars. CLIP has no
    calibration of its own: 0.16, 0.2 and 0.26, the words the page had for ViT-L/14 (whose matches
    run about 0.2-0.35)."""
    if family.sigmoid and logit_scale is not None and logit_bias is not None:
        scale = math.exp(logit_scale)
        fair, good, strong = ((odds - logit_bias) / scale for odds in (FAIR_ODDS, 0.0, STRONG_ODDS))
        return round(fair, 3), round(good, 3), round(strong, 3)
    return 0.16, 0.2, 0.26


@dataclass(frozen=True)
class Known:
    """A checkpoint this project has measured (random weights, the published shapes) and the
    published retrieval figures for it."""

    id: str
    family: str
    vision_params_m: int
    imagenet: float | None  # zero-shot top-1, % (None: no published figure copied here)
    coco_r1: float | None  # COCO text->image recall@1, %
    input_px: int
    h200_img_s: int  # image tower, float16, compiled (NaFlex: eager, faster), batch 256 (128 at 384 px)
    cpu: str  # what two CPU cores make of it (benchmarks/test_families.py)
    source: str


KNOWN = (
    Known("openai/clip-vit-large-patch14", "CLIP", 304, 75.5, 36.5, 224, 2882,
          "slow: 1.2 img/s float32, 6.6 bfloat16 (AMX)", "open_clip's results table"),
    Known("google/siglip2-base-patch16-224", "SigLIP 2", 86, 78.2, 52.1, 224, 10740,
          "fine: 2.2-4.3 img/s float32, 29 bfloat16 (AMX)", "big_vision's SigLIP 2 README"),
    Known("google/siglip2-large-patch16-256", "SigLIP 2", 303, 82.5, 54.7, 256, 2821,
          "slow: as ViT-L/14", "big_vision's SigLIP 2 README"),
    Known("google/siglip2-so400m-patch14-384", "SigLIP 2", 400, 84.1, 55.8, 384, 615,
          "needs a GPU", "big_vision's SigLIP 2 README"),
    # Its figures depend on the patch budget (the SigLIP 2 paper's tables): not copied here.
    Known("google/siglip2-base-patch16-naflex", "NaFlex", 86, None, None, 256, 4950,
          "slow: 2.2 img/s float32, 9.8 bfloat16 (AMX)", "SigLIP 2 paper (by patch budget)"),
)  # fmt: skip
