"""The CLIP model, behind a small interface: ``load()``, ``embed_pixels()``/``embed_images()``,
``embed_texts()``.

The vision and text towers load separately (``CLIPVisionModelWithProjection`` and
``CLIPTextModelWithProjection`` read the same checkpoint), so the daemon holds only the image
tower on its GPU and the web server only the text tower on the CPU. Tests build a tiny random
CLIP with transformers' own classes and load it through exactly this code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import ModelUnavailable
from .imaging import CropSpec, clip_crop, to_rgb
from .store import ModelIdentity
from .tokens import byte_level_clip_tokenizer
from .vit import VisionTower
from .weights import content_digest, folder_fingerprint, hub_snapshot

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-large-patch14"
RANDOM_CONFIG = "clip-vit-large-patch14.json"
MAX_TOKENS = 77
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ModelSource:
    """Where the weights, tokenizer and preprocessing come from.

    ``spec`` is a Hugging Face id or a local directory. With ``random_weights`` the ViT-L/14
    architecture is built from a config shipped in this package (no download): same shapes and
    FLOPs as the real model, meaningless vectors; for benchmarks only.
    """

    spec: str = DEFAULT_MODEL
    random_weights: bool = False
    _id: str | None = field(default=None, repr=False)
    _content: str | None = field(default=None, repr=False)

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
                self._id = "random:" + RANDOM_CONFIG
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

    def crop_spec(self) -> tuple[CropSpec, tuple[float, ...], tuple[float, ...]]:
        """Resize/crop geometry and normalisation from the model's own processor config."""
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

    def unavailable(self, exc: BaseException) -> ModelUnavailable:
        if self.is_local:
            return ModelUnavailable(
                f"model directory {self.location} cannot be loaded: {exc}. It must hold a CLIP "
                "checkpoint saved by transformers (config.json, weights, tokenizer and "
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
        if self.random_weights:
            # Whole-word merges for common words, as CLIP's real vocabulary has: queries then
            # tokenise to about as many pieces as with the real model, so timings compare.
            words = resources.files("image_search").joinpath("data", "common-words.txt").read_text().split()
            return byte_level_clip_tokenizer(tuple(dict.fromkeys(words)))
        from transformers import CLIPTokenizer

        return self.pretrained(CLIPTokenizer)

    def tower_config(self, tower: str) -> Any:
        """One tower's config with the checkpoint's projection size (sub-configs may lack it)."""
        from transformers import CLIPConfig

        config = self.pretrained(CLIPConfig)
        sub = getattr(config, f"{tower}_config")
        sub.projection_dim = config.projection_dim
        return sub

    def random_config(self) -> Any:
        from transformers import CLIPConfig

        text = resources.files("image_search").joinpath("data", RANDOM_CONFIG).read_text()
        return CLIPConfig.from_dict(json.loads(text))


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


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA (ROCm builds report as CUDA), then Intel XPU, Apple MPS, else CPU."""
    if preference.startswith("cuda:") and torch.cuda.is_available():
        return torch.device(preference)
    if preference != "auto":
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "xpu": hasattr(torch, "xpu") and torch.xpu.is_available(),
            "mps": hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
        }
        if not available.get(preference, False):
            raise ModelUnavailable(f"device {preference!r} was asked for but is not available here")
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return torch.device("xpu")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    if preference == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[preference]


def pick_embedders(
    source: ModelSource, device: str = "auto", dtype: str = "auto", compile: bool = False
) -> list[ImageEmbedder]:
    """One image embedder per visible CUDA GPU (device auto or cuda), else one for the device."""
    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return [
            ImageEmbedder(source, f"cuda:{i}", dtype, compile=compile)
            for i in range(torch.cuda.device_count())
        ]
    return [ImageEmbedder(source, device, dtype, compile=compile)]


def default_batch_size(device: torch.device) -> int:
    return 16 if device.type == "cpu" else 256


def _normalise(t: torch.Tensor) -> np.ndarray:
    t = t.float()
    return torch.nn.functional.normalize(t, dim=-1).cpu().numpy()


class ImageEmbedder:
    """The vision tower on the chosen device, at the chosen precision."""

    def __init__(
        self,
        source: ModelSource,
        device: str = "auto",
        dtype: str = "auto",
        *,
        compile: bool = False,
    ) -> None:
        self.source = source
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.compile = compile
        self.crop, mean, std = source.crop_spec()
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.model: Any = None
        self.dim = 0

    def load(self) -> ImageEmbedder:
        from transformers import CLIPVisionModelWithProjection

        if self.source.random_weights:
            with torch.random.fork_rng(devices=[]):  # the same random weights every time
                torch.manual_seed(0)
                model = CLIPVisionModelWithProjection(self.source.random_config().vision_config)
        else:
            model = self.source.pretrained(
                CLIPVisionModelWithProjection, config=self.source.tower_config("vision")
            )
        model = model.to(self.device, self.dtype).eval()  # type: ignore[arg-type]
        self.dim = int(model.config.projection_dim)
        self.model = VisionTower(model).eval()
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)
        if self.compile:
            self.model = torch.compile(self.model)
        return self

    def warm(self, batch: int = 2) -> None:
        """One forward pass so the first real batch does not pay for kernel selection."""
        zeros = np.zeros((batch, self.crop.crop_height, self.crop.crop_width, 3), dtype=np.uint8)
        self.embed_pixels(zeros)

    def normalise_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) on any device → the model's input (N, 3, H, W)."""
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        return ((x - self._mean) / self._std).to(self.dtype)

    @torch.inference_mode()
    def embed_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 crops (N, H, W, 3) → L2-normalised float32 embeddings (N, d), row for row."""
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        if pixels.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self.model(self.normalise_pixels(pixels)))

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """PIL images (already upright) → embeddings, through the same crop as indexing."""
        crops = [clip_crop(to_rgb(image), self.crop) for image in images]
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_pixels(np.stack(crops))


class TextEmbedder:
    """The text tower on the CPU, int8 (dynamic quantisation of the linear layers) by default."""

    def __init__(self, source: ModelSource, dtype: str = "int8") -> None:
        self.source = source
        self.quantise = dtype == "int8"
        self.model: Any = None
        self.tokenizer: Any = None
        self.dim = 0
        self._lock = threading.Lock()

    def load(self) -> TextEmbedder:
        from transformers import CLIPTextModelWithProjection

        if self.source.random_weights:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = CLIPTextModelWithProjection(self.source.random_config().text_config)
        else:
            model = self.source.pretrained(
                CLIPTextModelWithProjection, config=self.source.tower_config("text"), dtype=torch.float32
            )
        model = model.float().eval()
        if self.quantise:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model
        self.tokenizer = self.source.tokenizer()
        self.dim = int(model.config.projection_dim)
        return self

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → L2-normalised float32 embeddings. Truncated at 77 tokens: a long query never fails."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with self._lock:  # one forward at a time: torch already uses every core
            out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return _normalise(out.text_embeds)
