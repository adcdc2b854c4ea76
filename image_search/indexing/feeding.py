"""How the indexer keeps its devices fed, and where its time goes.

* :class:`Stages` adds up the seconds each stage spends (waiting for the decoders, waiting for a
  device, reading JPEGs, nvJPEG, the forward pass, writing) for ``index --json`` and the log.
* :class:`Share` is the part of the JPEGs that nvJPEG decodes. No fixed number suits every host
  (16 cores fed best at 0.75, 32 cores want less), so it is balanced while indexing: when the
  indexer waits on the CPU decoders, nvJPEG takes more; when it waits for a device, less.
* :class:`Devices` hands out the model's devices. It starts with one and adds the next only
  when batches keep waiting for a device: a second GPU is worth its model thread only when the
  decoders can feed more than one (ViT-L/14 runs ~2,400 img/s on an H200; the decoders of a
  32-core host ~800).

nvJPEG itself runs on one device only (:func:`decode_device`): torchvision keeps one decoder per
process, for one device, behind one lock, and builds it anew whenever a call names another device.
Two GPUs decoding in turn rebuilt it every batch, which is why a second GPU halved the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)


class Stages:
    """Seconds spent per stage, added up across threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {name: round(s, 2) for name, s in sorted(self.seconds.items())}


class Share:
    """Which files nvJPEG decodes: a running credit of ``value`` per file, so that files alternate
    evenly, and ``value`` moved after each batch towards the side that waited less, by as much as
    the waits differ (so it settles within a few batches, then stays put)."""

    GAIN = 0.25
    LOW, HIGH = 0.05, 0.95

    def __init__(self, value: float) -> None:
        self.value = value
        self._credit = 0.0
        self._waited = {"decoders": 0.0, "device": 0.0}

    def __bool__(self) -> bool:
        return self.value > 0

    def take(self) -> bool:
        """Whether the next file is nvJPEG's."""
        if not self.value:
            return False
        self._credit += self.value
        mine = self._credit >= 1.0
        self._credit -= 1.0 if mine else 0.0
        return mine

    def waited(self, side: str, seconds: float) -> None:
        self._waited[side] += seconds

    def balance(self) -> None:
        """After a batch: the side the indexer waited on longer gets less work."""
        decoders, device = self._waited["decoders"], self._waited["device"]
        self._waited = {"decoders": 0.0, "device": 0.0}
        if self.value and decoders + device > 0.01:
            step = self.GAIN * (decoders - device) / (decoders + device)
            self.value = round(min(self.HIGH, max(self.LOW, self.value + step)), 3)


def start_share(cores: int) -> float:
    """Where the share starts: nvJPEG's ~300 12 MP photos/s beside ~10/s per CPU core (an H200
    host's figures), so 0.65 with 16 cores, 0.48 with 32."""
    return round(300 / (300 + 10 * max(1, cores)), 2)


class Devices:
    """The model's devices, one batch at a time each. ``use`` of them (0: start with one and add
    the next when batches waited for a device more than a fifth of the last two seconds)."""

    BUSY = 0.2
    WINDOW = 2.0

    def __init__(self, embedders: Sequence[Any], use: int = 0, on_add: Any = None) -> None:
        self.all = list(embedders)
        self.auto = not use
        self.active = min(len(self.all), use or 1)
        self.on_add = on_add  # called with each device added while indexing
        self._free: asyncio.Queue[Any] = asyncio.Queue()
        for embedder in self.all[: self.active]:
            self._free.put_nowait(embedder)
        self._since = time.monotonic()
        self._waited = 0.0

    async def take(self) -> Any:
        if not self._free.empty() or not self.auto or self.active == len(self.all):
            return await self._free.get()
        start = time.monotonic()
        embedder = await self._free.get()
        now = time.monotonic()
        self._waited += now - start
        if now - self._since >= self.WINDOW:
            if self._waited > self.BUSY * (now - self._since):
                self._add()
            self._since, self._waited = now, 0.0
        return embedder

    def give(self, embedder: Any) -> None:
        self._free.put_nowait(embedder)

    def _add(self) -> None:
        embedder = self.all[self.active]
        self.active += 1
        self._free.put_nowait(embedder)
        if self.on_add is not None:
            self.on_add(embedder)

    @property
    def used(self) -> list[Any]:
        return self.all[: self.active]


def decode_device(embedders: Sequence[Any]) -> Any:
    """The one device nvJPEG decodes on (see the module's note): the first embedder's."""
    return embedders[0].device


class InFlight:
    """Batches being embedded and written: two per device, so one reads its JPEGs and writes its
    rows while the other has the device. A batch's rows are written whole."""

    def __init__(self, indexer: Any, summary: Any, progress: Any) -> None:
        self.indexer = indexer
        self.summary = summary
        self.progress = progress
        self.tasks: set[asyncio.Task[None]] = set()
        assert indexer.devices is not None
        self.slots = asyncio.Semaphore(2 * indexer.devices.active)
        indexer.devices.on_add = self._device_added

    def _device_added(self, embedder: Any) -> None:
        log.info("the decoders keep more than one device busy: %s takes batches too", embedder.device)
        self.slots.release()
        self.slots.release()

    async def start(self, batch: list[Any]) -> None:
        await self.slots.acquire()
        task = asyncio.create_task(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        for done in [t for t in self.tasks if t.done()]:
            done.result()  # a failed batch stops the run

    async def _run(self, batch: list[Any]) -> None:
        try:
            await self.indexer.commit(batch, self.summary)
        finally:
            self.slots.release()
        self.progress.done += len(batch)
        if self.indexer.on_progress:
            self.indexer.on_progress(self.progress)

    async def finish(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
