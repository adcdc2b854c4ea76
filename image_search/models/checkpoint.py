"""Where a model comes from (:class:`ModelSource`): a Hugging Face id or a local checkpoint, or a
shipped config built with random weights for benchmarks; what its family is, how it prepares
pictures and text, its identity, and its towers as transformers reads them. :mod:`.model` runs
them."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelUnavailable
from ..pictures.imaging import CropSpec
from ..store import ModelIdentity
from .families import CLIP, Family, ModelDefaults, family_of, match_bands
from .tokens import byte_level_clip_tokenizer
from .weights import content_digest, folder_fingerprint, hub_snapshot, scalars

log = logging.getLogger(__name__)

# A new library's model (README "Choosing a model"); an existing one keeps the model its vectors
# were made with (:func:`chosen_source`).
DEFAULT_MODEL = "google/siglip2-base-patch16-224"
CLIP_L14 = "openai/clip-vit-large-patch14"  # the default until 2026-12: libraries made then use it
RANDOM_CONFIG = "siglip2-base-patch16-224.json"
# The real configs shipped for --random-weights (same shapes and FLOPs, random values).
RANDOM_CONFIGS = {
    CLIP_L14: "clip-vit-large-patch14.json",
    DEFAULT_MODEL: RANDOM_CONFIG,
    "google/siglip2-large-patch16-256": "siglip2-large-patch16-256.json",
    "google/siglip2-so400m-patch14-384": "siglip2-so400m-patch14-384.json",
    "google/siglip2-base-patch16-naflex": "siglip2-base-patch16-naflex.json",
}
MAX_TOKENS = 77
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ModelSource:
    """Where the weights, tokenizer and preprocessing come from.

    ``spec`` is a Hugging Face id or a local directory. With ``random_weights`` the architecture
    of ``spec`` (one of :data:`RANDOM_CONFIGS`) is built from a config shipped in this package (no
    download): same shapes and FLOPs as the real model, meaningless vectors; for benchmarks only.
    """

    spec: str = DEFAULT_MODEL
    random_weights: bool = False
    _id: str | None = field(default=None, repr=False)
    _content: str | None = field(default=None, repr=False)
    _config: Any = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        return Path(self.spec).expanduser().is_dir()

    @property
    def location(self) -> str:
        return str(Path(self.spec).expanduser().resolve()) if self.is_local else self.spec

    @property
    def model_id(self) -> str:
        """Names the weights: stored with every embedding so two models' vectors never mix."""
        if self._id is None:
            if self.random_weights:
                self._id = "random:" + self._random_file()
            elif self.is_local:
                self._id = f"local:{Path(self.location).name}:{folder_fingerprint(Path(self.location))}"
            else:
                self._id = self.spec
        return self._id

    @property
    def content(self) -> str | None:
        """The weights' identity by content (:mod:`.weights`): the same for a copy in another
        folder and for the hub cache's copy of an id; None where the files are not here (yet)."""
        if self._content is None and not self.random_weights:
            folder = Path(self.location) if self.is_local else hub_snapshot(self.spec)
            try:
                self._content = (content_digest(folder) if folder is not None else None) or ""
            except (OSError, ValueError) as exc:
                log.warning("cannot fingerprint the weights in %s: %s", folder, exc)
                self._content = ""
        return self._content or None

    def identity(self) -> ModelIdentity:
        """What the database binds itself to: the name rows carry, the content, what to type."""
        typed = "--random-weights" if self.random_weights else self.location
        return ModelIdentity(self.model_id, self.content, typed)

    def adopt(self, name: str) -> None:
        """Use the name the database already knows these weights by (see :meth:`Store.check_model`)."""
        self._id = name

    def config(self) -> Any:
        """The checkpoint's whole config (both towers), read once."""
        if self._config is None:
            if self.random_weights:
                self._config = self.random_config()
            else:
                from transformers import AutoConfig

                self._config = self.pretrained(AutoConfig)
        return self._config

    @property
    def family(self) -> Family:
        return family_of(getattr(self.config(), "model_type", None))

    def defaults(self) -> ModelDefaults:
        """The thresholds for this checkpoint: the family's near-duplicate similarity, and the
        album default and the page's words for a match from its own logit scale and bias
        (:func:`.families.match_bands`)."""
        folder = None
        if not self.random_weights:
            folder = Path(self.location) if self.is_local else hub_snapshot(self.spec)
        found = scalars(folder, ("logit_scale", "logit_bias")) if folder is not None else {}
        family = self.family
        bands = match_bands(family, found.get("logit_scale"), found.get("logit_bias"))
        return ModelDefaults(family.duplicate_similarity, bands[1], bands)

    def crop_spec(self) -> tuple[CropSpec, tuple[float, ...], tuple[float, ...]]:
        """Resize/crop geometry and normalisation from the model's own processor config."""
        if self.family.naflex:
            return self._naflex_spec()
        if self.family is not CLIP:
            return self._square_spec()
        if self.random_weights:
            return CropSpec(), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        # transformers' own reader: it knows preprocessor_config.json (the hub's openai
        # checkpoints) and processor_config.json (what transformers 5 saves).
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        proc = self.pretrained(CLIPImageProcessorPil)
        shortest = proc.size.shortest_edge or min(proc.size.height, proc.size.width)
        crop = proc.crop_size if proc.do_center_crop else proc.size
        spec = CropSpec(
            shortest_edge=int(shortest),
            crop_height=int(crop.height or shortest),
            crop_width=int(crop.width or shortest),
            resample=int(proc.resample),
        )
        return spec, tuple(proc.image_mean), tuple(proc.image_std)

    def _square_spec(self) -> tuple[CropSpec, tuple[float, ...], tuple[float, ...]]:
        """SigLIP: the whole picture resized to the square input, no crop (its processor's
        defaults where the checkpoint is random)."""
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        if self.random_weights:
            side = int(self.config().vision_config.image_size)
            proc = SiglipImageProcessorPil(
                size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
            )
        else:
            proc = self.pretrained(SiglipImageProcessorPil)
        height, width = int(proc.size.height), int(proc.size.width)  # type: ignore[attr-defined]
        spec = CropSpec(
            shortest_edge=min(height, width),
            crop_height=height,
            crop_width=width,
            resample=int(proc.resample),
            square=True,
        )
        return spec, tuple(proc.image_mean), tuple(proc.image_std)

    def _naflex_spec(self) -> tuple[CropSpec, tuple[float, ...], tuple[float, ...]]:
        """SigLIP 2 NaFlex: the shape kept, at most ``max_num_patches`` patches (the processor's
        defaults, the vision tower's patch count, where the checkpoint is random)."""
        from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

        if self.random_weights:
            vision = self.config().vision_config
            proc = Siglip2ImageProcessorPil(patch_size=vision.patch_size, max_num_patches=vision.num_patches)
        else:
            proc = self.pretrained(Siglip2ImageProcessorPil)
        patch, most = int(proc.patch_size), int(proc.max_num_patches)  # type: ignore[attr-defined]
        side = patch * max(1, math.isqrt(most))  # how large a decode it needs (JPEG draft mode)
        spec = CropSpec(side, side, side, resample=int(proc.resample), patch=patch, max_patches=most)
        return spec, tuple(proc.image_mean), tuple(proc.image_std)

    def pretrained(self, cls: Any, **kwargs: Any) -> Any:
        """``cls.from_pretrained`` with a plain-language error when the files are not there."""
        # A tower read from a full CLIP checkpoint reports the other tower's weights as
        # "unexpected": true and expected, so transformers' load report is kept quiet, for this
        # call only.
        with _quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not self.is_local:  # the cache first: a cached model never waits on the network
                try:
                    return cls.from_pretrained(self.location, local_files_only=True, **kwargs)
                except Exception:
                    pass
            try:
                return cls.from_pretrained(self.location, **kwargs)
            except Exception as exc:
                raise self.unavailable(exc) from None

    @property
    def looks_like_a_folder(self) -> bool:
        """A path that is not there (a hub id is ``owner/name``: one slash, never leading)."""
        return not self.is_local and (self.spec.startswith(("/", ".", "~")) or self.spec.count("/") != 1)

    def unavailable(self, exc: BaseException) -> ModelUnavailable:
        if self.looks_like_a_folder:
            return ModelUnavailable(
                f"no model folder at {self.spec}: --model (IMAGE_SEARCH_MODEL) takes a folder holding a "
                "saved checkpoint (its config.json) or a Hugging Face id such as "
                f"{DEFAULT_MODEL}"
            )
        if self.is_local:
            return ModelUnavailable(
                f"model directory {self.location} cannot be loaded: {exc}. It must hold a CLIP or "
                "SigLIP checkpoint saved by transformers (config.json, weights, tokenizer and "
                "preprocessor_config.json)."
            )
        return ModelUnavailable(
            f"model {self.spec!r} is not in the Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and could not be downloaded "
            f"({type(exc).__name__}). Download it once on a machine with internet access "
            f"(`hf download {self.spec}`), or point --model (IMAGE_SEARCH_MODEL) at a local copy "
            "of the model directory."
        )

    def tokenizer(self) -> Any:
        if self.family is not CLIP:
            if self.random_weights:
                from .tokens import byte_level_siglip_tokenizer

                return byte_level_siglip_tokenizer()
            from transformers import AutoTokenizer

            return self.pretrained(AutoTokenizer)
        if self.random_weights:
            # Whole-word merges for common words, as CLIP's real vocabulary has: queries then
            # tokenise to about as many pieces as with the real model, so timings compare.
            words = resources.files("image_search").joinpath("data", "common-words.txt").read_text().split()
            return byte_level_clip_tokenizer(tuple(dict.fromkeys(words)))
        from transformers import CLIPTokenizer

        return self.pretrained(CLIPTokenizer)

    def tower_config(self, tower: str) -> Any:
        """One tower's config (for CLIP with the checkpoint's projection size, which its
        sub-configs may lack)."""
        config = self.config()
        sub = getattr(config, f"{tower}_config")
        if self.family is CLIP:
            sub.projection_dim = config.projection_dim
        return sub

    def tower(self, tower: str) -> Any:
        """One tower's transformers model: random (seeded, the same every time) or pretrained."""
        import transformers

        family = self.family
        cls = getattr(transformers, family.vision if tower == "vision" else family.text)
        config = self.tower_config(tower)
        if self.random_weights:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return cls(config)
        kwargs = {} if tower == "vision" else {"dtype": torch.float32}
        return self.pretrained(cls, config=config, **kwargs)

    def _random_file(self) -> str:
        name = RANDOM_CONFIGS.get(self.spec)
        if name is None:
            raise ModelUnavailable(
                f"--random-weights builds one of {', '.join(RANDOM_CONFIGS)} from its shipped config, "
                f"not {self.spec!r}"
            )
        return name

    def random_config(self) -> Any:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        raw = json.loads(resources.files("image_search").joinpath("data", self._random_file()).read_text())
        with _quiet_transformers():  # its default sub-configs warn about token ids they then drop
            return CONFIG_MAPPING[raw["model_type"]].from_dict(raw)


def chosen_source(configured: str | None, bound: ModelIdentity | None) -> ModelSource:
    """The model a library is read and written with: the configured one where the user named one
    (a library of another model then refuses it, :meth:`Store.check_model`); else the model the
    library's vectors were made with, so that a new default never re-embeds anything or mixes two
    models' vectors; else, for a new library, :data:`DEFAULT_MODEL`."""
    if configured:
        source = ModelSource(configured)
        if source.looks_like_a_folder:  # said first: it is not a question of which model
            raise source.unavailable(FileNotFoundError(configured))
        return source
    if bound is None:
        return ModelSource(DEFAULT_MODEL)
    if bound.typed == "--random-weights" and bound.name.startswith("random:"):
        shipped = {file: spec for spec, file in RANDOM_CONFIGS.items()}
        spec = shipped.get(bound.name.removeprefix("random:"))
        if spec is not None:
            return ModelSource(spec, random_weights=True)
    elif bound.typed:
        return ModelSource(bound.typed)
    elif not bound.name.startswith(("local:", "random:")):
        return ModelSource(bound.name)  # a hub id, as versions before `typed` wrote it
    raise ModelUnavailable(
        f"the library was embedded with {bound.name!r}, whose folder it did not record: set model in "
        "the configuration (or --model) to that model's folder"
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
