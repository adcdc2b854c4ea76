"""Smart albums and the timeline: the real store, real files, HTTP through the app factory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder
from image_search.search import albums
from image_search.search.albums import Album, AlbumError, link_folder
from image_search.store import Store, image_key

from .conftest import until
from .test_web_api import client, search  # noqa: F401  (fixtures)


async def album(http: TestClient, album_id: str, **params: str) -> dict:
    response = await http.get(f"/api/albums/{album_id}", params=params)
    assert response.status == 200, await response.text()
    return await response.json()


# -- the store ------------------------------------------------------------------------------


async def test_albums_are_stored(store: Store) -> None:
    vector = np.ones(4, dtype=np.float32) / 2
    saved = await albums.save_album(
        store, Album(name="  Beach\tsunsets ", text="beach", liked=["a" * 32], vector=vector, model="m")
    )
    assert saved.name == "Beach sunsets" and len(saved.id) == 16
    assert np.array_equal(saved.vector, vector) and saved.created_at is not None
    with pytest.raises(AlbumError, match="already an album"):
        await albums.save_album(store, Album(name="Beach sunsets", vector=vector, model="m"))
    await albums.save_album(store, Album(name="Dogs", vector=vector, model="m"))
    renamed = await albums.rename_album(store, saved.id, "Sunsets")
    assert renamed.name == "Sunsets" and renamed.liked == ["a" * 32]
    with pytest.raises(AlbumError, match="already an album"):
        await albums.rename_album(store, saved.id, "Dogs")
    await albums.mark_seen(store, saved.id, ["f" * 32, None])
    again = await albums.find_album(store, "Sunsets")
    assert again.seen == {"f" * 16} and again.visited_at is not None
    assert [a.name for a in await albums.list_albums(store)] == ["Dogs", "Sunsets"]
    assert await albums.delete_album(store, saved.id)
    with pytest.raises(AlbumError, match="no album called"):
        await albums.find_album(store, "Sunsets")


async def test_albums_survive_a_restart(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'db'}"
    async with Store(url) as store:
        await albums.save_album(store, Album(name="Kept", vector=np.ones(3, np.float32), model="m"))
    async with Store(url) as store:
        assert [a.name for a in await albums.list_albums(store)] == ["Kept"]


def test_link_folder_makes_links_and_nothing_else(tmp_path: Path) -> None:
    photos = tmp_path / "Pictures"
    (photos / "a").mkdir(parents=True)
    (photos / "b").mkdir()
    one, two = photos / "a" / "x.jpg", photos / "b" / "x.jpg"
    one.write_bytes(b"1")
    two.write_bytes(b"2")
    out = tmp_path / "export" / "Album"
    assert link_folder(out, [str(one), str(two)], [str(photos)]) == 2
    assert sorted(os.listdir(out)) == ["x (2).jpg", "x.jpg"]
    assert os.readlink(out / "x.jpg") == str(one) and (out / "x (2).jpg").read_bytes() == b"2"
    assert one.read_bytes() == b"1" and two.read_bytes() == b"2"
    with pytest.raises(AlbumError, match="not empty"):
        link_folder(out, [str(one)])
    with pytest.raises(AlbumError, match="inside the picture folder"):
        link_folder(photos / "exported", [str(one)], [str(photos)])
    with pytest.raises(AlbumError, match="absolute"):
        link_folder(Path("relative"), [str(one)])
    assert not (photos / "exported").exists()


# -- the API --------------------------------------------------------------------------------


async def test_album_membership_follows_the_library(
    client: TestClient,  # noqa: F811
    library: tuple[Store, Path],
    image_embedder: ImageEmbedder,
) -> None:
    store, root = library
    summer = root / "2019" / "summer.jpg"
    anchor = image_key(str(summer))
    response = await client.post(
        "/api/albums", json={"name": "Summer", "liked": [anchor], "min_score": 0.999, "text": ""}
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["count"] >= 1 and created["new"] == 0 and created["liked"][0]["id"] == anchor
    first = await album(client, created["id"])
    assert anchor in [r["id"] for r in first["results"]] and not any(r["new"] for r in first["results"])

    # A smaller copy arrives later: it joins by itself, marked new, listed first.
    copy = root / "later" / "summer-small.jpg"
    copy.parent.mkdir()
    with Image.open(summer) as image:
        image.resize((160, 120)).save(copy, quality=80)
    async with Indexer(store, image_embedder, workers=1) as indexer:
        await indexer.index([FileRef(str(copy), str(root))])

    async def grown():  # type: ignore[no-untyped-def]
        data = await album(client, created["id"])
        return data if data["count"] == created["count"] + 1 else None

    now = await grown() or await until(grown)
    assert now["new"] == 1 and now["results"][0]["id"] == image_key(str(copy)) and now["results"][0]["new"]
    status = await (await client.get("/api/status")).json()
    assert status["albums"] == {"count": 1, "new": 1}
    listed = (await (await client.get("/api/albums")).json())["albums"]
    assert [(a["name"], a["count"], a["new"]) for a in listed] == [("Summer", now["count"], 1)]

    # Seen once, it is not new at the next visit; moving a member does not make it new.
    seen = await client.post(f"/api/albums/{created['id']}/seen", json={"ids": [image_key(str(copy))]})
    assert seen.status == 200
    moved = root / "later" / "renamed.jpg"
    os.rename(copy, moved)
    await store.move([(str(copy), str(moved), str(root))])

    async def settled():  # type: ignore[no-untyped-def]
        data = await album(client, created["id"])
        return data if image_key(str(moved)) in [r["id"] for r in data["results"]] else None

    after = await until(settled)
    assert after["new"] == 0 and after["count"] == now["count"]
    status = await (await client.get("/api/status")).json()
    assert status["albums"] == {"count": 1, "new": 0}


async def test_album_edit_rename_delete(client: TestClient, library: tuple[Store, Path]) -> None:  # noqa: F811
    top = (await search(client, text="photo", limit=6))["results"]
    body = {
        "name": "Photos",
        "text": "photo",
        "liked": [top[0]["id"]],
        "rejected": [top[1]["id"]],
        "min_score": -1,
    }
    created = await (await client.post("/api/albums", json=body)).json()
    members = await album(client, created["id"], limit="500")
    ids = [r["id"] for r in members["results"]]
    assert top[1]["id"] not in ids, "a rejected photo is never a member"
    searchable = (await (await client.get("/api/status")).json())["searchable"]
    assert members["count"] == len(ids) == searchable - 1, "min_score -1: all but the rejected one"
    assert created["weights"] == {} and created["text"] == "photo"

    conflict = await client.post("/api/albums", json={**body, "min_score": 0.5})
    assert conflict.status == 409 and "already an album" in (await conflict.json())["error"]
    renamed = await client.patch(f"/api/albums/{created['id']}", json={"name": "All photos"})
    assert renamed.status == 200 and (await renamed.json())["name"] == "All photos"

    # Editing reopens the session and saves it again: a higher minimum score, fewer members.
    edit = {"text": "photo", "min_score": top[3]["score"]}
    updated = await client.put(f"/api/albums/{created['id']}", json=edit)
    assert updated.status == 200, await updated.text()
    assert 3 <= (await updated.json())["count"] <= 4  # scores in results are rounded
    assert (await album(client, created["id"]))["rejected"] == []
    assert (await album(client, created["id"]))["name"] == "All photos"

    assert (await client.delete(f"/api/albums/{created['id']}")).status == 204
    assert (await client.get(f"/api/albums/{created['id']}")).status == 404
    assert (await client.delete(f"/api/albums/{created['id']}")).status == 404


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"text": "x"}, 400, "needs a name"),
        ({"name": " ", "text": "x"}, 400, "needs a name"),
        ({"name": "x" * 201, "text": "x"}, 400, "at most 200"),
        ({"name": "A"}, 400, "nothing to search for"),
        ({"name": "A", "text": "x", "min_score": 3}, 400, "min_score"),
        ({"name": "A", "text": "x", "weights": {"text": "a lot"}}, 400, "weights"),
        ({"name": "A", "liked": ["0123456789abcdef0123456789abcdef"]}, 404, "unknown image id"),
    ],
)
async def test_bad_album_input(client: TestClient, body: dict, status: int, message: str) -> None:  # noqa: F811
    response = await client.post("/api/albums", json=body)
    assert response.status == status
    assert message in (await response.json())["error"]


async def test_unknown_albums(client: TestClient) -> None:  # noqa: F811
    for path in ("/api/albums/0123456789abcdef", "/api/albums/nope", "/api/albums/0123456789abcdef/export"):
        assert (await client.get(path)).status == 404


async def test_album_export(client: TestClient, library: tuple[Store, Path], tmp_path: Path) -> None:  # noqa: F811
    created = await (
        await client.post("/api/albums", json={"name": "Dated: 2019/2021", "text": "photo", "min_score": -1})
    ).json()
    members = await album(client, created["id"], limit="500")
    paths = sorted(str(library[1] / r["path"]) for r in members["results"])
    response = await client.get(f"/api/albums/{created['id']}/export")
    assert response.status == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="Dated_ 2019_2021.txt"'
    assert sorted((await response.text()).splitlines()) == paths
    nul = await (await client.get(f"/api/albums/{created['id']}/export", params={"sep": "nul"})).read()
    assert sorted(nul.decode().split("\0")[:-1]) == paths

    target = tmp_path / "exports" / "dated"  # the export folder of app_config()
    made = await client.post(f"/api/albums/{created['id']}/export", json={"folder": "dated"})
    assert made.status == 200, await made.text()
    assert (await made.json()) == {"folder": str(target), "links": len(paths)}
    assert sorted(os.path.realpath(target / name) for name in os.listdir(target)) == sorted(
        os.path.realpath(p) for p in paths
    )
    again = await client.post(f"/api/albums/{created['id']}/export", json={"folder": str(target)})
    assert again.status == 400 and "not empty" in (await again.json())["error"]


async def test_album_export_stays_in_its_folder(client: TestClient, tmp_path: Path) -> None:  # noqa: F811
    """A request may not make folders elsewhere (~/.config/autostart worked), nor follow a
    symbolic link out of the export folder."""
    created = await (
        await client.post("/api/albums", json={"name": "Out", "text": "photo", "min_score": -1})
    ).json()
    url = f"/api/albums/{created['id']}/export"
    autostart = tmp_path / "home" / ".config" / "autostart"
    for folder in (str(autostart), "../autostart", "a/../../b", ""):
        response = await client.post(url, json={"folder": folder})
        assert response.status == 400, folder
    assert not autostart.exists() and not (tmp_path / "autostart").exists() and not (tmp_path / "b").exists()
    (tmp_path / "exports").mkdir(exist_ok=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "exports" / "door").symlink_to(tmp_path / "elsewhere")
    response = await client.post(url, json={"folder": "door/inside"})
    assert response.status == 400 and "cannot create" in (await response.json())["error"]
    assert not any((tmp_path / "elsewhere").iterdir())


async def test_timeline_groups_by_month(client: TestClient) -> None:  # noqa: F811
    page = await search(client, text="photo", timeline=True, min_score=-1, limit=500)
    months = [m["month"] for m in page["months"]]
    assert months[-1] is None, "photos without a date taken come last, as one Undated group"
    months = months[:-1]
    assert months == sorted(months, reverse=True) and "2021-01" in months and "2019-07" in months
    assert months.index("2021-01") < months.index("2019-07")
    july = page["months"][months.index("2019-07")]
    assert [r["path"] for r in july["results"]] == ["2019/summer.jpg"] and july["count"] == 1
    assert sum(m["count"] for m in page["months"]) == page["total"] == sum(y["count"] for y in page["years"])
    years = [y["year"] for y in page["years"]]
    assert years[-1] == "undated" and years[:-1] == sorted(years[:-1], reverse=True)
    assert {"2019", "2021"} <= set(years)
    for month in page["months"][:-1]:
        stamps = [r["taken_at"] for r in month["results"]]
        assert stamps == sorted(stamps, reverse=True) and all(s.startswith(month["month"]) for s in stamps)

    everything = [r for m in page["months"] for r in m["results"]]
    floor = sorted(r["score"] for r in everything)[len(everything) // 2]
    strict = await search(client, text="photo", timeline=True, min_score=floor, limit=500)
    kept = [r for m in strict["months"] for r in m["results"]]
    assert kept and all(r["score"] >= floor for r in kept) and len(kept) < len(everything)
    small = await search(client, text="photo", timeline=True, min_score=-1, limit=2)
    assert small["total"] == 2 and small["truncated"]
    # No minimum given: the model's own "fair match", as /api/status gives the page its words.
    bands = (await (await client.get("/api/status")).json())["match_bands"]
    fair = await search(client, text="photo", timeline=True, limit=500)
    assert fair["min_score"] == bands[0] and bands == sorted(bands)
    shown = [r["score"] for m in fair["months"] for r in m["results"]]
    assert all(s >= bands[0] for s in shown) and len(shown) == sum(
        s >= bands[0] for s in sorted(r["score"] for r in everything)
    )
