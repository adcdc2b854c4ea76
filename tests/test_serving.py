"""A served original, thumbnail or rendition is the very file that was indexed: opened once,
beneath its folder, links refused unless the configuration follows them, compared with what was
indexed (device, inode, size, time) and read from that descriptor (image_search.pictures.opening)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from image_search.models.model import ImageEmbedder, TextEmbedder
from image_search.pictures import opening
from image_search.pictures.opening import Indexed, NotServable, open_indexed
from image_search.store import Store, image_key
from image_search.webui import create_app

from .conftest import app_config, index_folder, make_photo


def indexed(path: Path, root: Path) -> Indexed:
    st = path.stat()
    return Indexed(str(path), str(root), st.st_size, st.st_mtime_ns, st.st_dev, opening.signed64(st.st_ino))


@pytest.fixture(params=["openat2", "openat"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of opening beneath a folder: the kernel's openat2, and one O_NOFOLLOW openat per
    component where the kernel lacks it."""
    monkeypatch.setattr(opening, "_openat2_works", None if request.param == "openat2" else False)
    return str(request.param)


def test_links_anywhere_below_the_root_are_refused(tmp_path: Path, way: str) -> None:
    root = tmp_path / "Pictures"
    photo = make_photo(root / "2020" / "a.jpg", seed=1)
    facts = indexed(photo, root)
    fd, st = open_indexed(facts)
    try:
        assert os.pread(fd, 3, 0) == photo.read_bytes()[:3] and st.st_size == photo.stat().st_size
    finally:
        os.close(fd)
    if way == "openat2":
        assert opening._openat2_works, "this kernel has openat2 (Linux 5.6): the test runs it"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "2020").rename(outside / "2020")
    (root / "2020").symlink_to(outside / "2020")  # a folder on the way is a link
    with pytest.raises(NotServable, match="symbolic link"):
        open_indexed(facts)
    (root / "2020").unlink()
    (outside / "2020").rename(root / "2020")
    secret = tmp_path / "secret.jpg"
    os.link(photo, secret)
    photo.unlink()
    photo.symlink_to(secret)  # the file itself is a link, even to the very inode indexed
    with pytest.raises(NotServable, match="symbolic link"):
        open_indexed(facts)
    with pytest.raises(NotServable, match="outside"):
        open_indexed(Indexed(str(root / ".." / "secret.jpg"), str(root), 1, 1))


def test_a_fifo_or_a_changed_file_is_refused_without_blocking(tmp_path: Path, way: str) -> None:
    root = tmp_path / "Pictures"
    photo = make_photo(root / "a.jpg", seed=2)
    facts = indexed(photo, root)
    os.link(photo, tmp_path / "kept.jpg")  # its inode stays taken: the next file gets another
    photo.unlink()
    os.mkfifo(photo)  # opening a FIFO for reading blocks until a writer comes, without O_NONBLOCK
    with pytest.raises(NotServable, match="not a photo"):
        open_indexed(facts)
    photo.unlink()
    make_photo(photo, seed=3)  # another file by the same name: another inode
    with pytest.raises(NotServable, match="replaced"):
        open_indexed(facts)
    with pytest.raises(NotServable, match="changed"):
        open_indexed(Indexed(str(photo), str(root), 1, 1))  # a row from before schema 5
    photo.unlink()
    with pytest.raises(NotServable, match="gone"):
        open_indexed(facts)


async def test_a_swap_loop_serves_no_foreign_byte(
    tmp_path: Path, image_embedder: ImageEmbedder, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:
    """While another account swaps an indexed photo for a link to a file outside the picture
    folders and back as fast as it can, 4,000 requests for it get the photo's bytes or 404:
    never the outside file, never a 500."""
    root = tmp_path / "Pictures"
    photo = make_photo(root / "a.jpg", (96, 64), seed=4)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"SECRET" * 4000)
    keep = tmp_path / "keep.jpg"
    os.link(photo, keep)  # the indexed inode, to swap back in
    wanted = photo.read_bytes()
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        link, back = root / ".link", root / ".back"
        while not stop.is_set():
            link.unlink(missing_ok=True)
            link.symlink_to(secret)
            os.replace(link, photo)
            back.unlink(missing_ok=True)
            os.link(keep, back)
            os.replace(back, photo)
            swaps += 1

    async with Store("mem://") as store:
        await index_folder(store, root, image_embedder)
        app = create_app(app_config(tmp_path, tiny_model_dir), store=store, text_embedder=text_embedder)
        key = image_key(str(photo))
        urls = [f"/api/images/{key}?original=1", f"/api/images/{key}", f"/api/images/{key}/thumbnail"]
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            thumbnail = await (await c.get(urls[2])).read()
            thread = threading.Thread(target=swapper, daemon=True)
            thread.start()
            try:
                statuses: dict[int, int] = {}
                for n in range(0, 4000, 20):
                    answers = await asyncio.gather(*(c.get(urls[(n + i) % 3]) for i in range(20)))
                    for i, answer in enumerate(answers):
                        body = await answer.read()
                        statuses[answer.status] = statuses.get(answer.status, 0) + 1
                        assert b"SECRET" not in body
                        if answer.status == 200:
                            assert body == (thumbnail if (n + i) % 3 == 2 else wanted)
            finally:
                stop.set()
                thread.join()
    assert set(statuses) <= {200, 404} and sum(statuses.values()) == 4000, statuses
    assert swaps > 100 and statuses.get(404, 0) > 0 and statuses.get(200, 0) > 0, (swaps, statuses)


async def test_a_decoy_indexed_then_repointed_serves_nothing(
    tmp_path: Path, image_embedder: ImageEmbedder, tiny_model_dir: Path, text_embedder: TextEmbedder
) -> None:
    """With follow_symlinks on, another account links a decoy into a watched folder, lets it be
    indexed, then points the link at a private file given the decoy's size and time: refused. A
    link to the very file indexed (moved away, the same inode) is still served."""
    root = tmp_path / "Pictures"
    root.mkdir()
    decoy = make_photo(tmp_path / "theirs" / "decoy.jpg", seed=5)
    (root / "shared.jpg").symlink_to(decoy)
    async with Store("mem://") as store:
        await index_folder(store, root, image_embedder, follow_symlinks=True)
        config = app_config(tmp_path, tiny_model_dir, follow_symlinks=True)
        app = create_app(config, store=store, text_embedder=text_embedder)
        url = f"/api/images/{image_key(str(root / 'shared.jpg'))}"
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            assert (await c.get(url)).status == 200
            moved = decoy.rename(tmp_path / "theirs" / "moved.jpg")
            (root / "shared.jpg").unlink()
            (root / "shared.jpg").symlink_to(moved)
            assert (await c.get(url)).status == 200  # the very inode that was indexed
            private = tmp_path / "private.jpg"
            private.write_bytes(b"PRIVATE".ljust(moved.stat().st_size, b"\0"))
            os.utime(private, ns=(moved.stat().st_atime_ns, moved.stat().st_mtime_ns))
            (root / "shared.jpg").unlink()
            (root / "shared.jpg").symlink_to(private)
            for suffix in ("", "?original=1", "/thumbnail"):
                answer = await c.get(url + suffix)
                assert answer.status == 404 and b"PRIVATE" not in await answer.read()
            assert "replaced" in (await (await c.get(url)).json())["error"]
