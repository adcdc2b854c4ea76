"""The lean vision forward gives transformers' own image embeddings, for any head count, depth
and patch size, on the CPU here and at fp16 on a GPU (tests/test_gpu.py)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from image_search.models.vit import VisionTower


@pytest.mark.parametrize(
    ("hidden", "heads", "layers", "patch", "act"),
    [(32, 2, 1, 32, "quick_gelu"), (64, 4, 3, 14, "quick_gelu"), (48, 3, 2, 16, "gelu")],
)
def test_vision_tower_equals_transformers(hidden: int, heads: int, layers: int, patch: int, act: str) -> None:
    torch.manual_seed(layers)
    config = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        patch_size=patch,
        image_size=224,
        projection_dim=24,
        hidden_act=act,
    )
    model = CLIPVisionModelWithProjection(config).eval()
    pixels = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        ours = VisionTower(model).eval()(pixels)
        theirs = model(pixel_values=pixels).image_embeds
    assert ours.shape == theirs.shape == (3, 24)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    # each row is its own image's: permuting the batch permutes the result
    with torch.inference_mode():
        flipped = VisionTower(model).eval()(pixels.flip(0))
    torch.testing.assert_close(flipped, theirs.flip(0), atol=2e-5, rtol=1e-4)
