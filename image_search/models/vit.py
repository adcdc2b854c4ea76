"""CLIP's vision tower computed the way indexing needs it: the same weights and the same math as
transformers' ``CLIPVisionModelWithProjection(...).image_embeds``, with less work.

- q, k and v are one matmul (one weight of 3·d rows) instead of three;
- attention goes straight to ``scaled_dot_product_attention`` (flash / cuDNN kernels);
- the last layer computes only what the embedding reads: the class token. Its queries, keys and
  values still come from every token (one matmul, which a CPU can prepack:
  :mod:`image_search.models.prepack`), but its attention, output, MLP and post-layernorm run on one
  token instead of 257, about 3 % of ViT-L/14's FLOPs.

``tests/test_model.py`` checks it against transformers' own forward on every load path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class _Layer(nn.Module):
    def __init__(self, layer: Any, heads: int) -> None:
        super().__init__()
        attn = layer.self_attn
        self.heads = heads
        self.ln1, self.ln2 = layer.layer_norm1, layer.layer_norm2
        self.qkv = nn.Linear(attn.q_proj.in_features, 3 * attn.q_proj.out_features)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            self.qkv.bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        self.qkv.to(attn.q_proj.weight.device, attn.q_proj.weight.dtype)
        self.out = attn.out_proj
        self.fc1, self.fc2, self.act = layer.mlp.fc1, layer.mlp.fc2, layer.mlp.activation_fn

    def forward(self, x: torch.Tensor, class_only: bool = False) -> torch.Tensor:
        n, t, d = x.shape
        head = d // self.heads
        h = self.ln1(x)
        q, k, v = self.qkv(h).view(n, t, 3, self.heads, head).permute(2, 0, 3, 1, 4).unbind(0)
        if class_only:
            q, x = q[:, :, :1], x[:, :1]
        a = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head), as CLIP's
        x = x + self.out(a.transpose(1, 2).reshape(n, -1, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class VisionTower(nn.Module):
    """(N, 3, H, W) normalised pixels → (N, projection_dim) image embeddings (not yet L2-normalised)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        vision = model.vision_model
        emb = vision.embeddings
        self.patch = emb.patch_embedding
        self.cls = emb.class_embedding
        self.pos = emb.position_embedding
        self.pre_ln = vision.pre_layrnorm
        heads = model.config.num_attention_heads
        self.layers = nn.ModuleList(_Layer(layer, heads) for layer in vision.encoder.layers)
        self.post_ln = vision.post_layernorm
        self.proj = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.pos.weight
        x = self.pre_ln(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, class_only=i == last)
        return self.proj(self.post_ln(x[:, 0]))
