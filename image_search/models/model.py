"""The model, behind a small interface: ``load()``, ``embed_pixels()``/``embed_images()``,
``embed_texts()``; CLIP or SigLIP (:mod:`image_search.models.families`), told apart by the checkpoint.

The vision and text towers load separately (``CLIPVisionModelWithProjection`` and
``CLIPTextModelWithProjection``, or ``SiglipVisionModel`` and ``SiglipTextModel``, read the same
checkpoint), so the daemon holds only the image tower on its GPU and the web server only the text
tower on the CPU. Tests build tiny random models of each family with transformers' own classes
and load them through exactly this code.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import threading
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers.normalizers import Lowercase

from ..errors import ModelUnavailable
from ..pictures.imaging import model_input
from ..pictures.modes import to_rgb
from ..pictures.naflex import HEADER, blank
from .checkpoint import (
    CLIP_L14,
    DEFAULT_MODEL,
    MAX_TOKENS,
    RANDOM_CONFIG,
    RANDOM_CONFIGS,
    ModelSource,
    chosen_source,
)
from .families import CLIP
from .int8 import quantise_checked
from .prepack import prepack
from .vit import VisionTower

log = logging.getLogger(__name__)


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


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): there bfloat16 weights
    run the image tower 2-3x faster than float32 (README, "Choosing a model")."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def pick_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    """auto: float16 on a GPU; on a CPU bfloat16 where it is native, else float32 (emulated
    bfloat16 is slower than float32; :func:`wants_int8` may then quantise it). int8 keeps
    float32 weights, quantised when the model loads."""
    if preference == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_bf16() else torch.float32
        return torch.float16
    return {
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float32": torch.float32,
        "int8": torch.float32,
    }[preference]


def wants_int8(device: torch.device, preference: str = "auto") -> bool:
    """Whether the image tower's linear layers are quantised to int8 (dynamic quantisation): asked
    for, or auto on a CPU without native bfloat16 (AVX2 only), where it runs SigLIP 2 B/16 about
    1.9x faster than float32 (README, "Choosing a model"). Never on a GPU."""
    if device.type != "cpu":
        return False
    return preference == "int8" or (preference == "auto" and not cpu_has_bf16())


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
        self.int8 = wants_int8(self.device, dtype) and not compile
        self.int8_cosine: float | None = None  # the load-time check's result, where int8 was tried
        self.precision = str(self.dtype).removeprefix("torch.")  # "int8" once quantised
        self.compile = compile
        self.crop, mean, std = source.crop_spec()
        self._mean, self._std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (mean, std))
        if self.crop.max_patches:  # NaFlex patches (N, patches, P): (row, column, channel) flat
            self._mean, self._std = (
                v.view(1, 1, 3).repeat(1, 1, self.crop.patch**2) for v in (self._mean, self._std)
            )
        self.model: Any = None
        self.dim = 0

    def load(self) -> ImageEmbedder:
        model = self.source.tower("vision").to(self.device, self.dtype).eval()
        if self.source.family is CLIP:
            self.dim = int(model.config.projection_dim)
            self.model = VisionTower(model).eval()
        else:
            self.dim = int(model.config.hidden_size)
            self.model = (PatchTower if self.crop.max_patches else PooledTower)(model).eval()
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)
        if self.compile:
            if self.device.type == "cpu":
                # Frozen weights are prepacked for oneDNN, as eager ones are below: ViT-L/14
                # bfloat16 on two Xeon cores 5.3 img/s compiled, 6.6 eager prepacked.
                import torch._inductor.config as inductor

                inductor.freezing = True
            self.model = torch.compile(self.model)
        elif self.device.type == "cpu" and not (
            self.int8 and not self.crop.max_patches and quantise_checked(self)
        ):
            tokens = self.crop.max_patches or (model.config.image_size // model.config.patch_size) ** 2
            # NaFlex's patch embedding reads its linear layer's weight.dtype: its encoder alone
            packed = model.encoder if self.crop.max_patches else self.model
            prepack(packed, default_batch_size(self.device) * tokens)
        return self

    def blank(self, batch: int) -> np.ndarray:
        """``batch`` black model inputs (uint8, as the decoding workers make them)."""
        if self.crop.max_patches:
            return blank(batch, self.crop.patch, self.crop.max_patches)
        return np.zeros((batch, self.crop.crop_height, self.crop.crop_width, 3), dtype=np.uint8)

    def warm(self, batch: int = 2) -> None:
        """One forward pass so the first real batch does not pay for kernel selection."""
        self.embed_pixels(self.blank(batch))

    def normalise_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) on any device → the model's input (N, 3, H, W); NaFlex inputs
        (:mod:`image_search.pictures.naflex`) → their patches (N, max_patches, P), normalised."""
        x = pixels.to(self.device, non_blocking=True)
        if self.crop.max_patches:
            x = x[:, HEADER:].float().div_(255.0)
        else:
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return ((x - self._mean) / self._std).to(self.dtype)

    def model_inputs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the tower takes: the normalised pixels; for NaFlex also the attention mask over
        the patches and each picture's grid (rows, columns), read from the inputs' first row."""
        pixels = pixels.to(self.device, non_blocking=True)  # once: the header comes from here too
        values = self.normalise_pixels(pixels)
        if not self.crop.max_patches:
            return (values,)
        header = pixels[:, 0, :4].long()
        grids = torch.stack([header[:, 0] | header[:, 1] << 8, header[:, 2] | header[:, 3] << 8], dim=1)
        positions = torch.arange(values.shape[1], device=self.device)
        inside = positions[None] < grids.prod(dim=1, keepdim=True)
        values.masked_fill_(~inside[..., None], 0.0)  # the padding, as the processor pads: zero
        return values, inside.long(), grids

    @torch.inference_mode()
    def embed_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 crops (N, H, W, 3) (NaFlex: patches) → L2-normalised float32 embeddings (N, d),
        row for row."""
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        if pixels.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self.model(*self.model_inputs(pixels)))

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """PIL images (already upright) → embeddings, through the same crop as indexing."""
        crops = [model_input(to_rgb(image), self.crop) for image in images]
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_pixels(np.stack(crops))


# Letter by letter, as transformers' Siglip2Tokenizer lower-cases (tokenizers' Lowercase
# normaliser): Python's str.lower() writes a word's last capital sigma as "ς", a token the model
# was never given for "Σ".
_LOWER = Lowercase()


class TextEmbedder:
    """The text tower on the CPU: bfloat16 where the CPU has it natively, else int8 (dynamic
    quantisation of the linear layers), for ``dtype`` auto."""

    def __init__(self, source: ModelSource, dtype: str = "auto", *, compile: str = "off") -> None:
        self.source = source
        if dtype == "auto":
            dtype = "bfloat16" if cpu_has_bf16() else "int8"
        self.dtype = dtype
        self.quantise = dtype == "int8"
        self.bfloat16 = dtype == "bfloat16"
        self.compile = compile  # "auto", "on" or "off": see wants_compile
        self.compile_state = "off"  # then "pending", "compiling", "compiled" or "failed"
        self._plain: Any = None  # the tower with its layers unpacked, for compile_now
        self._fast: Any = None  # the compiled tower, for one query at a time
        self.model: Any = None
        self.tokenizer: Any = None
        self.dim = 0
        self.family = CLIP
        self.max_tokens = MAX_TOKENS
        self._lock = threading.Lock()

    def load(self) -> TextEmbedder:
        self.family = self.source.family
        model = self.source.tower("text").float().eval()
        if self.family is CLIP:
            self.dim = int(model.config.projection_dim)
        else:  # SigLIP: the pooled last position through its head
            self.dim = int(getattr(model, "text_model", model).head.out_features)
            self.max_tokens = int(model.config.max_position_embeddings)
        if self.bfloat16:  # where the CPU has AVX512-BF16 or AMX: faster than int8 there
            model = model.to(torch.bfloat16)
        elif self.quantise:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        if self.wants_compile():
            # Inductor packs the layers itself (freezing): it gets a copy with them unpacked,
            # sharing the parameters rather than copying them.
            self._plain = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
            self.compile_state = "pending"
        elif self.compile == "auto" and self.bfloat16 and self.family.pad_to_max:
            log.info("the text model stays eager: no C++ compiler (g++ or $CXX) for torch.compile")
        if not self.quantise:
            prepack(model, self.max_tokens)
        self.model = model
        self.tokenizer = self.source.tokenizer()
        return self

    def wants_compile(self) -> bool:
        """Whether :meth:`compile_now` has work: "on", or "auto" for bfloat16 weights (where the
        CPU has them natively: SigLIP 2 B/16's query on two Xeon cores 16.7 ms compiled, 25-31 ms
        eager; on a CPU without them compiling gained nothing), for a family whose queries all
        have one shape (SigLIP's 64 positions; CLIP's vary with the text), where a C++ compiler
        is found for inductor. int8 layers are never compiled."""
        if self.compile == "off" or self.quantise or not self.family.pad_to_max:
            return False
        return self.compile == "on" or (
            self.bfloat16 and shutil.which(os.environ.get("CXX", "g++")) is not None
        )

    def compile_now(self) -> bool:
        """Compile the tower for one query at a time (inductor, its weights frozen and packed for
        oneDNN), run it once, then hand it to :meth:`embed_texts`. Takes tens of seconds: call it
        on a thread of its own while queries go on through the eager tower, which stays for
        batches of several. False where there is nothing to compile or compiling failed (the
        eager tower then answers everything, as before)."""
        plain, self._plain = self._plain, None
        if plain is None:
            return False
        import torch._inductor.config as inductor

        self.compile_state = "compiling"
        fast = torch.compile(plain, dynamic=False)
        try:
            # Made under inference mode, as embed_texts makes them: else the first query's input
            # fails a guard and compiles it all again, on the thread that answers queries.
            with inductor.patch(freezing=True), torch.inference_mode():
                fast(input_ids=self.tokens(["warm up"])["input_ids"])
        except Exception as exc:  # no usable compiler, an op inductor refuses: eager it stays
            log.warning("the text model stays uncompiled: %s: %s", type(exc).__name__, str(exc)[:300])
            self.compile_state = "failed"
            return False
        with self._lock:
            self._fast = fast
        self.compile_state = "compiled"
        return True

    def tokens(self, texts: list[str]) -> Any:
        """The model's input for these texts, as it was trained: CLIP's padded to the longest (77
        tokens at most); SigLIP's lower-cased and padded to every position, which its pooling
        reads the last of. Truncated, so a long query never fails."""
        if self.family.lower_case:
            texts = [_LOWER.normalize_str(t) for t in texts]
        padding = "max_length" if self.family.pad_to_max else True
        return self.tokenizer(
            texts, padding=padding, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → L2-normalised float32 embeddings."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokens(texts)
        with self._lock:  # one forward at a time: torch already uses every core
            if self.family is CLIP:
                out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
                return _normalise(out.text_embeds)
            # SigLIP was trained without an attention mask (its processor passes none).
            model = self._fast if self._fast is not None and len(texts) == 1 else self.model
            return _normalise(model(input_ids=tokens["input_ids"]).pooler_output)


class PooledTower(torch.nn.Module):
    """SigLIP's vision tower as indexing reads it: (N, 3, H, W) normalised pixels → the
    attention-pooled embedding (``get_image_features``), not yet L2-normalised."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inner(pixel_values=pixel_values).pooler_output


class PatchTower(PooledTower):
    """SigLIP 2 NaFlex's vision tower: normalised patches, their mask and grids → the
    attention-pooled embedding over each picture's own patches, not yet L2-normalised."""

    def forward(self, patches: torch.Tensor, mask: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = self.inner(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=grids)
        return out.pooler_output


__all__ = [
    "CLIP_L14",
    "DEFAULT_MODEL",
    "MAX_TOKENS",
    "RANDOM_CONFIG",
    "RANDOM_CONFIGS",
    "ImageEmbedder",
    "ModelSource",
    "ModelUnavailable",
    "PatchTower",
    "PooledTower",
    "TextEmbedder",
    "chosen_source",
    "cpu_has_bf16",
    "default_batch_size",
    "pick_device",
    "pick_dtype",
    "pick_embedders",
    "wants_int8",
]
