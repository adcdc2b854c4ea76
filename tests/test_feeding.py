"""How the indexer feeds its devices: the nvJPEG share, adding devices, where the time goes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from image_search.indexing.feeding import Devices, Share, Stages, start_share
from image_search.indexing.indexer import FileRef, Indexer
from image_search.models.model import ImageEmbedder, ModelSource
from image_search.pictures.imaging import prepare
from image_search.store import Store, from_bytes, image_key

from .conftest import make_photo


def test_the_share_alternates_files_evenly_and_moves_towards_the_idle_side() -> None:
    share = Share(0.75)
    assert [share.take() for _ in range(8)] == [False, True, True, True, False, True, True, True]
    share.waited("decoders", 0.5)  # the CPU decoders were behind: nvJPEG takes more
    share.waited("device", 0.1)
    share.balance()
    assert 0.75 < share.value < 0.95
    before = share.value
    share.waited("decoders", 1.0)  # nearly even: a small step
    share.waited("device", 0.9)
    share.balance()
    assert before < share.value < before + 0.02
    values = []
    for _ in range(20):  # the device was behind: less each time, never below the floor
        share.waited("device", 1.0)
        share.balance()
        values.append(share.value)
    assert values == sorted(values, reverse=True) and values[-1] == Share.LOW
    share.balance()  # nothing waited: nothing moves
    assert share.value == Share.LOW
    off = Share(0.0)
    off.waited("decoders", 5.0)
    off.balance()
    assert not off and not any(off.take() for _ in range(5))
    assert start_share(16) == 0.65 and start_share(32) == 0.48 and 0 < start_share(1) < 1


async def test_a_second_device_is_added_only_while_batches_wait_for_one() -> None:
    first, second = SimpleNamespace(device="cuda:0"), SimpleNamespace(device="cuda:1")
    added: list[object] = []
    devices = Devices([first, second], on_add=added.append)
    devices.WINDOW = 0.2
    assert devices.used == [first]
    for _ in range(5):  # never waited: one device is enough
        devices.give(await devices.take())
        await asyncio.sleep(0.06)
    assert devices.used == [first] and not added
    held = await devices.take()
    asyncio.get_running_loop().call_later(0.3, devices.give, held)
    assert await devices.take() is first  # waited 0.3 s of the last 0.3 s
    assert devices.used == [first, second] and added == [second]
    assert await devices.take() is second
    fixed = Devices([first, second], use=2)
    assert fixed.used == [first, second]
    assert [await fixed.take(), await fixed.take()] == [first, second]


def test_stages_add_up_across_threads() -> None:
    stages = Stages()
    with stages.time("model cpu"):
        pass
    stages.add("writing rows", 0.25)
    stages.add("writing rows", 0.25)
    assert stages.as_dict()["writing rows"] == 0.5
    assert set(stages.as_dict()) == {"model cpu", "writing rows"}


async def test_two_devices_each_embed_their_batches_and_the_summary_says_where_time_went(
    tmp_path: Path, tiny_source: ModelSource, image_embedder: ImageEmbedder
) -> None:
    """Two embedders (both on the CPU here; one per GPU on a GPU host) with ``gpus=2``: each takes
    batches, every file gets its own embedding, and the summary has the stages' seconds."""
    embedders = [ImageEmbedder(tiny_source, "cpu", "float32").load() for _ in range(2)]
    used: dict[int, int] = {}
    for n, embedder in enumerate(embedders):
        forward = embedder.embed_pixels

        def counted(pixels, forward=forward, n=n):  # type: ignore[no-untyped-def]
            used[n] = used.get(n, 0) + len(pixels)
            return forward(pixels)

        embedder.embed_pixels = counted  # type: ignore[method-assign]
    root = tmp_path / "p"
    files = [
        FileRef(str(make_photo(root / f"{i:03d}.jpg", (320, 240), seed=i)), str(root)) for i in range(96)
    ]
    async with Store("mem://") as store:
        async with Indexer(store, embedders, workers=2, batch_size=8, gpus=2) as indexer:
            await indexer.warm()
            summary = await indexer.index(files)
        assert summary.indexed == len(files) and not summary.failed
        assert set(used) == {0, 1} and sum(used.values()) == len(files), used
        for ref in files[::12]:
            row = await store.get_one(image_key(ref.path), embedding=True)
            want = image_embedder.embed_pixels(prepare(ref.path, image_embedder.crop, 100.0).pixels[None])[0]  # type: ignore[index]
            assert float(from_bytes(row["embedding"]).astype(float) @ want) >= 0.999, ref.path
    stages = summary.as_dict()["stages"]
    assert stages["model cpu"] > 0 and stages["writing rows"] > 0
    assert "waiting for the decoders" in stages and "waiting for a device" in stages
