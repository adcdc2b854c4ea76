"""A tiny, randomly initialised CLIP saved like a real checkpoint: for tests and CI benchmarks.

Built with transformers' own classes (model, tokenizer, processor) and read back through
:class:`image_search.model.ModelSource`, the same path as ``openai/clip-vit-large-patch14``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import byte_level_clip_tokenizer

TINY_WORDS = ("a", "photo", "of", "the", "dog", "cat", "beach", "sunset", "mountain", "city")


def build_tiny_clip(
    directory: Path, *, seed: int = 0, projection_dim: int = 16, image_size: int = 224
) -> Path:
    """Write a ~600 KB CLIP (hidden 32, 2 layers, 2 heads) with tokenizer and processor to ``directory``."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = byte_level_clip_tokenizer(TINY_WORDS)
    vocab = tokenizer.get_vocab()
    common = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2)
    config = CLIPConfig(
        text_config=dict(
            common,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(common, image_size=image_size, patch_size=32),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(directory)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer).save_pretrained(directory)
    return directory
