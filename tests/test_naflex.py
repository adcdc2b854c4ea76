"""SigLIP 2 NaFlex (#15): a tiny random NaFlex model built with transformers' own classes and
loaded through the same path as ``google/siglip2-base-patch16-naflex``; its pictures keep their
shape and are prepared exactly as ``Siglip2ImageProcessor`` does; a batch of shapes embeds each
picture as alone; its texts as its processor's; indexing and search end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from transformers import Siglip2Model, Siglip2Processor
from transformers.models.siglip2.image_processing_pil_siglip2 import (
    Siglip2ImageProcessorPil,
    get_image_size_for_max_num_patches,
)

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.families import SIGLIP2_NAFLEX
from image_search.models.model import ImageEmbedder, ModelSource, TextEmbedder
from image_search.pictures import naflex
from image_search.pictures.imaging import configure_pillow, model_input, prepare
from image_search.pictures.thumbs import Thumbnails
from image_search.store import Store
from image_search.store.rows import from_bytes
from image_search.testing import build_tiny_siglip2_naflex
from image_search.webui import create_app

from .conftest import app_config
from .test_families import texts_as_the_processor, unit

configure_pillow()


@pytest.fixture(scope="module")
def naflex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip2_naflex(tmp_path_factory.mktemp("models") / "tiny-naflex")


@pytest.fixture(scope="module")
def model(naflex_dir: Path) -> tuple[ModelSource, ImageEmbedder, Siglip2Model]:
    source = ModelSource(str(naflex_dir))
    return (
        source,
        ImageEmbedder(source, "cpu", "float32").load(),
        Siglip2Model.from_pretrained(naflex_dir).eval(),
    )


def shapes(tmp_path: Path) -> list[Path]:
    """Pictures the real photos do not cover: a panorama, a sliver, a single pixel, portrait."""
    made = []
    rng = np.random.default_rng(0)
    for width, height in ((4000, 900), (3, 1500), (1, 1), (600, 800)):
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        made.append(path)
    return made


def test_the_family_and_geometry_come_from_the_checkpoint(model) -> None:  # type: ignore[no-untyped-def]
    source, images, _ = model
    assert source.family is SIGLIP2_NAFLEX
    spec, mean, std = source.crop_spec()
    assert (spec.patch, spec.max_patches, spec.resample, spec.square) == (8, 64, 2, False)
    assert spec.shortest_edge == 64  # draft decoding keeps the shortest side at twice this
    assert mean == std == (0.5, 0.5, 0.5)
    assert images.dim == 32
    assert source.defaults().album_min_score == pytest.approx(16.0 / np.exp(4.7), abs=1e-3)


def test_sizes_are_the_processors(model) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    sizes = [(int(h), int(w)) for h, w in rng.integers(1, 9000, (300, 2))] + [(1, 1), (1, 9000), (9000, 1)]
    for patch, most in ((8, 64), (16, 256), (16, 1024), (14, 729)):
        for h, w in sizes:
            expected = get_image_size_for_max_num_patches(h, w, patch, most)
            assert naflex.size_for(h, w, patch, most) == expected, (h, w, patch, most)


def test_pictures_are_prepared_as_the_naflex_processor_does(  # type: ignore[no-untyped-def]
    model, naflex_dir: Path, real_photos: list[Path], tmp_path: Path
) -> None:
    """Equal to the processor's pixel values, mask and grid, and the embedding equal to
    Siglip2Model.get_image_features, for every shape."""
    _, images, full = model
    proc = Siglip2ImageProcessorPil.from_pretrained(naflex_dir)
    for path in [*real_photos, *shapes(tmp_path)]:
        prepared = prepare(str(path), images.crop, 1000, draft=False)
        assert prepared.error is None, (path, prepared.error)
        values, mask, grids = images.model_inputs(torch.from_numpy(prepared.pixels[None]))  # type: ignore[index]
        with Image.open(path) as image:
            expected = proc(images=image.convert("RGB"), return_tensors="pt")
        assert values.shape == expected["pixel_values"].shape == (1, 64, 8 * 8 * 3)
        assert (values - expected["pixel_values"]).abs().max().item() <= 1e-5, path
        assert torch.equal(mask, expected["pixel_attention_mask"].long()), path
        assert torch.equal(grids, expected["spatial_shapes"].long()), path
        with torch.inference_mode():
            reference = unit(full.get_image_features(**expected))
        got = images.embed_pixels(prepared.pixels[None])  # type: ignore[index]
        assert float((got * reference).sum()) >= 0.9999, path


def test_a_batch_of_shapes_embeds_each_picture_as_alone(
    model, real_photos: list[Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _, images, _ = model
    pictures = [
        prepare(str(p), images.crop, 1000, draft=False).pixels for p in [*real_photos[:4], *shapes(tmp_path)]
    ]
    together = images.embed_pixels(np.stack(pictures))  # type: ignore[arg-type]
    alone = np.concatenate([images.embed_pixels(p[None]) for p in pictures])  # type: ignore[index]
    assert np.abs(together - alone).max() <= 1e-5
    assert len({tuple(np.round(v, 4)) for v in together}) == len(pictures)  # no picture took another's
    with Image.open(real_photos[0]) as image:  # a query picture goes the same way
        assert np.allclose(images.embed_images([image.convert("RGB")]), together[:1], atol=1e-5)


def test_grids_past_255_patches_survive_the_header() -> None:
    thin = Image.new("RGB", (16, 16 * 300))
    embedder = ImageEmbedder(ModelSource("google/siglip2-base-patch16-naflex", random_weights=True), "cpu")
    inputs = model_input(thin, embedder.crop)
    assert inputs.shape == (1 + 256, 16 * 16 * 3)
    _, mask, grids = embedder.model_inputs(torch.from_numpy(inputs[None]))
    assert grids.tolist() == [[256, 1]] and int(mask.sum()) == 256
    with pytest.raises(ValueError, match="not a NaFlex size"):
        naflex.patches(Image.new("RGB", (20, 16)), 16, 1024)


def test_draft_decoding_keeps_its_tolerance_for_naflex(model, real_photos: list[Path]) -> None:  # type: ignore[no-untyped-def]
    _, images, _ = model
    for path in [p for p in real_photos if p.suffix.lower() in {".jpg", ".jpeg"}]:
        fast, exact = (prepare(str(path), images.crop, 1000, draft=d).pixels for d in (True, False))
        assert np.array_equal(fast[0], exact[0]), path  # type: ignore[index]  # the same grid
        a, b = (images.model_inputs(torch.from_numpy(p[None]))[0] for p in (fast, exact))  # type: ignore[index]
        assert (a - b).abs().mean().item() <= 0.03, path
        cosine = (images.embed_pixels(fast[None]) * images.embed_pixels(exact[None])).sum()  # type: ignore[index]
        assert cosine >= 0.995, path


def test_bfloat16_stays_close_to_float32(model, real_photos: list[Path]) -> None:  # type: ignore[no-untyped-def]
    source, exact, _ = model
    half = ImageEmbedder(source, "cpu", "bfloat16").load()
    pictures = np.stack([model_input(Image.open(p).convert("RGB"), exact.crop) for p in real_photos])
    cosines = (exact.embed_pixels(pictures) * half.embed_pixels(pictures)).sum(axis=1)
    assert cosines.min() >= 0.995, cosines


def test_texts_are_prepared_as_the_naflex_processor_does(model, naflex_dir: Path) -> None:  # type: ignore[no-untyped-def]
    source, _, full = model
    texts = TextEmbedder(source, "float32").load()
    texts_as_the_processor(texts, Siglip2Processor.from_pretrained(naflex_dir), full)
    assert texts.dim == 32


def test_the_random_naflex_config_has_the_published_shapes() -> None:
    source = ModelSource("google/siglip2-base-patch16-naflex", random_weights=True)
    vision = source.random_config().vision_config
    assert source.family is SIGLIP2_NAFLEX
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.num_patches) == (
        768,
        12,
        16,
        256,
    )
    spec, _, _ = source.crop_spec()
    assert (spec.patch, spec.max_patches, spec.shortest_edge) == (16, 256, 256)


async def test_a_naflex_library_indexes_and_searches(  # type: ignore[no-untyped-def]
    model, naflex_dir: Path, tmp_path: Path, real_photos: list[Path]
) -> None:
    source, images, _ = model
    root = tmp_path / "Pictures"
    root.mkdir()
    for path in [*real_photos[:3], *shapes(tmp_path)[:2]]:
        (root / path.name).write_bytes(path.read_bytes())
    config = app_config(tmp_path, naflex_dir)
    thumbs = Thumbnails(config.cache_dir)
    texts = TextEmbedder(source, "float32").load()
    async with Store("mem://") as store:
        await store.check_model(source.model_id)
        async with Indexer(
            store, images, workers=2, batch_size=4, thumbnails=thumbs, gpu_decode="on"
        ) as indexer:
            summary = await indexer.index([FileRef(str(p), str(root)) for p in sorted(root.iterdir())])
        assert summary.indexed == 5 and not summary.failed
        rows = await store.searchable_rows(source.model_id)
        for row in rows:  # each file's own vector: the one it gets alone
            alone = images.embed_images([Image.open(row["path"]).convert("RGB")])[0]
            stored = from_bytes(row["embedding"]).astype(np.float32)
            assert float(alone @ stored) >= 0.999, row["path"]
        panorama = next(r for r in rows if r["path"].endswith("4000x900.png"))
        with Image.open(thumbs.path(panorama["hash"], 256, "webp")) as thumb:  # the picture's shape kept
            assert abs(thumb.width / thumb.height - 4000 / 900) < 0.1
        app = create_app(config, store=store, text_embedder=texts)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            found = await client.post("/api/search", json={"text": "日本の犬 on a BEACH", "limit": 10})
            assert found.status == 200 and len((await found.json())["results"]) == 5
