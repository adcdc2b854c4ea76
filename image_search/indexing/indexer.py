"""Files on disk → committed rows: plan, decode in a process pool, embed in batches, write.

* Decoding runs in worker processes with a bounded lookahead of futures, so the model never
  waits for the CPU while the CPU can keep up, and memory stays bounded.
* Every result travels with its own path from the worker to the row: a failed file becomes
  a row with its reason and can never shift another file's embedding.
* A file whose content hash already has an embedding of this model (a copy, a move seen as
  delete + create, a touched file) reuses it without running the model.
* Each batch is one transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import DeviceFailed
from ..models.model import ImageEmbedder, default_batch_size
from ..pictures.imaging import Prepared, configure_pillow, prepare
from ..pictures.thumbs import Thumbnails
from ..store import Store, from_bytes, now, to_bytes
from .feeding import Devices, InFlight, Share, Stages, decode_device, start_share
from .gpudecode import Decoded, decode_batch, embed_mixed, warm_nvjpeg
from .gpudecode import available as gpu_decode_available
from .plan import FileRef, Progress, Summary, plan_files, row_of
from .seam import LibraryListener
from .workers import read_file, save_gpu_thumbnail, worker_ping, worker_start

log = logging.getLogger(__name__)

__all__ = ["FileRef", "Indexer", "Progress", "Summary"]

# The first batches are small, so the first rows land and every stage is busy within a second or
# two of the start (a whole first batch of 256 12 MP photos took 8 s): 32, 64, 128, then full.
FIRST_BATCH = 32


class Indexer:
    """Owns the decoding pool and the model thread; use as an async context manager."""

    def __init__(
        self,
        store: Store,
        embedder: ImageEmbedder | Sequence[ImageEmbedder],
        *,
        workers: int = 0,
        batch_size: int = 0,
        max_megapixels: float = 100.0,
        draft: bool = True,
        gpu_decode: str = "auto",
        on_progress: Callable[[Progress], None] | None = None,
        thumbnails: Thumbnails | None = None,
        gpus: int = 0,
    ) -> None:
        self.store = store
        self.thumbnails = thumbnails  # made by the decoding workers, from what they decode anyway
        # One embedder per device; batches run on them concurrently, one model thread each.
        self.embedders = [embedder] if isinstance(embedder, ImageEmbedder) else list(embedder)
        self.embedder = self.embedders[0]
        self.workers = workers or os.cpu_count() or 1
        self.batch_size = batch_size or default_batch_size(self.embedder.device)
        self.max_megapixels = max_megapixels
        self.draft = draft
        self.on_progress = on_progress
        self.model_id = self.embedder.source.model_id
        self.gpus = gpus  # devices running the model: 0 = as many as the decoders keep busy
        self.share = Share(0.0)
        if gpu_decode != "off" and self.embedder.crop.max_patches:
            log.info("a NaFlex model's pictures are decoded on the CPU (nvJPEG makes fixed-size crops)")
        elif gpu_decode != "off":
            if all(gpu_decode_available(e.device) for e in self.embedders):
                self.share = Share(start_share(os.cpu_count() or 1))
            elif gpu_decode == "on":
                log.warning(
                    "gpu_decode is on, but no CUDA device with torchvision's decode_jpeg: decoding on the CPU"
                )
        self.decode_on = decode_device(self.embedders)
        self.stages = Stages()
        self._cpu_only: set[str] = set()  # keys planned for their fingerprint alone
        self.readers: concurrent.futures.ThreadPoolExecutor | None = None
        self.decoders: concurrent.futures.ThreadPoolExecutor | None = None  # nvJPEG's, off the model thread
        self._reads: dict[str, asyncio.Future[bytearray]] = {}
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._started: list[concurrent.futures.Future[None]] = []  # the workers, starting
        self.model_threads: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self.devices: Devices | None = None
        # Told of rows written with embeddings (their facts and vectors) and of keys that lost
        # theirs: whoever keeps an in-memory library in step.
        self.listener: LibraryListener | None = None

    async def __aenter__(self) -> Indexer:
        configure_pillow()  # GPU-refused JPEGs and uploads decode in this process
        # forkserver/spawn: workers must not inherit torch's threads or the database handle.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":  # imported once in the server, not in every worker it forks
            # The forkserver exits when this process dies, SIGKILL included (image_search.lifeline).
            context.set_forkserver_preload(
                ["__main__", "image_search.indexing.workers", "image_search._forkserver"]
            )
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=worker_start,
            initargs=(max(1, (os.cpu_count() or 1) // self.workers), method == "forkserver"),
        )
        # Start them now, not when the first files are due; warm() waits for them.
        self._started = [self.pool.submit(worker_ping) for _ in range(self.workers)]
        if self.share:
            self.readers = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="jpeg-reader")
            # Two: one batch's crops and fingerprints are cut while the next is decoded.
            self.decoders = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="nvjpeg")
        self.devices = Devices(self.embedders, self.gpus)
        for embedder in self.embedders:
            self.model_threads[id(embedder)] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"model-{embedder.device}"
            )
        return self

    @property
    def gpu_share(self) -> float:
        return self.share.value

    async def warm(self) -> None:
        """Load each device's model (if not yet loaded) and run one full batch through it, and
        start nvJPEG, on the model threads at once, while the decoding workers start, and wait
        for those too: the first files then meet a warm pipeline."""
        loop = asyncio.get_running_loop()

        def ready(embedder: ImageEmbedder) -> None:
            if embedder.model is None:
                embedder.load()
            if embedder.device.type != "cpu":  # a CPU batch of ViT-L/14 takes seconds: not worth it
                embedder.warm(self.batch_size)
            if self.share and embedder.device == self.decode_on:
                warm_nvjpeg(embedder)

        await asyncio.gather(
            *(loop.run_in_executor(self.model_threads[id(e)], ready, e) for e in self.embedders),
            *(asyncio.wrap_future(f) for f in self._started),
        )

    async def __aexit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for threads in (self.readers, self.decoders):
            if threads is not None:
                threads.shutdown(wait=False, cancel_futures=True)
        for thread in self.model_threads.values():
            # A batch in flight is abandoned, not awaited (a CPU batch can take seconds): its
            # rows were never written, and shutdown must finish within systemd's stop timeout.
            thread.shutdown(wait=False, cancel_futures=True)

    async def plan(self, files: Sequence[FileRef], *, force: bool = False) -> tuple[list[FileRef], int]:
        """The files that need work, and how many are unchanged since they were stored."""
        return await plan_files(self.store, files, self.model_id, self._cpu_only, force=force)

    async def index(self, files: Sequence[FileRef], *, force: bool = False) -> Summary:
        """Index these files (incrementally unless ``force``); returns what happened."""
        started = time.monotonic()
        todo, skipped = await self.plan(files, force=force)
        summary = Summary(unchanged=skipped)
        assert self.pool is not None, "use Indexer as an async context manager"
        loop = asyncio.get_running_loop()
        window = 2 * self.batch_size + 2 * self.workers
        pending: deque[tuple[FileRef, asyncio.Future[Prepared]]] = deque()
        queue = iter(todo)

        def fill() -> None:  # a bounded lookahead of decoding futures
            while len(pending) < window and (ref := next(queue, None)) is not None:
                pending.append((ref, self._submit(ref, loop)))

        fill()
        batches = InFlight(self, summary, Progress(total=len(todo)))
        batch: list[tuple[FileRef, Prepared]] = []
        size = min(FIRST_BATCH, self.batch_size)
        try:
            while pending:
                ref, future = pending.popleft()
                waited = time.perf_counter()
                prepared = await self._prepared(ref, future)
                self._waited("decoders", time.perf_counter() - waited)
                fill()
                batch.append((ref, prepared))
                if len(batch) >= size or not pending:
                    waited = time.perf_counter()
                    await batches.start(batch)
                    self._waited("device", time.perf_counter() - waited)
                    self.share.balance()
                    batch, size = [], min(2 * size, self.batch_size)
            await batches.finish()
        finally:
            for _, future in pending:
                future.cancel()
            batches.cancel()
        summary.seconds = time.monotonic() - started
        summary.stages = self.stages.as_dict()
        return summary

    def _waited(self, side: str, seconds: float) -> None:
        self.share.waited(side, seconds)
        self.stages.add(f"waiting for {'the decoders' if side == 'decoders' else 'a device'}", seconds)

    def _submit(self, ref: FileRef, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Prepared]:
        """Decode one file in the pool: its facts only, when its JPEG is nvJPEG's share."""
        on_gpu = ref.key not in self._cpu_only and self.share.take()
        self._cpu_only.discard(ref.key)
        assert self.pool is not None
        future = self.pool.submit(
            prepare, ref.path, self.embedder.crop, self.max_megapixels, self.draft, on_gpu, self.thumbnails
        )
        return asyncio.wrap_future(future, loop=loop)

    async def _prepared(self, ref: FileRef, future: asyncio.Future[Prepared]) -> Prepared:
        try:
            prepared = await future
        except concurrent.futures.process.BrokenProcessPool:
            raise
        except Exception as exc:  # pickling or a worker crash on this file alone
            prepared = Prepared(path=ref.path, size=0, mtime_ns=0, error=f"cannot decode: {exc}")
        if prepared.gpu and self.readers is not None:  # fetch its bytes while others decode
            self._reads[prepared.path] = asyncio.wrap_future(self.readers.submit(self._read, prepared.path))
        return prepared

    def _decode(self, data: list[bytearray], orientations: list[int]) -> Decoded:
        with self.stages.time(f"nvJPEG {self.decode_on}"):
            return decode_batch(data, orientations, self.embedder.crop, self.decode_on)

    def _read(self, path: str) -> bytearray:
        with self.stages.time("reading JPEGs (threads)"):
            return read_file(path)

    async def embed_images(self, images: list[Any]) -> np.ndarray:
        """Unit vectors of decoded RGB pictures (an uploaded query picture), on a free device's
        model thread, between the indexing batches."""
        assert self.devices is not None, "use Indexer as an async context manager"
        embedder = await self.devices.take()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.model_threads[id(embedder)], embedder.embed_images, images
            )
        finally:
            self.devices.give(embedder)

    async def _embed(self, todo: list[Prepared]) -> tuple[np.ndarray, list[Prepared]]:
        """Vectors for these files, on a free device: CPU-decoded crops and GPU-decoded JPEGs in
        one forward pass. Returns the vectors and the files in their order (a JPEG nvJPEG refuses
        is decoded on the CPU instead, or gets its error)."""
        assert self.devices is not None, "use Indexer as an async context manager"
        loop = asyncio.get_running_loop()
        on_gpu = [p for p in todo if p.gpu]
        data = [await self._reads.pop(p.path) for p in on_gpu]
        decoded: Decoded = []
        if on_gpu:  # before taking a device: the device is not held while nvJPEG works
            orientations = [p.orientation for p in on_gpu]
            decoded = await loop.run_in_executor(self.decoders, self._decode, data, orientations)
        saves: list[asyncio.Future[bool]] = []
        embedder = await self.devices.take()
        try:
            thread = self.model_threads[id(embedder)]
            cpu = [p for p in todo if not p.gpu]
            try:
                vectors, refused, prints, thumbs = await loop.run_in_executor(
                    thread,
                    embed_mixed,
                    embedder,
                    [p.pixels for p in cpu],
                    decoded,
                    self.stages,
                )
            except Exception as exc:
                # Every input here is a decoded crop of the same shape: no file can make the forward
                # fail, the device did (a reset GPU, a lost device, out of memory).
                raise DeviceFailed(
                    f"the model failed on {embedder.device}: {type(exc).__name__}: {exc}"
                ) from exc
            accepted = [p for i, p in enumerate(on_gpu) if i not in refused]
            for p, print_ in zip(accepted, prints, strict=True):
                p.fingerprint = print_
            if self.thumbnails is not None:  # encoded beside the model thread, not on it
                saves = [
                    loop.run_in_executor(None, save_gpu_thumbnail, self.thumbnails, thumb, p.hash)
                    for p, thumb in zip(accepted, thumbs, strict=True)
                    if p.hash
                ]
            order = cpu + accepted
            retry = [on_gpu[i] for i in refused]
            if retry:  # decode those on the CPU like any other file
                more, ok = await self._on_cpu_instead(retry, embedder, thread)
                vectors = (
                    np.concatenate([vectors, more])
                    if len(vectors) and len(more)
                    else (more if len(more) else vectors)
                )
                order += ok
        finally:
            self.devices.give(embedder)
        await asyncio.gather(*saves)
        return vectors, order

    async def _on_cpu_instead(
        self, retry: list[Prepared], embedder: ImageEmbedder, thread: Any
    ) -> tuple[np.ndarray, list[Prepared]]:
        """JPEGs nvJPEG refused, decoded by the CPU workers and embedded: their vectors, and
        those that decoded (the others now carry their error)."""
        assert self.pool is not None
        redone = await asyncio.gather(
            *(
                asyncio.wrap_future(
                    self.pool.submit(
                        prepare,
                        p.path,
                        embedder.crop,
                        self.max_megapixels,
                        self.draft,
                        False,
                        self.thumbnails,
                    )
                )
                for p in retry
            )
        )
        for old, new in zip(retry, redone, strict=True):
            old.gpu, old.pixels, old.error = False, new.pixels, new.error
            old.fingerprint = new.fingerprint
        ok = [p for p in retry if p.error is None]
        if not ok:
            return np.zeros((0, 0), dtype=np.float32), []
        more, _, _, _ = await asyncio.get_running_loop().run_in_executor(
            thread, embed_mixed, embedder, [p.pixels for p in ok], [], self.stages
        )
        return more, ok

    async def commit(self, batch: Sequence[tuple[FileRef, Prepared]], summary: Summary) -> None:
        """Embed what is new in one batch and write the whole batch in one transaction."""
        vanished = [ref for ref, p in batch if p.vanished]
        batch = [(ref, p) for ref, p in batch if not p.vanished]
        good = [(ref, p) for ref, p in batch if p.error is None]
        known = await self.store.embeddings_by_hash([p.hash for _, p in good if p.hash], self.model_id)
        fresh: dict[str, int] = {}  # content hash → row in the vectors, so a duplicate embeds once
        todo: list[Prepared] = []
        for _, p in good:
            if p.hash not in known and p.hash not in fresh:
                fresh[p.hash] = -1  # type: ignore[index]
                todo.append(p)
        vectors = np.zeros((0, 0), dtype=np.float32)
        if todo:
            vectors, order = await self._embed(todo)
            fresh = {p.hash: i for i, p in enumerate(order)}  # type: ignore[misc]
            good = [(ref, p) for ref, p in batch if p.error is None]  # GPU refusals may have failed
            # A second file of the same content in this batch was not decoded (nvJPEG's share).
            prints = {p.hash: p.fingerprint for p in order if p.fingerprint}
        else:
            prints = {}
        stamp = now()
        rows = [row_of(ref, p, stamp) for ref, p in batch]
        written: list[dict[str, Any]] = []
        written_vectors: list[np.ndarray] = []
        failed: list[str] = []
        for (ref, p), row in zip(batch, rows, strict=True):
            if p.error is None:
                if p.hash in known:
                    blob, print_ = known[p.hash]  # type: ignore[index]
                    row["fingerprint"] = p.fingerprint or print_  # not decoded here (nvJPEG's share)
                    summary.reused += 1
                else:
                    blob = to_bytes(vectors[fresh[p.hash]])  # type: ignore[index]
                    row["fingerprint"] = p.fingerprint or prints.get(p.hash)  # type: ignore[arg-type]
                    summary.indexed += 1
                row["embedding"], row["model"] = blob, self.model_id
                written.append(row)
                written_vectors.append(from_bytes(blob).astype(np.float32))
            else:
                log.warning("skipping %s: %s", ref.path, p.error)
                summary.failed.append((ref.path, p.error))
                failed.append(ref.key)
        with self.stages.time("writing rows"):
            await self.store.write(rows)
        if vanished:  # deleted while queued: no row, not a failure
            await self.store.delete([ref.key for ref in vanished])
            failed.extend(ref.key for ref in vanished)
        if self.listener is not None:
            if failed:
                self.listener.remove(failed)
            if written:
                self.listener.upsert_rows(written, np.stack(written_vectors))  # type: ignore[arg-type]
