"""Indexing 12 MP JPEGs with one GPU and with every GPU, in one run (#19): the helpers that
benchmarks/test_gpus.py and `scripts/gpu-probe.py gpus` share.

Each run is a fresh indexer (fresh decoding pool) over a fresh database, the models loaded once.
Reported per run: the overall rate; the steady rate, while the decoders run (from the commit that
passes 10% of the files to the last one within 75%: the last quarter drains up to ~1,000 files
already decoded or in flight, faster than they can be decoded, and would flatter it); the lag
(how many seconds the run took to that 75% commit beyond the files at the steady rate: the
start-up cost, whose floor is 2 s); when the first batch was committed; the devices that ran the
model; the stages' seconds; the commits' (seconds, files) marks.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from image_search.indexing.indexer import FileRef, Indexer
from image_search.pictures.imaging import CropSpec, prepare
from image_search.store import Store


def index_run(
    files: list[Path],
    db: Path,
    embedders: list[Any],
    gpus: int | None,
    switch: float | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Index ``files`` into a fresh database with these embedders (``gpus`` as the option;
    ``switch``: Python's thread switch interval for the run, else its default 5 ms; ``workers``:
    the decoding processes, else the default)."""
    marks: list[tuple[float, int]] = []
    default = sys.getswitchinterval()
    sys.setswitchinterval(switch or default)

    async def main() -> dict[str, Any]:
        async with Store(f"surrealkv://{db}") as store:
            await store.check_model(embedders[0].source.model_id)
            options: dict[str, Any] = {"batch_size": 256, "gpu_decode": "on", "workers": workers}
            if gpus is not None and "gpus" in inspect.signature(Indexer).parameters:
                options["gpus"] = gpus
            async with Indexer(
                store, embedders, on_progress=lambda p: marks.append((time.perf_counter(), p.done)), **options
            ) as indexer:
                warm = time.perf_counter()
                if hasattr(indexer, "warm"):  # the commit before #19 had no warm-up of its own
                    await indexer.warm()
                start = time.perf_counter()
                summary = await indexer.index([FileRef(str(f), str(f.parent)) for f in files])
                end = time.perf_counter()
                devices = getattr(indexer, "devices", None)
                used = [str(e.device) for e in (devices.used if devices else embedders)]
            assert summary.indexed == len(files) and not summary.failed, summary.failed[:3]
        n = len(files)
        t10, d10 = next(((t, d) for t, d in marks if d >= n // 10), marks[0])
        t75, d75 = max(((t, d) for t, d in marks if d <= 3 * n // 4), default=(end, n))
        steady = (d75 - d10) / (t75 - t10) if d75 > d10 else n / (end - start)
        drain = (n - d75) / (end - t75) if end > t75 else 0.0
        return {
            "gpus_option": gpus,
            "model_on": used,
            "overall_img_s": round(n / (end - start), 1),
            "steady_img_s": round(steady, 1),
            "lag_s": round((t75 - start) - d75 / steady, 2),
            "drain_img_s": round(drain, 1),
            "first_batch_s": round(marks[0][0] - start, 2),
            "warm_s": round(start - warm, 2),
            "share_end": getattr(getattr(indexer, "share", None), "value", None),
            "stages": getattr(summary, "stages", {}),
            "marks": [(round(t - start, 2), done) for t, done in marks[:16]],
        }

    try:
        return asyncio.run(main()) | {"switch_ms": round(sys.getswitchinterval() * 1000, 2)}
    finally:
        sys.setswitchinterval(default)


def decoders_together(files: list[Path], device: Any, spec: CropSpec | None = None) -> dict[str, float]:
    """Pillow on every core and nvJPEG on one GPU at once, as many files as Pillow gets through:
    the rate the decoders give together, which indexing's steady rate is held against."""
    import torch

    from image_search.indexing.gpudecode import decode_batch

    spec = spec or CropSpec()
    data = [f.read_bytes() for f in files[:64]]
    paths = [str(f) for f in files]
    done = [0]
    stop = threading.Event()

    def gpu_loop() -> None:
        while not stop.is_set():
            decode_batch(data[:32], [1] * 32, spec, device)
            torch.cuda.synchronize(device)
            done[0] += 32

    decode_batch(data[:32], [1] * 32, spec, device)  # the decoder made before the clock starts
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(prepare, paths[:64], [spec] * 64, [100.0] * 64, chunksize=2))
        thread = threading.Thread(target=gpu_loop)
        start = time.perf_counter()
        thread.start()
        list(pool.map(prepare, paths, [spec] * len(paths), [100.0] * len(paths), chunksize=4))
        stop.set()
        thread.join()
        seconds = time.perf_counter() - start
    cpu, gpu = len(paths) / seconds, done[0] / seconds
    return {
        "pillow_img_s": round(cpu, 1),
        "nvjpeg_img_s": round(gpu, 1),
        "together_img_s": round(cpu + gpu, 1),
    }


def one_and_all(files: list[Path], folder: Path, embedders: list[Any], rounds: int = 2) -> dict[str, Any]:
    """One GPU, then all of them (automatic choice), alternating, ``rounds`` times each; with
    FORCED=1 also every GPU's model from the start."""
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "all": []}
    plans = [("one", embedders[:1], 1), ("all", embedders, 0)]
    if os.environ.get("FORCED") and len(embedders) > 1:  # every GPU's model from the start
        runs["forced"] = []
        plans.append(("forced", embedders, len(embedders)))
    for r in range(rounds):
        for name, chosen, gpus in plans:
            runs[name].append(index_run(files, folder / f"db-{name}-{r}", chosen, gpus))
            print(name, runs[name][-1], flush=True)
    if os.environ.get("SWITCH_MS"):  # an experiment: a shorter switch interval for nvJPEG's threads
        switch = float(os.environ["SWITCH_MS"]) / 1000
        runs["one, switch"] = [index_run(files, folder / "db-switch", embedders[:1], 1, switch)]
        print("one, switch", runs["one, switch"][-1], flush=True)
    return runs
