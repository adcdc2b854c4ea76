"""Models: the image and text towers and where they come from.

Which checkpoint a library uses and what it is (checkpoint; families: CLIP, SigLIP, SigLIP 2 and
the defaults that depend on them; weights: their digest; tokens), the towers on their devices
(model; vit: CLIP's lean vision forward; prepack, int8: the CPU's faster forms), and what
switching a library to another model costs here (switching). Reads pictures through
:mod:`image_search.pictures`; never reads folders or the database's rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import lazy

if TYPE_CHECKING:
    from .families import CLIP, KNOWN, ModelDefaults
    from .model import (
        DEFAULT_MODEL,
        RANDOM_CONFIGS,
        ImageEmbedder,
        ModelSource,
        TextEmbedder,
        chosen_source,
        pick_embedders,
    )
    from .switching import describe, duration, measured_rate, report_path, switch_costs

# The face: what the shells use, each name loaded from its module on first use.
_FACE = {
    "CLIP": "families",
    "DEFAULT_MODEL": "model",
    "ImageEmbedder": "model",
    "KNOWN": "families",
    "ModelDefaults": "families",
    "ModelSource": "model",
    "RANDOM_CONFIGS": "model",
    "TextEmbedder": "model",
    "chosen_source": "model",
    "describe": "switching",
    "duration": "switching",
    "measured_rate": "switching",
    "pick_embedders": "model",
    "report_path": "switching",
    "switch_costs": "switching",
}
__all__ = sorted(_FACE)
__getattr__ = lazy(__name__, _FACE)
