"""Models: the image and text towers and where they come from.

Which checkpoint a library uses and what it is (checkpoint; families: CLIP, SigLIP, SigLIP 2 and
the defaults that depend on them; weights: their digest; tokens), the towers on their devices
(model; vit: CLIP's lean vision forward; prepack, int8: the CPU's faster forms), and what
switching a library to another model costs here (switching). Reads pictures through
:mod:`image_search.pictures`; never reads folders or the database's rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._face import face

if TYPE_CHECKING:  # what the shells use, named for readers and type checkers
    from .checkpoint import DEFAULT_MODEL, RANDOM_CONFIGS, ModelSource, chosen_source
    from .families import CLIP, KNOWN, ModelDefaults
    from .model import ImageEmbedder, TextEmbedder, pick_embedders
    from .switching import describe, duration, measured_rate, report_path, switch_costs
else:  # loaded on first use (image_search/_face.py)
    __getattr__, __all__ = face(
        __name__,
        checkpoint=("DEFAULT_MODEL", "RANDOM_CONFIGS", "ModelSource", "chosen_source"),
        families=("CLIP", "KNOWN", "ModelDefaults"),
        model=("ImageEmbedder", "TextEmbedder", "pick_embedders"),
        switching=("describe", "duration", "measured_rate", "report_path", "switch_costs"),
    )
