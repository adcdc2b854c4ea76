"""The model module: loading like the real model, errors, devices, text and image embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel

from image_search.models.model import (
    ImageEmbedder,
    ModelSource,
    ModelUnavailable,
    TextEmbedder,
    cpu_has_bf16,
    pick_device,
    pick_dtype,
)


def test_towers_equal_the_full_clip_model(
    tiny_model_dir: Path, image_embedder: ImageEmbedder, real_photos: list[Path]
) -> None:
    """The separately loaded towers give what CLIPModel.get_*_features gives (transformers 5
    returns an output object there: the projected vector is its pooler_output)."""
    full = CLIPModel.from_pretrained(tiny_model_dir).eval()
    text = TextEmbedder(ModelSource(str(tiny_model_dir)), "float32").load()
    tokens = text.tokenizer(["a photo of a dog"], return_tensors="pt")
    with torch.inference_mode():
        ref_text = full.get_text_features(**tokens).pooler_output
        raw = torch.randint(
            0, 256, (3, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        pixels = image_embedder.normalise_pixels(raw)
        ref_image = full.get_image_features(pixel_values=pixels).pooler_output
    ours_text = text.embed_texts(["a photo of a dog"])
    ours_image = image_embedder.embed_pixels(raw)
    assert np.allclose(ours_text, torch.nn.functional.normalize(ref_text, dim=-1).numpy(), atol=1e-5)
    assert np.allclose(ours_image, torch.nn.functional.normalize(ref_image, dim=-1).numpy(), atol=1e-5)


def test_embeddings_are_unit_vectors(
    image_embedder: ImageEmbedder, text_embedder: TextEmbedder, real_photos: list[Path]
) -> None:
    images = [Image.open(p) for p in real_photos[:3]]
    vectors = image_embedder.embed_images(images)
    assert vectors.shape == (3, image_embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    texts = text_embedder.embed_texts(["beach", "a mountain at sunset"])
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_long_query_is_truncated_not_refused(text_embedder: TextEmbedder) -> None:
    long = " ".join(["mountain"] * 2000)
    vector = text_embedder.embed_texts([long])
    assert vector.shape == (1, text_embedder.dim)
    assert np.allclose(vector, text_embedder.embed_texts([" ".join(["mountain"] * 200)]), atol=1e-6)


def test_int8_text_is_close_to_float32(tiny_source: ModelSource, text_embedder: TextEmbedder) -> None:
    fp32 = TextEmbedder(tiny_source, "float32").load()
    queries = ["a photo of a dog", "the city at night", "sunset beach"]
    cos = (fp32.embed_texts(queries) * text_embedder.embed_texts(queries)).sum(axis=1)
    assert cos.min() >= 0.99, cos


def test_uncached_hub_model_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub

    # huggingface_hub reads HF_HUB_OFFLINE and its cache paths at import: set what it read.
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = ModelSource("openai/clip-vit-large-patch14")
    with pytest.raises(ModelUnavailable) as info:
        ImageEmbedder(source, "cpu").load()
    message = str(info.value)
    assert "not in the Hugging Face cache" in message and "--model" in message


def test_broken_local_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match=str(tmp_path)):
        TextEmbedder(ModelSource(str(tmp_path))).load()


def test_model_id_names_the_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    from image_search.testing import build_tiny_clip

    same = ModelSource(str(tiny_model_dir)).model_id
    assert same == ModelSource(str(tiny_model_dir)).model_id
    other = build_tiny_clip(tmp_path / "tiny-clip", seed=1)
    assert ModelSource(str(other)).model_id != same
    assert ModelSource("openai/clip-vit-large-patch14").model_id == "openai/clip-vit-large-patch14"


def test_random_weights_have_vit_l14_shapes() -> None:
    config = ModelSource("openai/clip-vit-large-patch14", random_weights=True).random_config()
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.patch_size, v.image_size) == (1024, 24, 14, 224)
    assert (t.hidden_size, t.num_hidden_layers, t.vocab_size, config.projection_dim) == (768, 12, 49408, 768)


@pytest.mark.slow
def test_random_text_tower_has_vit_l14_parameter_count() -> None:
    source = ModelSource("openai/clip-vit-large-patch14", random_weights=True)
    assert abs(sum(p.numel() for p in source.tower("text").parameters()) / 1e6 - 123.65) < 0.1
    text = TextEmbedder(source, "float32").load()
    assert text.embed_texts(["a dog"]).shape == (1, 768)


def test_device_and_dtype_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_dtype(torch.device("cpu")) == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert pick_dtype(torch.device("cuda")) == torch.float16
    assert pick_dtype(torch.device("cuda"), "bfloat16") == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ModelUnavailable, match="not available"):
            pick_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA or ROCm GPU")
def test_gpu_embeddings_match_cpu(tiny_source: ModelSource, image_embedder: ImageEmbedder) -> None:
    gpu = ImageEmbedder(tiny_source, "cuda", "float16").load()
    pixels = np.random.default_rng(0).integers(0, 255, (4, 224, 224, 3), dtype=np.uint8)
    cos = (gpu.embed_pixels(pixels) * image_embedder.embed_pixels(pixels)).sum(axis=1)
    assert cos.min() > 0.99


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")  # torch.compile's own use of it
def test_compiled_on_the_cpu_equals_eager(
    tiny_source: ModelSource, image_embedder: ImageEmbedder, real_photos: list[Path]
) -> None:
    """compile on a CPU freezes the weights (prepacked for oneDNN): the embeddings stay the same."""
    import torch._inductor.config as inductor

    compiled = ImageEmbedder(tiny_source, "cpu", "float32", compile=True).load()
    assert inductor.freezing
    images = [Image.open(p) for p in real_photos[:4]]
    eager = image_embedder.embed_images(images)
    fast = compiled.embed_images(images)
    assert (eager * fast).sum(1).min() > 0.999


def test_int8_image_tower_is_checked_against_float32(
    tiny_source: ModelSource,
    real_photos: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dtype int8 quantises the image tower's linear layers, kept only where the embeddings of
    the load-time check stay within cosine 0.99 of float32's; real photos stay as close."""
    import image_search.models.int8 as int8_module
    from image_search.pictures.imaging import prepare

    exact = ImageEmbedder(tiny_source, "cpu", "float32").load()
    crops = np.stack([prepare(str(p), exact.crop, 1000).pixels for p in real_photos[:8]])
    quantised = ImageEmbedder(tiny_source, "cpu", "int8").load()
    assert quantised.int8_cosine is not None and quantised.int8_cosine >= int8_module.INT8_MIN_COSINE
    assert any("quantized" in type(m).__module__ for m in quantised.model.modules())
    assert (quantised.embed_pixels(crops) * exact.embed_pixels(crops)).sum(axis=1).min() >= 0.99
    # Weights whose int8 embeddings drift: float32 stays, and the log says why.
    monkeypatch.setattr(int8_module, "INT8_MIN_COSINE", 1.01)
    kept = ImageEmbedder(tiny_source, "cpu", "int8").load()
    assert "stays float32" in caplog.text
    assert not any("quantized" in type(m).__module__ for m in kept.model.modules())
    np.testing.assert_allclose(kept.embed_pixels(crops), exact.embed_pixels(crops), atol=1e-5)


def test_int8_is_auto_only_on_a_cpu_without_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    import image_search.models.model as model_module

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for native, auto in ((True, False), (False, True)):
        monkeypatch.setattr(model_module, "cpu_has_bf16", lambda native=native: native)
        assert model_module.wants_int8(cpu, "auto") is auto
        assert model_module.wants_int8(cpu, "int8") and not model_module.wants_int8(cpu, "float32")
        assert not model_module.wants_int8(gpu, "auto") and not model_module.wants_int8(gpu, "int8")


def test_text_auto_is_bfloat16_where_native_else_int8(
    tiny_source: ModelSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    import image_search.models.model as model_module

    for native, wanted in ((True, "bfloat16"), (False, "int8")):
        monkeypatch.setattr(model_module, "cpu_has_bf16", lambda native=native: native)
        text = TextEmbedder(tiny_source, "auto")
        assert text.dtype == wanted and text.bfloat16 is native and text.quantise is not native
