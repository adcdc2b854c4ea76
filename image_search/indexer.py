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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DeviceFailed
from .imaging import Prepared, prepare
from .model import ImageEmbedder, default_batch_size
from .store import Store, from_bytes, image_key, now, path_fields, to_bytes

log = logging.getLogger(__name__)

PLAN_CHUNK = 2000
# With GPU decoding, this share of the JPEGs is decoded by nvJPEG and the rest by the CPU workers:
# measured on an H100 host with 16 cores, 12 MP JPEGs end to end (benchmarks/gpu_probe.py e2e):
# share 0 171 img/s, 0.6 248, 0.75 272, 0.9 212, 1.0 240.
GPU_SHARE = 0.75
WORKER_NICENESS = 10


@dataclass(frozen=True)
class FileRef:
    path: str
    root: str

    @property
    def key(self) -> str:
        return image_key(self.path)


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    embedded: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None


@dataclass
class Summary:
    indexed: int = 0
    reused: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Summary) -> None:
        self.indexed += other.indexed
        self.reused += other.reused
        self.unchanged += other.unchanged
        self.removed += other.removed
        self.failed.extend(other.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "reused": self.reused,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "seconds": round(self.seconds, 3),
        }


def _same_file(row: dict[str, Any] | None, size: int, mtime_ns: int) -> bool:
    return row is not None and row["size"] == size and row["mtime_ns"] == mtime_ns


def unchanged(row: dict[str, Any] | None, size: int, mtime_ns: int, model_id: str) -> bool:
    """Whether a stored row still describes the file: same size and mtime, and either embedded
    by this model (with its fingerprint) or failed (a failed file is retried only when it changes)."""
    if not _same_file(row, size, mtime_ns):
        return False
    assert row is not None
    if row.get("error") is not None:
        return True
    return row.get("model") == model_id and row.get("fingerprint") is not None


def needs_fingerprint_only(row: dict[str, Any] | None, size: int, mtime_ns: int, model_id: str) -> bool:
    """An unchanged, embedded file stored before fingerprints existed: decoded again on the CPU
    for its fingerprint, its embedding reused (found by content hash), the model not run."""
    return (
        _same_file(row, size, mtime_ns)
        and row is not None
        and row.get("model") == model_id
        and row.get("fingerprint") is None
    )


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
    ) -> None:
        self.store = store
        # One embedder per device; batches run on them concurrently, one model thread each.
        self.embedders = [embedder] if isinstance(embedder, ImageEmbedder) else list(embedder)
        self.embedder = self.embedders[0]
        self.workers = workers or os.cpu_count() or 1
        self.batch_size = batch_size or default_batch_size(self.embedder.device)
        self.max_megapixels = max_megapixels
        self.draft = draft
        self.on_progress = on_progress
        self.model_id = self.embedder.source.model_id
        self.gpu_share = 0.0
        if gpu_decode != "off":
            from . import gpudecode

            if all(gpudecode.available(e.device) for e in self.embedders):
                self.gpu_share = GPU_SHARE
            elif gpu_decode == "on":
                log.warning(
                    "gpu_decode is on, but no CUDA device with torchvision's decode_jpeg: decoding on the CPU"
                )
        self._credit = 0.0
        self._cpu_only: set[str] = set()  # keys planned for their fingerprint alone
        self.readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reads: dict[str, asyncio.Future[bytes]] = {}
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.model_threads: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self._free: asyncio.Queue[ImageEmbedder] | None = None
        # Rows written with embeddings (their facts and vectors) and keys removed, for whoever
        # keeps an in-memory index in step.
        self.on_written: Callable[[list[dict[str, Any]], np.ndarray, list[str]], None] | None = None

    async def __aenter__(self) -> Indexer:
        # forkserver/spawn: workers must not inherit torch's threads or the database handle.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context(method), initializer=_lower_priority
        )
        if self.gpu_share:
            self.readers = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="jpeg-reader")
        self._free = asyncio.Queue()
        for embedder in self.embedders:
            self.model_threads[id(embedder)] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"model-{embedder.device}"
            )
            self._free.put_nowait(embedder)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.readers is not None:
            self.readers.shutdown(wait=False, cancel_futures=True)
        for thread in self.model_threads.values():
            # A batch in flight is abandoned, not awaited (a CPU batch can take seconds): its
            # rows were never written, and shutdown must finish within systemd's stop timeout.
            thread.shutdown(wait=False, cancel_futures=True)

    async def plan(self, files: Sequence[FileRef], *, force: bool = False) -> tuple[list[FileRef], int]:
        """The files that need work, and how many are unchanged since they were stored."""
        todo: list[FileRef] = []
        skipped = 0
        for start in range(0, len(files), PLAN_CHUNK):
            chunk = files[start : start + PLAN_CHUNK]
            rows = {} if force else await self.store.get([f.key for f in chunk])
            # stat() off the event loop: a reconcile plans 100k files, and under `serve` the same
            # loop answers web requests.
            stats = await asyncio.to_thread(_stat_all, [ref.path for ref in chunk])
            for ref, st in zip(chunk, stats, strict=True):
                if st is None:
                    todo.append(ref)  # prepare() records why it cannot be read
                elif unchanged(rows.get(ref.key), st.st_size, st.st_mtime_ns, self.model_id):
                    skipped += 1
                else:
                    if needs_fingerprint_only(rows.get(ref.key), st.st_size, st.st_mtime_ns, self.model_id):
                        self._cpu_only.add(ref.key)
                    todo.append(ref)
        return todo, skipped

    async def index(self, files: Sequence[FileRef], *, force: bool = False) -> Summary:
        """Index these files (incrementally unless ``force``); returns what happened."""
        started = time.monotonic()
        todo, skipped = await self.plan(files, force=force)
        summary = Summary(unchanged=skipped)
        progress = Progress(total=len(todo))
        assert self.pool is not None, "use Indexer as an async context manager"
        loop = asyncio.get_running_loop()
        window = 2 * self.batch_size + 2 * self.workers
        pending: deque[tuple[FileRef, asyncio.Future[Prepared]]] = deque()
        queue = iter(todo)
        crop = self.embedder.crop

        def fill() -> None:
            while len(pending) < window:
                ref = next(queue, None)
                if ref is None:
                    return
                on_gpu = False
                if self.gpu_share and ref.key not in self._cpu_only:
                    self._credit += self.gpu_share
                    on_gpu = self._credit >= 1.0
                    self._credit -= 1.0 if on_gpu else 0.0
                self._cpu_only.discard(ref.key)
                future = self.pool.submit(prepare, ref.path, crop, self.max_megapixels, self.draft, on_gpu)  # type: ignore[union-attr]
                pending.append((ref, asyncio.wrap_future(future, loop=loop)))

        fill()
        batch: list[tuple[FileRef, Prepared]] = []
        # Two batches in flight per device: one reads its JPEGs and writes its rows while the other
        # has the device. A batch's rows are written whole.
        in_flight: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(2 * len(self.embedders))

        async def run(chunk: list[tuple[FileRef, Prepared]]) -> None:
            try:
                await self.commit(chunk, summary)
            finally:
                slots.release()
            progress.done += len(chunk)
            if self.on_progress:
                self.on_progress(progress)

        try:
            while pending:
                ref, future = pending.popleft()
                try:
                    prepared = await future
                except concurrent.futures.process.BrokenProcessPool:
                    raise
                except Exception as exc:  # pickling or a worker crash on this file alone
                    prepared = Prepared(path=ref.path, size=0, mtime_ns=0, error=f"cannot decode: {exc}")
                fill()
                if prepared.gpu and self.readers is not None:  # fetch its bytes while others decode
                    self._reads[prepared.path] = asyncio.wrap_future(
                        self.readers.submit(_read, prepared.path)
                    )
                batch.append((ref, prepared))
                if len(batch) >= self.batch_size or not pending:
                    await slots.acquire()
                    task = asyncio.create_task(run(batch))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    batch = []
                    for done in [t for t in in_flight if t.done()]:
                        done.result()
            if in_flight:
                await asyncio.gather(*in_flight)
        finally:
            for _, future in pending:
                future.cancel()
            for task in in_flight:
                task.cancel()
        summary.seconds = time.monotonic() - started
        return summary

    async def _embed(self, todo: list[Prepared]) -> tuple[np.ndarray, list[Prepared]]:
        """Vectors for these files, on a free device: CPU-decoded crops and GPU-decoded JPEGs in
        one forward pass. Returns the vectors and the files in their order (a JPEG nvJPEG refuses
        is decoded on the CPU instead, or gets its error)."""
        assert self._free is not None, "use Indexer as an async context manager"
        loop = asyncio.get_running_loop()
        on_gpu = [p for p in todo if p.gpu]
        data = [await self._reads.pop(p.path) for p in on_gpu]
        embedder = await self._free.get()
        try:
            thread = self.model_threads[id(embedder)]
            cpu = [p for p in todo if not p.gpu]
            try:
                vectors, refused, prints = await loop.run_in_executor(
                    thread,
                    _embed_mixed,
                    embedder,
                    [p.pixels for p in cpu],
                    data,
                    [p.orientation for p in on_gpu],
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
            order = cpu + accepted
            retry = [on_gpu[i] for i in refused]
            if retry:  # decode those on the CPU like any other file
                assert self.pool is not None
                redone = await asyncio.gather(
                    *(
                        asyncio.wrap_future(
                            self.pool.submit(prepare, p.path, embedder.crop, self.max_megapixels, self.draft)
                        )
                        for p in retry
                    )
                )
                for old, new in zip(retry, redone, strict=True):
                    old.gpu, old.pixels, old.error = False, new.pixels, new.error
                    old.fingerprint = new.fingerprint
                ok = [p for p in retry if p.error is None]
                if ok:
                    more, _, _ = await loop.run_in_executor(
                        thread, _embed_mixed, embedder, [p.pixels for p in ok], [], []
                    )
                    vectors = np.concatenate([vectors, more]) if len(vectors) else more
                    order += ok
        finally:
            self._free.put_nowait(embedder)
        return vectors, order

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
        rows: list[dict[str, Any]] = []
        written: list[dict[str, Any]] = []
        written_vectors: list[np.ndarray] = []
        failed: list[str] = []
        for ref, p in batch:
            row: dict[str, Any] = {
                "key": ref.key,
                **path_fields(ref.path),
                "root": ref.root,
                "size": p.size,
                "mtime_ns": p.mtime_ns,
                "hash": p.hash,
                "width": p.width,
                "height": p.height,
                "taken_at": p.taken_at,
                "format": p.format,
                "fingerprint": p.fingerprint,
                "indexed_at": stamp,
                "embedding": None,
                "model": None,
                "error": p.error,
                "offline": False,
            }
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
            rows.append(row)
        await self.store.write(rows)
        if vanished:  # deleted while queued: no row, not a failure
            await self.store.delete([ref.key for ref in vanished])
            failed.extend(ref.key for ref in vanished)
        if self.on_written is not None:
            matrix = np.stack(written_vectors) if written_vectors else np.zeros((0, 0), dtype=np.float32)
            self.on_written(written, matrix, failed)


def _lower_priority() -> None:
    """In each decoding worker: yield the CPU to searches (under `serve`) and to the desktop.
    A niced worker still takes every idle cycle, so indexing alone runs as fast as before."""
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # pragma: no cover - a sandbox may forbid it
        pass


def _stat_all(paths: list[str]) -> list[os.stat_result | None]:
    out: list[os.stat_result | None] = []
    for path in paths:
        try:
            out.append(os.stat(path))
        except OSError:
            out.append(None)
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _embed_mixed(
    embedder: ImageEmbedder, crops: list[Any], jpegs: list[bytes], orientations: list[int]
) -> tuple[np.ndarray, set[int], list[bytes]]:
    """On the model thread: decode the JPEGs on the GPU, then embed CPU crops and GPU crops
    together. Returns vectors (CPU crops first, then the JPEGs nvJPEG accepted), the indices of
    the JPEGs it refused and the fingerprints of those it accepted."""
    import torch

    parts = []
    prints: list[bytes] = []
    if crops:
        parts.append(torch.from_numpy(np.stack(crops)).to(embedder.device, non_blocking=True))
    refused: set[int] = set()
    if jpegs:
        from .gpudecode import decode_batch

        decoded = decode_batch(jpegs, orientations, embedder.crop, embedder.device)
        refused = {i for i, pair in enumerate(decoded) if pair is None}
        accepted = [pair for pair in decoded if pair is not None]
        prints = [print_ for _, print_ in accepted]
        if accepted:
            parts.append(torch.stack([crop for crop, _ in accepted]))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32), refused, prints
    return embedder.embed_pixels(torch.cat(parts) if len(parts) > 1 else parts[0]), refused, prints
