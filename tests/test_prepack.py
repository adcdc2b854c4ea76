"""Prepacked linear layers: the same results as ``nn.Linear``, and the CPU towers use them."""

from __future__ import annotations

import pytest
import torch

from image_search.models.checkpoint import ModelSource
from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.models.prepack import PackedLinear, prepack, supported


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24), (3, 1, 24)])
def test_packed_linear_equals_linear(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(*shape)
    packed = PackedLinear(linear, 16)
    with torch.inference_mode():
        assert torch.allclose(packed(x), linear(x), atol=1e-5)
        # A view that is not contiguous (a transposed slice) gives the same too.
        t = torch.randn(24, 6).T
        assert torch.allclose(packed(t), linear(t), atol=1e-5)


def test_bfloat16_where_this_cpu_packs_it() -> None:
    if not supported(torch.bfloat16):
        pytest.skip("this CPU has no AVX-512: oneDNN does not pack bfloat16 weights here")
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96).to(torch.bfloat16)
    x = torch.randn(8, 64).to(torch.bfloat16)
    with torch.inference_mode():
        got, want = PackedLinear(linear, 8)(x).float(), linear(x).float()
    assert torch.allclose(got, want, atol=0.05, rtol=0.02)


def test_prepack_replaces_every_linear_and_keeps_the_output() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Sequential(torch.nn.Linear(16, 4))
    )
    x = torch.randn(3, 8)
    with torch.inference_mode():
        want = model(x)
        assert prepack(model, 3) == 2
        assert not any(type(m) is torch.nn.Linear for m in model.modules())
        assert torch.allclose(model(x), want, atol=1e-6)


def test_cpu_towers_are_prepacked(tiny_source: ModelSource) -> None:
    """Text (float32) and image towers on the CPU run packed layers; int8 text keeps its own."""
    text = TextEmbedder(tiny_source, "float32").load()
    image = ImageEmbedder(tiny_source, "cpu", "float32").load()
    int8 = TextEmbedder(tiny_source, "int8").load()
    assert any(isinstance(m, PackedLinear) for m in text.model.modules())
    assert any(isinstance(m, PackedLinear) for m in image.model.modules())
    assert not any(isinstance(m, PackedLinear) for m in int8.model.modules())


def test_a_gelu_after_fc1_is_fused_into_it() -> None:
    """SigLIP's MLPs (GELU, tanh approximation) get the GELU as oneDNN's post-op on ``fc1``, and
    the whole tower gives the same output; CLIP's quick GELU is left where it is."""
    from transformers import CLIPTextConfig, CLIPTextModel, SiglipTextConfig, SiglipTextModel

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
    small |= dict(vocab_size=99, max_position_embeddings=16)
    siglip = SiglipTextModel(SiglipTextConfig(**small)).eval()
    clip = CLIPTextModel(CLIPTextConfig(**small)).eval()
    ids = torch.randint(0, 99, (3, 16))
    with torch.inference_mode():
        for model, fused in ((siglip, True), (clip, False)):
            want = model(input_ids=ids).pooler_output
            prepack(model, 16)
            mlp = getattr(model, "text_model", model).encoder.layers[0].mlp
            assert isinstance(mlp.fc1, PackedLinear) and isinstance(mlp.fc2, PackedLinear)
            assert isinstance(mlp.activation_fn, torch.nn.Identity) is fused
            assert (mlp.fc1.unary == "gelu") is fused
            assert torch.allclose(model(input_ids=ids).pooler_output, want, atol=1e-5)
