"""The near-duplicate threshold measured on the library's own photos with its own model
(:mod:`image_search.duplicates.calibration`): what it measures, when, where it is kept and who uses it."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from image_search.duplicates import calibration
from image_search.duplicates.calibration import (
    COPIES,
    SAMPLE,
    Calibration,
    chosen,
    copies_of,
    derive,
    measure_library,
)
from image_search.indexing.indexer import Indexer
from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.pictures.imaging import CropSpec
from image_search.store import Store
from image_search.webui import create_app

from .conftest import all_wallpapers, app_config, index_folder
from .test_cli import cli


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_the_threshold_is_the_lowest_cosine_less_the_margin() -> None:
    rng = np.random.default_rng(0)
    originals = _unit(rng.normal(size=(3, 8)))
    other = _unit(rng.normal(size=(3, 8)))
    other = _unit(other - (other * originals).sum(-1, keepdims=True) * originals)  # orthogonal to each
    cosines = np.array([[0.99, 0.97], [0.995, 0.93], [0.98, 0.96]])
    copies = cosines[..., None] * originals[:, None] + np.sqrt(1 - cosines[..., None] ** 2) * other[:, None]
    found = derive(originals, copies)
    assert found == Calibration(similarity=0.91, lowest=0.93, photos=3, copies=6)
    assert calibration.threshold(0.5) == calibration.FLOOR  # never the n² work of a low threshold
    assert calibration.threshold(1.0) == 0.98
    assert Calibration.from_dict(found.as_dict()) == found
    for broken in (None, {}, {"similarity": "x", "lowest": 1, "photos": 1, "copies": 1}, [1]):
        assert Calibration.from_dict(broken) is None  # type: ignore[arg-type]


def test_copies_are_the_sizes_and_crops_they_name() -> None:
    picture = Image.effect_mandelbrot((3000, 2000), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    made = [Image.open(io.BytesIO(data)) for data in copies_of(picture)]
    assert [m.format for m in made] == ["JPEG"] * len(COPIES)
    assert [m.size for m in made] == [(3000, 2000), (2048, 1365), (1024, 683), (512, 341), (2048, 1365)]
    cropped = picture.crop((120, 80, 3000, 2000))  # 4 % off the left and the top

    def grey(image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("L").resize((300, 200)), dtype=np.float32)

    assert np.abs(grey(made[4]) - grey(cropped)).mean() * 3 < np.abs(grey(made[1]) - grey(cropped)).mean()
    small = Image.new("RGB", (400, 300))  # never enlarged
    assert [Image.open(io.BytesIO(d)).size for d in copies_of(small)][:4] == [(400, 300)] * 4


def _folder(root: Path, count: int) -> list[Path]:
    wallpapers = [p for p in all_wallpapers() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}][:count]
    assert len(wallpapers) == count, "apt-get install the wallpaper packages (.ci/run does)"
    root.mkdir(parents=True)
    return [Path(shutil.copy(p, root / f"{i:02d}{p.suffix}")) for i, p in enumerate(wallpapers)]


async def test_measured_once_with_the_model_and_dropped_with_it(
    tmp_path: Path, image_embedder: ImageEmbedder
) -> None:
    root = tmp_path / "Pictures"
    files = _folder(root, SAMPLE + 2)
    async with Store("mem://") as store:
        await index_folder(store, root, image_embedder)
        sample = await store.some_searchable_paths(image_embedder.source.model_id, 4 * SAMPLE)
        assert sorted(sample) == sorted(map(str, files))
        Path(sample[0]).write_bytes(Path(sample[0]).read_bytes()[:2000])  # unreadable now: passed over
        async with Indexer(store, image_embedder, workers=1) as indexer:
            found = await measure_library(store, indexer)
            assert found is not None and (found.photos, found.copies) == (SAMPLE, SAMPLE * len(COPIES))
            assert found.similarity == calibration.threshold(found.lowest)
            assert Calibration.from_dict(await store.duplicate_calibration()) == found
            # Measured again by hand on one photo of the sample: every copy at least the lowest.
            pictures = calibration.pictures(sample[1], indexer.embedder.crop, 100)
            assert pictures is not None and len(pictures) == 1 + len(COPIES)
            vectors = image_embedder.embed_images(pictures)
            assert (vectors[1:] @ vectors[0]).min() >= found.lowest - 1e-3
            for path in files:  # kept, not measured again: there is nothing left to measure
                path.unlink()
            assert await measure_library(store, indexer) == found
        await store.check_model("another-model", reembed=True)
        assert await store.duplicate_calibration() is None


async def test_a_small_library_keeps_the_family_value(tmp_path: Path, image_embedder: ImageEmbedder) -> None:
    root = tmp_path / "Pictures"
    _folder(root, SAMPLE - 1)
    async with Store("mem://") as store:
        await index_folder(store, root, image_embedder)
        async with Indexer(store, image_embedder, workers=1) as indexer:
            assert await measure_library(store, indexer) is None
        assert await store.duplicate_calibration() is None
    assert chosen(0, None, 0.85) == (0.85, f"the model family's default, until {SAMPLE} photos are indexed")
    measured = Calibration(0.93, 0.951, 16, 80)
    assert chosen(0, measured, 0.85)[0] == 0.93 and chosen(0.9, measured, 0.85)[0] == 0.9


def test_index_measures_and_duplicates_says_so(tmp_path: Path, cli_env: dict[str, str]) -> None:
    root = tmp_path / "Pictures"
    _folder(root, SAMPLE)
    cli("index", str(root), env=cli_env)
    found = json.loads(cli("duplicates", "--json", env=cli_env).stdout)
    assert found["similarity_from"].startswith(f"measured on {SAMPLE} of this library's photos")
    assert calibration.FLOOR <= found["similarity"] <= calibration.CEILING
    plain = cli("duplicates", env=cli_env).stderr
    assert f"vectors within cosine {found['similarity']:g} (measured on {SAMPLE}" in plain
    configured = cli("duplicates", "--json", "--duplicate-similarity", "0.9", env=cli_env).stdout
    assert json.loads(configured)["similarity"] == 0.9


async def test_the_page_groups_with_the_measured_value(
    tmp_path: Path, image_embedder: ImageEmbedder, text_embedder: TextEmbedder, tiny_model_dir: Path
) -> None:
    async with Store("mem://") as store:
        root = tmp_path / "Pictures"
        _folder(root, 2)
        await index_folder(store, root, image_embedder)
        app = create_app(app_config(tmp_path, tiny_model_dir), store=store, text_embedder=text_embedder)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            before = await (await client.get("/api/duplicates")).json()
            assert before["similarity_from"].startswith("the model family's default")
            await store.record_duplicate_calibration(
                image_embedder.source.model_id, Calibration(0.93, 0.951, 16, 80).as_dict()
            )
            after = await (await client.get("/api/duplicates")).json()
            assert after["similarity"] == 0.93 and after["similarity_from"].startswith("measured on 16")
            asked = await (await client.get("/api/duplicates", params={"similarity": "0.95"})).json()
            assert (asked["similarity"], asked["similarity_from"]) == (0.95, "this request")


def test_a_raw_file_is_passed_over(tmp_path: Path) -> None:
    raw = tmp_path / "a.dng"
    raw.write_bytes(b"II*\x00")
    assert calibration.pictures(str(raw), CropSpec(), 100) is None


def test_a_decoder_bug_costs_the_photo_its_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "a.jpg"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(photo)
    assert calibration.pictures(str(photo), CropSpec(), 100) is not None

    def broken(*args: object, **kwargs: object) -> Image.Image:
        raise RuntimeError("a decoder's bug")

    monkeypatch.setattr(calibration, "decode_rgb", broken)
    assert calibration.pictures(str(photo), CropSpec(), 100) is None
