"""SigLIP beside CLIP (#15): a tiny random SigLIP 2 (fixed resolution) built with transformers'
own classes and loaded through the same path as a real checkpoint; its pictures and texts
prepared exactly as its processor does; its thresholds its own; bfloat16 on CPUs that have it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from transformers import SiglipModel, SiglipProcessor
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from image_search.errors import ModelUnavailable
from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.families import CLIP, SIGLIP
from image_search.models.model import ImageEmbedder, ModelSource, TextEmbedder, cpu_has_bf16
from image_search.pictures.imaging import configure_pillow, prepare
from image_search.pictures.thumbs import Thumbnails
from image_search.store import Store
from image_search.testing import build_tiny_siglip
from image_search.webui import create_app

from .conftest import app_config

configure_pillow()
QUERIES = ["A photo of a DOG on the beach", "日本の犬", "كلب على الشاطئ", "🐕🌊", "", "x" * 2000]


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


@pytest.fixture(scope="module")
def siglip(siglip_dir: Path) -> tuple[ModelSource, ImageEmbedder, TextEmbedder, SiglipModel]:
    source = ModelSource(str(siglip_dir))
    full = SiglipModel.from_pretrained(siglip_dir).eval()
    return (
        source,
        ImageEmbedder(source, "cpu", "float32").load(),
        TextEmbedder(source, "float32").load(),
        full,
    )


def unit(t: torch.Tensor | object) -> np.ndarray:
    t = getattr(t, "pooler_output", t)
    return torch.nn.functional.normalize(t, dim=-1).numpy()  # type: ignore[arg-type]


def test_the_family_comes_from_the_checkpoint(siglip, tiny_source: ModelSource, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, images, texts, _ = siglip
    assert source.family is SIGLIP and tiny_source.family is CLIP
    spec, mean, std = source.crop_spec()
    assert spec.square and (spec.crop_width, spec.crop_height, spec.resample) == (64, 64, 2)
    assert mean == std == (0.5, 0.5, 0.5)
    assert images.dim == texts.dim == 32
    cases = (("metaclip_2", "CC-BY-NC"), ("blip", "not one image-search loads"))
    for model_type, message in cases:
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(ModelUnavailable, match=message):
            ModelSource(str(folder)).family  # noqa: B018


def test_pictures_are_prepared_as_the_siglip_processor_does(
    siglip, siglip_dir: Path, real_photos: list[Path]
) -> None:  # type: ignore[no-untyped-def]
    """The whole picture to the square input, no crop: equal to the processor to float rounding,
    and the embedding equal to SiglipModel.get_image_features."""
    _, images, _, full = siglip
    proc = SiglipImageProcessorPil.from_pretrained(siglip_dir)
    for path in real_photos:
        prepared = prepare(str(path), images.crop, 1000, draft=False)
        ours = images.normalise_pixels(torch.from_numpy(prepared.pixels[None]))  # type: ignore[index]
        with Image.open(path) as image:
            expected = proc(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        assert ours.shape == expected.shape == (1, 3, 64, 64)
        assert (ours - expected).abs().max().item() <= 1e-5, path
        with torch.inference_mode():
            reference = unit(full.get_image_features(pixel_values=expected))
        got = images.embed_pixels(prepared.pixels[None])  # type: ignore[index]
        assert float((got * reference).sum()) >= 0.9999, path


def test_draft_decoding_keeps_its_tolerance_for_siglip(siglip, real_photos: list[Path]) -> None:  # type: ignore[no-untyped-def]
    _, images, _, _ = siglip
    for path in [p for p in real_photos if p.suffix.lower() in {".jpg", ".jpeg"}]:
        fast, exact = (prepare(str(path), images.crop, 1000, draft=d).pixels for d in (True, False))
        a, b = (images.normalise_pixels(torch.from_numpy(p[None])) for p in (fast, exact))  # type: ignore[index]
        assert (a - b).abs().mean().item() <= 0.03, path
        cosine = (images.embed_pixels(fast[None]) * images.embed_pixels(exact[None])).sum()  # type: ignore[index]
        assert cosine >= 0.995, path


def texts_as_the_processor(texts: TextEmbedder, proc: object, full: object) -> np.ndarray:
    """QUERIES tokenised as ``proc`` does (lower-cased, padded to all 64 positions) and embedded
    as ``full.get_text_features`` does; the embeddings."""
    expected = proc(  # type: ignore[operator]
        text=[q.lower() for q in QUERIES],
        padding="max_length",
        max_length=64,
        truncation=True,
        return_tensors="pt",
    )["input_ids"]
    tokens = texts.tokens(QUERIES)["input_ids"]
    assert tokens.shape == (len(QUERIES), 64) and torch.equal(tokens, expected)
    with torch.inference_mode():
        reference = unit(full.get_text_features(input_ids=expected))  # type: ignore[attr-defined]
    got = texts.embed_texts(QUERIES)
    assert np.allclose((got * reference).sum(axis=1), 1.0, atol=1e-4)
    return got


def test_texts_are_prepared_as_the_siglip_processor_does(siglip, siglip_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Lower-cased, padded to all 64 positions, no attention mask; any script tokenises; the
    embedding equals SiglipModel.get_text_features."""
    _, _, texts, full = siglip
    got = texts_as_the_processor(texts, SiglipProcessor.from_pretrained(siglip_dir), full)
    assert np.allclose(texts.embed_texts(["A Dog"]), texts.embed_texts(["a dog"]))  # lower-cased
    int8 = TextEmbedder(texts.source, "int8").load().embed_texts(QUERIES)
    assert (int8 * got).sum(axis=1).min() >= 0.99


def test_thresholds_are_the_models_own(siglip, tiny_source: ModelSource) -> None:  # type: ignore[no-untyped-def]
    source = siglip[0]
    ours, clips = source.defaults(), tiny_source.defaults()
    assert ours.album_min_score == pytest.approx(16.0 / np.exp(4.7), abs=1e-3)  # its sigmoid's midpoint
    assert ours.duplicate_similarity == SIGLIP.duplicate_similarity != CLIP.duplicate_similarity
    assert (clips.album_min_score, clips.duplicate_similarity) == (0.2, 0.92)


async def test_a_siglip_library_indexes_and_searches(
    siglip, siglip_dir: Path, tmp_path: Path, real_photos: list[Path]
) -> None:  # type: ignore[no-untyped-def]
    source, images, texts, _ = siglip
    root = tmp_path / "Pictures"
    root.mkdir()
    for path in real_photos[:4]:
        (root / path.name).write_bytes(path.read_bytes())
    config = app_config(tmp_path, siglip_dir)
    thumbs = Thumbnails(config.cache_dir)
    async with Store("mem://") as store:
        await store.check_model(source.model_id)
        async with Indexer(store, images, workers=2, batch_size=4, thumbnails=thumbs) as indexer:
            summary = await indexer.index([FileRef(str(p), str(root)) for p in sorted(root.iterdir())])
        assert summary.indexed == 4
        row = (await store.searchable_rows(source.model_id))[0]
        with Image.open(thumbs.path(row["hash"], 256, "webp")) as thumb:  # the picture's shape kept
            assert abs(thumb.width / thumb.height - row["width"] / row["height"]) < 0.05
        app = create_app(config, store=store, text_embedder=texts)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            found = await client.post("/api/search", json={"text": "日本の犬 on a BEACH", "limit": 10})
            assert found.status == 200 and len((await found.json())["results"]) == 4
            made = await client.post("/api/albums", json={"name": "Dogs", "text": "a dog"})
            assert made.status == 201, await made.text()
            assert (await made.json())["min_score"] == pytest.approx(16.0 / np.exp(4.7), abs=1e-3)


def test_bfloat16_is_chosen_where_the_cpu_has_it(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    for flags, wanted in (
        ("fpu sse2 avx2", False),
        ("avx512f avx512_bf16", True),
        ("amx_bf16 amx_tile", True),
    ):
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_bf16(str(info)) is wanted
    assert cpu_has_bf16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_bfloat16_embeddings_stay_close_to_float32(  # type: ignore[no-untyped-def]
    family: str, siglip, tiny_source: ModelSource, real_photos: list[Path]
) -> None:
    source = siglip[0] if family == "siglip" else tiny_source
    exact = ImageEmbedder(source, "cpu", "float32").load()
    half = ImageEmbedder(source, "cpu", "bfloat16").load()
    crops = np.stack([prepare(str(p), exact.crop, 1000).pixels for p in real_photos])
    cosines = (exact.embed_pixels(crops) * half.embed_pixels(crops)).sum(axis=1)
    assert cosines.min() >= 0.995, cosines


def test_random_siglip2_configs_have_the_published_shapes() -> None:
    shapes = {
        "google/siglip2-base-patch16-224": (768, 12, 16, 224),
        "google/siglip2-large-patch16-256": (1024, 24, 16, 256),
        "google/siglip2-so400m-patch14-384": (1152, 27, 14, 384),
    }
    for name, (hidden, layers, patch, side) in shapes.items():
        source = ModelSource(name, random_weights=True)
        vision = source.random_config().vision_config
        assert source.family is SIGLIP and source.model_id == f"random:{name.split('/')[1]}.json"
        assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (
            hidden,
            layers,
            patch,
            side,
        )
        spec, _, _ = source.crop_spec()
        assert spec.square and spec.crop_width == side
    with pytest.raises(ModelUnavailable, match="random-weights"):
        ModelSource("someone/else", random_weights=True).model_id  # noqa: B018
