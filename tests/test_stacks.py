"""RAW + JPEG pairs of one shot (#17, item 5): both files indexed, the shot shown once in
searches, timelines, albums and the command line, the RAW named as its pair; the RAW shows again
when its JPEG goes; never offered as a duplicate to delete."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from image_search.duplicates.grouping import Settings, group_library
from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.search.library import Library
from image_search.search.stacks import Stacks
from image_search.store import Store, image_key
from image_search.webui import create_app

from .conftest import app_config, make_photo, until
from .dng import write_dng


@dataclass(frozen=True)
class Fact:
    path: str
    format: str | None


def test_which_files_stack() -> None:
    meta = {
        "nef": Fact("/p/2024/DSC_0001.NEF", "NEF"),
        "jpg": Fact("/p/2024/dsc_0001.jpg", "JPEG"),  # the stem's case does not matter
        "heic": Fact("/p/2024/DSC_0001.HEIC", "HEIF"),  # the JPEG is shown before it
        "other": Fact("/p/2023/DSC_0001.JPG", "JPEG"),  # another folder: another shot
        "alone": Fact("/p/2024/DSC_0002.NEF", "NEF"),  # no JPEG: shown itself
        "two-a": Fact("/p/2024/x.png", "PNG"),  # no RAW: nothing stacks
        "two-b": Fact("/p/2024/x.jpg", "JPEG"),
    }
    stacks = Stacks()
    stacks.rebuild(meta)
    assert stacks.hidden == {"nef"} and stacks.pairs == {"jpg": ["nef"]}
    del meta["jpg"]  # the JPEG is deleted: the HEIC stands for the shot
    stacks.changed(meta, ["jpg"])
    assert stacks.hidden == {"nef"} and stacks.pairs == {"heic": ["nef"]}
    meta["heic"] = Fact("/p/elsewhere/DSC_0001.HEIC", "HEIF")  # moved away: the RAW is alone
    stacks.changed(meta, ["heic"])
    assert stacks.hidden == set() and stacks.pairs == {}
    meta["alone-jpg"] = Fact("/p/2024/DSC_0002.jpg", "JPEG")
    stacks.changed(meta, ["alone-jpg"])
    assert stacks.hidden == {"alone"} and stacks.pairs == {"alone-jpg": ["alone"]}


@pytest.fixture
async def shots(
    tmp_path: Path, image_embedder: ImageEmbedder, text_embedder: TextEmbedder, tiny_model_dir: Path
) -> AsyncIterator[tuple[TestClient, Store, dict[str, Path]]]:
    root = tmp_path / "Pictures"
    (root / "2024").mkdir(parents=True)
    jpeg = make_photo(root / "2024" / "DSC_0001.JPG", (900, 600), seed=11)
    with Image.open(jpeg) as picture:
        nef_like = write_dng(root / "2024" / "DSC_0001.dng", picture)  # the same shot, as RAW
    with Image.open(make_photo(tmp_path / "s.png", (600, 400), seed=3)) as picture:
        lone = write_dng(root / "2024" / "DSC_0002.dng", picture)
    others = [make_photo(root / f"other{i}.jpg", (640, 480), seed=20 + i) for i in range(3)]
    files = {"jpeg": jpeg, "raw": nef_like, "lone": lone}
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        async with Indexer(store, image_embedder, workers=2, batch_size=8) as indexer:
            summary = await indexer.index(
                [FileRef(str(p), str(root)) for p in [jpeg, nef_like, lone, *others]]
            )
        assert summary.indexed == 6  # both files of the pair are indexed
        config = app_config(tmp_path, tiny_model_dir)
        app = create_app(config, store=store, text_embedder=text_embedder, follow_interval=0.2)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client, store, files


async def search(client: TestClient, **body: object) -> list[dict]:
    response = await client.post("/api/search", json={"text": "a photo", "limit": 50, **body})
    assert response.status == 200, await response.text()
    return (await response.json())["results"]


async def test_a_pair_shows_once_with_its_raw_named(shots) -> None:  # type: ignore[no-untyped-def]
    client, store, files = shots
    results = await search(client)
    paths = [r["path"] for r in results]
    assert len(paths) == 5 and "2024/DSC_0001.dng" not in paths and "2024/DSC_0002.dng" in paths
    shot = next(r for r in results if r["path"] == "2024/DSC_0001.JPG")
    assert [(p["path"], p["format"]) for p in shot["pair"]] == [("2024/DSC_0001.dng", "DNG")]
    raw_id = image_key(str(files["raw"]))
    assert shot["pair"][0]["id"] == raw_id and "original=1" in shot["pair"][0]["original"]
    original = await client.get(shot["pair"][0]["original"])
    assert original.status == 200 and await original.read() == files["raw"].read_bytes()
    assert all(r["pair"] == [] for r in results if r is not shot)
    meta = await (await client.get(f"/api/images/{shot['id']}/meta")).json()
    assert [p["id"] for p in meta["pair"]] == [raw_id]
    timeline = await client.post("/api/search", json={"text": "a photo", "timeline": True, "min_score": -1})
    assert timeline.status == 200, await timeline.text()
    listed = [r for m in (await timeline.json())["months"] for r in m["results"]]
    assert len(listed) == 5 and "2024/DSC_0001.dng" not in [r["path"] for r in listed]
    assert [p["id"] for r in listed for p in r["pair"]] == [raw_id]
    # Asked for RAW files, the search returns the RAW of the pair too.
    raws = await search(client, filters={"formats": ["dng"]})
    assert sorted(r["path"] for r in raws) == ["2024/DSC_0001.dng", "2024/DSC_0002.dng"]
    # The JPEG is deleted: the RAW shows on its own again; nothing was lost.
    os.unlink(files["jpeg"])
    await store.delete([image_key(str(files["jpeg"]))])
    await until(lambda: _has(client, "2024/DSC_0001.dng"), what="the RAW shows again")


async def _has(client: TestClient, path: str) -> bool:
    return path in [r["path"] for r in await search(client)]


async def test_a_pair_is_not_a_duplicate(
    tmp_path: Path, image_embedder: ImageEmbedder, real_photos: list[Path]
) -> None:
    """The RAW of a pair is the same picture as its JPEG (here its full-size preview is); grouping
    leaves it out, and finds the JPEG's real copy. A real photo: noise has no stable hash."""
    root = tmp_path / "p"
    root.mkdir()
    jpeg = root / "IMG_1.jpg"
    with Image.open(next(p for p in real_photos if p.suffix.lower() == ".jpg")) as photo:
        photo.convert("RGB").resize((900, 600)).save(jpeg, quality=92)
    with Image.open(jpeg) as picture:
        raw = write_dng(root / "IMG_1.dng", picture, preview=picture)  # a full-size preview, as Canon's
        picture.save(root / "copy of IMG_1.jpg", quality=80)
    async with Store("mem://") as store:
        await store.check_model(image_embedder.source.model_id)
        async with Indexer(store, image_embedder, workers=2, batch_size=8) as indexer:
            await indexer.index([FileRef(str(p), str(root)) for p in sorted(root.iterdir())])
        library = await Library.open(store, image_embedder.source.model_id)
    assert library.stacks.hidden == {image_key(str(raw))}
    groups = group_library(library, Settings()).groups
    named = [sorted(Path(library.meta[k].path).name for k in g) for g in groups]
    assert named == [["IMG_1.jpg", "copy of IMG_1.jpg"]]


def test_a_library_without_raw_files_stacks_its_first_raw() -> None:
    """Without a RAW file nothing is grouped at load; the first RAW groups the library then."""
    from image_search.search.facts import Meta
    from image_search.search.stacks import Stacks

    def meta(path: str, fmt: str) -> Meta:
        return Meta(path, "/p", float("nan"), 10, 10, fmt, path)

    library = {f"k{i}": meta(f"/p/a/IMG_{i}.jpg", "JPEG") for i in range(5)}
    stacks = Stacks()
    stacks.rebuild(library)
    assert not stacks.hidden and not stacks.pairs
    library["k5"] = meta("/p/a/IMG_5.png", "PNG")
    stacks.changed(library, ["k5"])
    assert not stacks.hidden and not stacks.pairs
    library["raw"] = meta("/p/a/img_3.DNG", "DNG")
    stacks.changed(library, ["raw"])
    assert stacks.hidden == {"raw"} and stacks.pairs == {"k3": ["raw"]}
    del library["k3"]
    stacks.changed(library, ["k3"])
    assert not stacks.hidden and not stacks.pairs
