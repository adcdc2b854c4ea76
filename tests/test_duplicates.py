"""Near-duplicates: fingerprints, the exact pair search, grouping, and the HTTP review on a test
set made of Debian's wallpapers (the same picture at several resolutions, re-encoded copies, a
burst, recoloured variants that must stay apart, flat pictures)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageEnhance

from image_search.duplicates.grouping import Settings, group
from image_search.duplicates.vectorjoin import TooManyPairs, similar_pairs
from image_search.indexing.gpudecode import reductions
from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.pictures import fingerprint
from image_search.pictures.fingerprint import Fingerprints
from image_search.pictures.imaging import CropSpec, prepare
from image_search.pictures.scan import Filter, walk
from image_search.store import Store
from image_search.webui import create_app

from .conftest import app_config, index_folder

# Debian's wallpaper packages (.ci/run installs them); a machine without them (the GPU host) gets
# a copy of the files used here in the same layout, named by IMAGE_SEARCH_TEST_SHARE.
SHARE = Path(os.environ.get("IMAGE_SEARCH_TEST_SHARE", "/usr/share"))
MATE = SHARE / "backgrounds" / "mate"
GNOME = SHARE / "backgrounds" / "gnome"
PLASMA = SHARE / "wallpapers"


def _need(*paths: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.fail(f"{missing[0]} is missing: apt-get install mate-backgrounds gnome-backgrounds")


def _reencode(src: Path, dest: Path, scale: float, fmt: str, quality: int) -> Path:
    with Image.open(src) as image:
        image = image.convert("RGB")
        small = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    small.save(dest, fmt, quality=quality)
    return dest


def _burst(src: Path, dest: Path) -> Path:
    """The next frame of a burst: the camera moved by 1.5 % and the light by 3 %."""
    with Image.open(src) as image:
        image = image.convert("RGB")
        dx, dy = int(image.width * 0.015), int(image.height * 0.015)
        moved = image.crop((dx, dy, image.width, image.height)).resize(image.size)
    ImageEnhance.Brightness(moved).enhance(1.03).save(dest, "JPEG", quality=90)
    return dest


def build_set(root: Path) -> tuple[list[set[str]], list[str]]:
    """Copies the test set into ``root``; returns the expected groups (sets of paths) and the
    paths that must stay alone."""
    nature = [MATE / "nature" / n for n in ("Aqua.jpg", "Blinds.jpg", "Dune.jpg", "GreenMeadow.jpg")]
    elephants = [
        MATE / "abstract" / n for n in ("Elephants.jpg", "Elephants_3840x2160.jpg", "Elephants_5640x3172.jpg")
    ]
    variants = [
        MATE / "desktop" / "Ubuntu-Mate-Cold-no-logo.png",
        MATE / "desktop" / "Ubuntu-Mate-Warm-no-logo.png",
        GNOME / "licorice-d.webp",
        GNOME / "licorice-l.webp",
        PLASMA / "Flow" / "contents" / "images" / "720x1440.jpg",
        PLASMA / "Flow" / "contents" / "images_dark" / "720x1440.jpg",
    ]
    flat = [MATE / "abstract" / "Silk.png", MATE / "abstract" / "Spring.png"]
    others = [MATE / "nature" / n for n in ("LadyBird.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg")]
    _need(*nature, *elephants[:2], *variants, *flat, *others)
    elephants = [p for p in elephants if p.exists()]  # the GPU host's copy leaves out the 16 MB one

    def copy(src: Path, folder: str, name: str | None = None) -> str:
        dest = root / folder / (name or src.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        return str(dest)

    groups: list[set[str]] = [{copy(p, "wallpapers") for p in elephants}]
    for i, src in enumerate(nature):
        original = copy(src, "camera")
        half = _reencode(src, root / "exports" / f"{src.stem}-half.jpg", 0.5, "JPEG", 70)
        tiny = _reencode(src, root / "phone" / f"{src.stem}-small.webp", 0.2, "WEBP", 60)
        members = {original, str(half), str(tiny)}
        if i == 0:
            members.add(str(_burst(src, root / "camera" / f"{src.stem}-burst.jpg")))
        groups.append(members)
    groups.append({copy(others[0], "camera"), copy(others[0], "backup", "LadyBird copy.jpg")})
    alone = [copy(p, "variants", f"{i}-{p.name}") for i, p in enumerate(variants)]
    alone += [copy(p, "flat") for p in flat] + [copy(p, "camera") for p in others[1:]]
    return groups, alone


# -- fingerprints -----------------------------------------------------------------------------


def _print(path: Path | str) -> bytes:
    prepared = prepare(str(path), CropSpec(), 200)
    assert prepared.error is None and prepared.fingerprint is not None
    return prepared.fingerprint


def test_fingerprint_tells_copies_from_variants(tmp_path: Path) -> None:
    src = MATE / "nature" / "Garden.jpg"
    cold, warm = (
        MATE / "desktop" / "Ubuntu-Mate-Cold-no-logo.png",
        MATE / "desktop" / "Ubuntu-Mate-Warm-no-logo.png",
    )
    _need(src, cold, warm)
    copies = [
        _reencode(src, tmp_path / "a.jpg", 0.5, "JPEG", 40),
        _reencode(src, tmp_path / "b.webp", 0.125, "WEBP", 50),
        _burst(src, tmp_path / "c.jpg"),
    ]
    prints = Fingerprints([_print(src), *map(_print, copies), _print(cold), _print(warm)])
    zero = np.zeros(3, dtype=int)
    assert prints.confirm(zero, np.array([1, 2, 3])).all()
    assert prints.hash_distance(np.array([4]), np.array([5]))[0] <= fingerprint.HASH_BITS  # same shapes
    assert not prints.confirm(np.array([4]), np.array([5]))[0]  # other colours


def test_flat_pictures_have_no_hash(tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), (250, 250, 250)).save(tmp_path / "white.png")
    Image.new("RGB", (300, 200), (250, 250, 250)).save(tmp_path / "white2.png")
    prints = Fingerprints([_print(tmp_path / "white.png"), _print(tmp_path / "white2.png"), None])
    assert not prints.textured.any()
    assert not prints.confirm(np.array([0, 0]), np.array([1, 2])).any()


def test_torch_reductions_agree_with_pillow(real_photos: list[Path]) -> None:
    """The GPU path reduces with torch (run here on the CPU); its fingerprints must confirm the
    Pillow path's for every real photo."""
    for path in real_photos:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        values = reductions(torch.from_numpy(array.copy()).permute(2, 0, 1)).numpy()
        cut = fingerprint.GREY * fingerprint.GREY
        from_torch = fingerprint.from_reduced(values[:cut], values[cut:])
        prints = Fingerprints([_print(path), from_torch])
        assert prints.textured[0] == prints.textured[1], path
        assert prints.confirm(np.array([0]), np.array([1]))[0] or not prints.textured[0], path
    assert sum(Fingerprints([_print(p) for p in real_photos]).textured) >= len(real_photos) - 1


# -- pairs and groups -------------------------------------------------------------------------


@pytest.mark.parametrize("bf16", [True, False])
def test_similar_pairs_is_exact(bf16: bool) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2500, 48)).astype(np.float32)
    x[1::5] = x[0::5][: len(x[1::5])] + rng.normal(scale=0.25, size=(len(x[1::5]), 48))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = x @ x.T
    for threshold in (0.9, 0.96, 0.99):
        truth = set(zip(*np.nonzero(np.triu(scores >= threshold, 1)), strict=True))
        found = {(int(i), int(j)) for i, j in similar_pairs(x, threshold, bf16=bf16)}
        assert found == {(int(i), int(j)) for i, j in truth}, threshold


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("dims", [1, 8, 24])
def test_pairs_through_bounds_are_exact(bf16: bool, dims: int) -> None:
    """The join on a few main directions and the rest's length finds exactly the pairs of the
    full one: the bounds never drop a pair, whatever the number of directions kept."""
    rng = np.random.default_rng(11)
    shared = rng.normal(size=(1, 48))
    x = (shared * 2 + rng.normal(size=(2000, 48))).astype(np.float32)
    x[1::4] = x[0::4][: len(x[1::4])] + rng.normal(scale=0.3, size=(len(x[1::4]), 48))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = x @ x.T
    for threshold in (0.9, 0.97):
        truth = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(scores >= threshold, 1)), strict=True)}
        found = {(int(i), int(j)) for i, j in similar_pairs(x, threshold, bf16=bf16, dims=dims)}
        assert found == truth, (threshold, dims)


def test_bounds_are_upper_bounds() -> None:
    """Px.Py + |Rx||Ry| >= x.y for every pair, also for rows almost inside the kept directions
    (where |x|² - |Px|² cancels in float32)."""
    import torch

    from image_search.duplicates.vectorjoin import _basis, _bounding

    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 32)).astype(np.float32)
    x[:300, 4:] *= 1e-3  # almost entirely in a few directions
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = torch.from_numpy(x)
    basis = _basis(rows)
    for dims in (1, 4, 16, 31):
        b = _bounding(rows, basis[:, :dims]).numpy()
        assert (b @ b.T >= x @ x.T - 1e-6).all(), dims


def test_bounds_that_let_too_much_through_fall_back() -> None:
    """One direction bounds nothing on spread-out vectors: the candidates overflow and every
    coordinate decides instead; a threshold low for every coordinate is still refused."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1500, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = x @ x.T
    truth = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(scores >= 0.8, 1)), strict=True)}
    found = similar_pairs(x, 0.8, bf16=False, dims=1, max_pairs=5_000)
    assert {(int(i), int(j)) for i, j in found} == truth
    with pytest.raises(TooManyPairs):
        similar_pairs(x, 0.0, bf16=False, dims=1, max_pairs=5_000)


def test_directions_are_chosen_from_a_sample() -> None:
    """Vectors that live in a few directions keep few; spread-out ones keep every coordinate
    when the threshold is near what the left-out directions could add (random 256-d vectors:
    |Rx|² is ~(256 - k) / 256)."""
    import torch

    from image_search.duplicates.vectorjoin import BOUNDS_FROM, DIMS, _basis, _choose_dims

    rng = np.random.default_rng(3)
    n = BOUNDS_FROM
    low = rng.normal(size=(n, 40)) @ rng.normal(size=(40, 256)) + rng.normal(size=(n, 256)) * 0.05
    low = torch.from_numpy((low / np.linalg.norm(low, axis=1, keepdims=True)).astype(np.float32))
    assert _choose_dims(low, _basis(low), 0.9, 500_000) == DIMS[0]
    spread = torch.from_numpy(rng.normal(size=(n, 256)).astype(np.float32))
    spread /= spread.norm(dim=1, keepdim=True)
    assert _choose_dims(spread, _basis(spread), 0.9, 500_000) == DIMS[0]
    assert _choose_dims(spread, _basis(spread), 0.3, 500_000) is None
    assert _choose_dims(low[: n - 1], _basis(low), 0.9, 500_000) is None  # too few rows to bother


def test_bfloat16_scores_compare_by_their_bits() -> None:
    """Every bfloat16 score at or above the floor passes the int16 comparison; none more than
    one bfloat16 step below it does."""
    import torch

    from image_search.duplicates.vectorjoin import _comparable

    scores = torch.linspace(-1.5, 1.5, 20_001).to(torch.bfloat16)
    for floor in (0.9, 0.88, 0.5, 0.0001, 0.98):
        look, bar = _comparable(torch.bfloat16, floor)
        passed = look(scores) >= bar
        values = scores.float()
        assert bool(passed[values >= floor].all()), floor
        assert not bool(passed[values < floor - 2**-7].any()), floor
    look, bar = _comparable(torch.bfloat16, -0.1)  # a floor at or below zero: compared as values
    assert bar == -0.1 and bool((look(scores) >= bar).eq(scores >= -0.1).all())


def test_both_gates_must_agree(tmp_path: Path) -> None:
    src = MATE / "nature" / "Storm.jpg"
    _need(src)
    same_print = _print(src)
    other_print = _print(MATE / "nature" / "Wood.jpg")
    e1, e2 = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    matrix = np.stack([e1, e2, e1, e1, e2])
    prints = [same_print, same_print, other_print, same_print, None]
    hashes = ["a", "b", "c", "d", "d"]
    groups = group(matrix, prints, hashes, Settings(similarity=0.9)).groups
    # 0 and 1: same fingerprint, unrelated vectors. 0 and 2: same vector, other picture.
    # 0 and 3: both agree. 3 and 4: the same file content (4 has no fingerprint yet).
    assert groups == [[0, 3, 4]]


def test_identical_copies_group_without_comparing_pairs() -> None:
    """4,000 copies of one photo made 7,998,000 candidate pairs (36 s, 1.29 GB): now identical
    files are one group from their content hash, and only one of them looks for near-duplicates.
    A near-duplicate of one copy joins the whole group."""
    src = MATE / "nature" / "Storm.jpg"
    _need(src)
    fingerprint = _print(src)
    vector = np.eye(4, dtype=np.float32)[0]
    n = 4000
    matrix = np.repeat(vector[None], n + 1, axis=0)
    grouping = group(matrix, [fingerprint] * (n + 1), ["same"] * n + ["resized"], Settings(similarity=0.9))
    assert grouping.groups == [list(range(n + 1))]
    assert grouping.candidates == 1 and grouping.compared == 2, "one copy and the resized one"


# -- the test set through the indexer and the web API -------------------------------------------


@pytest.fixture
async def review(
    tmp_path: Path, image_embedder: ImageEmbedder, text_embedder: TextEmbedder, tiny_model_dir: Path
) -> AsyncIterator[tuple[TestClient, Store, Path, list[set[str]], list[str]]]:
    root = tmp_path / "Pictures"
    groups, alone = build_set(root)
    async with Store("mem://") as store:
        summary = await index_folder(store, root, image_embedder, batch_size=16)
        assert not summary.failed
        app = create_app(app_config(tmp_path, tiny_model_dir), store=store, text_embedder=text_embedder)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client, store, root, groups, alone


def _digest(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def test_wallpaper_set_groups_exactly(review) -> None:  # type: ignore[no-untyped-def]
    client, _, root, expected, alone = review
    before = _digest(root)
    response = await client.get("/api/duplicates", params={"limit": 200})
    assert response.status == 200, await response.text()
    data = await response.json()
    found = [{item["full_path"] for item in g["items"]} for g in data["groups"]]
    assert sorted(map(sorted, found)) == sorted(map(sorted, expected))
    grouped = set().union(*found)
    assert not grouped & set(alone), "recoloured variants and flat pictures stay apart"
    assert data["without_fingerprint"] == 0 and data["total_groups"] == len(expected)
    for g in data["groups"]:  # the copy to keep has the most pixels
        pixels = [item["width"] * item["height"] for item in g["items"]]
        assert g["items"][0]["keep"] and pixels[0] == max(pixels)
        assert all(item["size"] > 0 and item["thumbnail"] for item in g["items"])

    export = await client.get("/api/duplicates/export")
    assert export.status == 200 and "attachment" in export.headers["Content-Disposition"]
    lines = (await export.text()).splitlines()
    keepers = {g["items"][0]["full_path"] for g in data["groups"]}
    assert set(lines) == grouped - keepers and len(lines) == data["smaller_copies"]
    assert _digest(root) == before, "image-search never changes, moves or deletes a photo"


async def test_duplicates_bad_input(review) -> None:  # type: ignore[no-untyped-def]
    client = review[0]
    for params in ({"similarity": "2"}, {"hash_bits": "x"}, {"limit": "0"}):
        response = await client.get("/api/duplicates", params=params)
        assert response.status == 400, params
    strict = await (
        await client.get("/api/duplicates", params={"hash_bits": "0", "similarity": "0.999"})
    ).json()
    loose = await (await client.get("/api/duplicates")).json()
    assert strict["smaller_copies"] < loose["smaller_copies"]


async def test_rows_from_before_fingerprints_get_them_without_the_model(
    tmp_path: Path, photo_dir: Path, image_embedder: ImageEmbedder
) -> None:
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        files = [FileRef(p, str(photo_dir)) for p in walk(str(photo_dir), Filter())]
        async with Indexer(store, image_embedder, workers=2) as indexer:
            await indexer.index(files)
            before = await store.first("SELECT id, embedding FROM image ORDER BY id")
            await store.query("UPDATE image SET fingerprint = NONE")  # as schema 1 left them
            summary = await indexer.index(files)
        assert summary.indexed == 0 and summary.reused == len(files) and summary.unchanged == 0
        after = await store.first("SELECT id, embedding, fingerprint FROM image ORDER BY id")
        assert [r["embedding"] for r in after] == [r["embedding"] for r in before]
        assert all(r["fingerprint"] and len(r["fingerprint"]) == fingerprint.SIZE for r in after)
        async with Indexer(store, image_embedder, workers=2) as indexer:
            assert (await indexer.index(files)).unchanged == len(files)
