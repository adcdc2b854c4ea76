"""Tiny, randomly initialised CLIP and SigLIP models saved like real checkpoints: for tests and
CI benchmarks.

Built with transformers' own classes (model, tokenizer, processor) and read back through
:class:`image_search.models.model.ModelSource`, the same path as ``openai/clip-vit-large-patch14`` or
``google/siglip2-base-patch16-224``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .models.tokens import byte_level_clip_tokenizer, byte_level_siglip_tokenizer

# Both towers of every tiny model: hidden 32, 2 layers, 2 heads.
TINY_TOWER: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2
)
TINY_WORDS = ("a", "photo", "of", "the", "dog", "cat", "beach", "sunset", "mountain", "city")
# A dog and a beach in six scripts, for the SigLIP tokenizer (CLIP's reads English only).
WORLD_WORDS = (
    "chien", "plage", "été", "perro", "playa", "straße",  # Latin with accents
    "собака", "пляж",  # Cyrillic
    "σκύλος", "παραλία",  # Greek
    "كلب", "شاطئ",  # Arabic
    "狗", "海滩", "犬", "浜辺",  # CJK
    "कुत्ता", "समुद्र", "तट",  # Devanagari
)  # fmt: skip


def build_tiny_clip(
    directory: Path, *, seed: int = 0, projection_dim: int = 16, image_size: int = 224
) -> Path:
    """Write a ~600 KB CLIP (hidden 32, 2 layers, 2 heads) with tokenizer and processor to ``directory``."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = byte_level_clip_tokenizer(TINY_WORDS)
    vocab = tokenizer.get_vocab()
    start, end = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=_tiny_text(len(vocab), 77, pad=end, bos=start, eos=end),
        vision_config=dict(TINY_TOWER, image_size=image_size, patch_size=32),
        projection_dim=projection_dim,
    )
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer).save_pretrained(directory)
    return directory


def build_tiny_siglip(directory: Path, *, seed: int = 0, image_size: int = 64, patch_size: int = 16) -> Path:
    """Write a tiny SigLIP 2 (fixed resolution, as ``google/siglip2-base-patch16-224`` is saved:
    ``model_type`` siglip, a Gemma-style tokenizer, 64 text positions, a square input without
    crop, mean and std 0.5, bilinear resize) to ``directory``."""
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = byte_level_siglip_tokenizer(TINY_WORDS + WORLD_WORDS)
    config = SiglipConfig(
        text_config=_tiny_text(len(tokenizer), 64, pad=0, bos=2, eos=1),
        vision_config=dict(TINY_TOWER, image_size=image_size, patch_size=patch_size),
    )
    _sigmoid_model(SiglipModel, config, seed).save_pretrained(directory)
    processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=2,  # bilinear
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    SiglipProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def build_tiny_siglip2_naflex(
    directory: Path, *, seed: int = 0, patch_size: int = 8, max_num_patches: int = 64
) -> Path:
    """Write a tiny SigLIP 2 NaFlex (as ``google/siglip2-base-patch16-naflex`` is saved:
    ``model_type`` siglip2, its tokenizer, 64 text positions, pictures kept in shape in at most
    ``max_num_patches`` patches, mean and std 0.5, bilinear resize) to ``directory``."""
    from transformers import Siglip2Config, Siglip2Model, Siglip2Processor
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    tokenizer = byte_level_siglip_tokenizer(TINY_WORDS)
    config = Siglip2Config(
        text_config=_tiny_text(len(tokenizer), 64, pad=0, bos=2, eos=1),
        vision_config=dict(TINY_TOWER, num_patches=max_num_patches, patch_size=patch_size),
    )
    _sigmoid_model(Siglip2Model, config, seed).save_pretrained(directory)
    processor = Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=max_num_patches)
    Siglip2Processor(image_processor=processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def _sigmoid_model(cls: Any, config: Any, seed: int) -> Any:
    """A SigLIP-family model, seeded, with the logit scale and bias trained ones have (SigLIP's
    checkpoints: ~4.7, ~-16), which set the album default."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        with torch.no_grad():
            model.logit_scale.fill_(4.7)
            model.logit_bias.fill_(-16.0)
    return model


def _tiny_text(vocab_size: int, positions: int, *, pad: int, bos: int, eos: int) -> dict[str, Any]:
    return dict(
        TINY_TOWER,
        vocab_size=vocab_size,
        max_position_embeddings=positions,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
    )


def library_rows(start: int, vectors: Any, root: str, model_id: str) -> list[dict[str, Any]]:
    """Rows in the real schema for a synthetic library: photo ``start + i`` gets ``vectors[i]``
    (for tests and benchmarks that need 100k indexed images without 100k files)."""
    import datetime as dt

    from .store import image_key, to_bytes

    stamp = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i, vector in enumerate(vectors, start):
        path = f"{root}/{i // 1000:03d}/{i:06d}.jpg"
        rows.append(
            {
                "key": image_key(path),
                "path": path,
                "path_bytes": None,
                "root": root,
                "size": 1,
                "mtime_ns": 1,
                "hash": f"{i:032x}",
                "width": 4000,
                "height": 3000,
                "taken_at": stamp + dt.timedelta(minutes=i),
                "format": "JPEG",
                "embedding": to_bytes(vector),
                "model": model_id,
                "indexed_at": stamp,
                "error": None,
                "offline": False,
            }
        )
    return rows
