"""Which variant of the ViT-L/14 forward is fastest on this GPU, and how fast each JPEG decoder
is on 12 MP photos: run once per GPU kind to choose defaults (scripts/gpu-session probe). A
diagnostic, not a benchmark: ``python scripts/gpu-probe.py WHAT`` from the repository."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from image_search.bench import photo_jpegs
from image_search.pictures.imaging import CropSpec, prepare

# Decoding workers (forkserver) import this file again as __mp_main__: torch and transformers
# only in the main process, or 16 workers spend ~30 s importing them inside the measurement.
if __name__ == "__main__":
    import torch
    from transformers import CLIPVisionModelWithProjection

    from image_search.models.model import ImageEmbedder, ModelSource

warnings.simplefilter("ignore")


def timed(fn, n: int = 10) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def forward() -> None:
    """transformers' forward against image_search.models.vit's, eager and compiled, per attention kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    source = ModelSource(random_weights=True)
    batch = 256
    pixels = torch.randint(0, 255, (batch, 224, 224, 3), dtype=torch.uint8, device="cuda")
    e = ImageEmbedder(source, "cuda", "float16").load()
    ours = e.model
    reference = e.embed_pixels(pixels)
    torch.manual_seed(0)
    hf = CLIPVisionModelWithProjection(source.random_config().vision_config).to("cuda", torch.float16).eval()
    e.model = lambda x: hf(pixel_values=x).image_embeds
    print(
        f"transformers eager fp16 b{batch}: {batch / timed(lambda: e.embed_pixels(pixels)):.0f} img/s",
        flush=True,
    )
    print("  cosine to ours:", float((e.embed_pixels(pixels) * reference).sum(1).min()), flush=True)
    e.model = ours
    for name, backend in [
        ("default", None),
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
    ]:
        try:
            if backend is None:
                rate = batch / timed(lambda: e.embed_pixels(pixels))
            else:
                with sdpa_kernel([backend]):
                    rate = batch / timed(lambda: e.embed_pixels(pixels))
            print(f"ours eager fp16 b{batch} sdpa={name}: {rate:.0f} img/s", flush=True)
        except Exception as exc:
            print(f"ours eager sdpa={name}: {type(exc).__name__} {str(exc)[:100]}", flush=True)
    for mode in ("default", "max-autotune-no-cudagraphs"):
        for b in (256, 512):
            x = torch.randint(0, 255, (b, 224, 224, 3), dtype=torch.uint8, device="cuda")
            e.model = torch.compile(ours, mode=mode)
            start = time.perf_counter()
            e.embed_pixels(x)
            warm = time.perf_counter() - start
            rate = b / timed(lambda e=e, x=x: e.embed_pixels(x))
            print(f"ours compile {mode} fp16 b{b}: {rate:.0f} img/s (first call {warm:.0f} s)", flush=True)
            torch._dynamo.reset()
    e.model = torch.compile(lambda x: hf(pixel_values=x).image_embeds)
    e.embed_pixels(pixels)
    print(
        f"transformers compile default b{batch}: {batch / timed(lambda: e.embed_pixels(pixels)):.0f} img/s",
        flush=True,
    )


def decoders() -> None:
    from concurrent.futures import ProcessPoolExecutor

    from image_search.indexing.gpudecode import decode_batch

    with tempfile.TemporaryDirectory() as tmp:
        files = photo_jpegs(Path(tmp), 256, (4000, 3000))
        data = [f.read_bytes() for f in files]
        spec = CropSpec()
        for n in (32, 64, 128):
            rate = n / timed(lambda n=n: decode_batch(data[:n], [1] * n, spec, torch.device("cuda")), 3)
            print(f"nvJPEG batch {n}, 12 MP: {rate:.0f} img/s", flush=True)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(prepare, map(str, files[:32]), [spec] * 32, [100] * 32))
            start = time.perf_counter()
            list(pool.map(prepare, map(str, files), [spec] * len(files), [100] * len(files), chunksize=4))
            rate = len(files) / (time.perf_counter() - start)
            print(f"Pillow draft, {os.cpu_count()} processes, 12 MP: {rate:.0f} img/s", flush=True)
            # both at once: does nvJPEG slow down while every core decodes with Pillow?
            import threading

            gpu_done = [0]
            stop = threading.Event()

            def gpu_loop() -> None:
                while not stop.is_set():
                    decode_batch(data[:32], [1] * 32, spec, torch.device("cuda"))
                    torch.cuda.synchronize()
                    gpu_done[0] += 32

            thread = threading.Thread(target=gpu_loop)
            start = time.perf_counter()
            thread.start()
            list(pool.map(prepare, map(str, files), [spec] * len(files), [100] * len(files), chunksize=4))
            stop.set()
            thread.join()
            seconds = time.perf_counter() - start
            print(
                f"together: Pillow {len(files) / seconds:.0f} img/s"
                f" + nvJPEG {gpu_done[0] / seconds:.0f} img/s",
                flush=True,
            )


def e2e() -> None:
    """Where the time goes when indexing 12 MP JPEGs with both decoders, per share given to nvJPEG."""
    import asyncio
    from collections import defaultdict

    import image_search.indexing.indexer as ix
    from image_search.indexing import gpudecode
    from image_search.indexing.indexer import FileRef, Indexer
    from image_search.store import Store

    spent: dict[str, float] = defaultdict(float)

    def clock(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    gpudecode.decode_batch = clock("nvjpeg", gpudecode.decode_batch)
    ImageEmbedder.embed_pixels = clock("forward", ImageEmbedder.embed_pixels)
    ix._read = clock("read (threads)", ix._read)
    ix.embed_mixed = clock("model thread", ix.embed_mixed)
    write = Store.write

    async def timed_write(self, rows):
        start = time.perf_counter()
        await write(self, rows)
        spent["store.write"] += time.perf_counter() - start

    Store.write = timed_write
    embedder = ImageEmbedder(ModelSource(random_weights=True), os.environ.get("DEVICE", "cuda")).load()
    embedder.warm(2)
    shares = [float(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "0,0.5,0.7,0.85,1").split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        files = photo_jpegs(Path(tmp) / "12mp", int(os.environ.get("N", "1500")), (4000, 3000))
        print(
            f"{len(files)} files, {sum(f.stat().st_size for f in files) / len(files) / 1e6:.1f} MB each",
            flush=True,
        )
        for share in shares:
            ix.start_share = lambda _cores, share=share: share
            spent.clear()

            async def main(share=share) -> float:
                async with Store(f"surrealkv://{tmp}/db-{share}") as store:
                    await store.check_model(embedder.source.model_id)
                    async with Indexer(
                        store, [embedder], batch_size=256, gpu_decode="on" if share else "off"
                    ) as indexer:
                        start = time.perf_counter()
                        summary = await indexer.index([FileRef(str(f), tmp) for f in files])
                        assert summary.indexed == len(files), summary.failed[:3]
                        return time.perf_counter() - start

            seconds = asyncio.run(main())
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(spent.items()))
            print(
                f"gpu share {share}: {len(files) / seconds:.0f} img/s in {seconds:.1f} s; {parts}", flush=True
            )


def families() -> None:
    """The image tower of each supported model size on this GPU (#15): img/s eager and compiled,
    float16, random weights from the published configs."""
    from image_search.models.model import RANDOM_CONFIGS

    for name in RANDOM_CONFIGS:
        source = ModelSource(name, random_weights=True)
        for compiled in (False, True):
            e = ImageEmbedder(source, "cuda", "float16", compile=compiled).load()
            side = e.crop.crop_height
            batch = 256 if side <= 256 else 128
            if e.crop.max_patches:  # NaFlex: a 4:3 photo's patches
                pixels = torch.from_numpy(e.blank(batch)).cuda()
            else:
                pixels = torch.randint(0, 255, (batch, side, side, 3), dtype=torch.uint8, device="cuda")
            seconds = timed(lambda e=e, pixels=pixels: e.embed_pixels(pixels))
            label = "compiled" if compiled else "eager"
            print(f"{name} {side}px {label} fp16 b{batch}: {batch / seconds:.0f} img/s", flush=True)
            del e
            torch.cuda.empty_cache()


def gpus() -> None:
    """#19: the decoders together, then indexing with one GPU and with all (multigpu.py), on N
    12 MP JPEGs; with BASELINE=1 the tree on PYTHONPATH is an older commit: one and all, once."""
    import json

    sys.path.insert(0, str(Path(__file__).parent.parent))
    import image_search
    from benchmarks.multigpu import decoders_together, index_run, one_and_all

    print("image_search from", image_search.__file__, "GPUs", torch.cuda.device_count(), flush=True)
    embedders = [
        ImageEmbedder(ModelSource(random_weights=True), f"cuda:{i}", "float16").load()
        for i in range(torch.cuda.device_count())
    ]
    folder = Path(os.environ.get("GPUS_TMP", tempfile.mkdtemp()))
    files = photo_jpegs(folder / "12mp", int(os.environ.get("N", "3000")), (4000, 3000))
    size = sum(f.stat().st_size for f in files) / len(files) / 1e6
    print(f"{len(files)} files, {size:.1f} MB each", flush=True)
    out: dict = {}
    if os.environ.get("BASELINE"):
        for e in embedders:
            e.warm(256)
        for name, chosen in (("one", embedders[:1]), ("all", embedders)):
            out[name] = [index_run(files, Path(tempfile.mkdtemp(dir=folder)), chosen, None)]
            print("baseline", name, out[name][-1], flush=True)
    else:
        out["decoders"] = decoders_together(files[:1500], torch.device("cuda:0"))
        print("decoders together", out["decoders"], flush=True)
        out.update(one_and_all(files, Path(tempfile.mkdtemp(dir=folder)), embedders))
    print("JSON", json.dumps(out), flush=True)


def variants() -> None:
    """#19: one GPU, indexing N 12 MP JPEGs with the default settings, with a 0.5 ms switch
    interval, with 8 fewer decoding workers, and both: what starves the batches while the
    decoders run (the last quarter drains twice as fast once they stop)."""
    import json

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.multigpu import decoders_together, index_run

    embedder = ImageEmbedder(ModelSource(random_weights=True), "cuda:0", "float16").load()
    folder = Path(os.environ.get("GPUS_TMP", tempfile.mkdtemp()))
    files = photo_jpegs(folder / "12mp", int(os.environ.get("N", "3000")), (4000, 3000))
    out: dict = {"decoders": decoders_together(files[:1500], torch.device("cuda:0"))}
    print("decoders together", out["decoders"], flush=True)
    fewer = max(1, (os.cpu_count() or 1) - 8)
    for _ in range(int(os.environ.get("ROUNDS", "2"))):
        for name, switch, workers in (
            ("default", None, 0),
            ("switch 0.5 ms", 0.0005, 0),
            (f"{fewer} workers", None, fewer),
            (f"{fewer} workers, 0.5 ms", 0.0005, fewer),
        ):
            run = index_run(files, Path(tempfile.mkdtemp(dir=folder)), [embedder], 1, switch, workers)
            out.setdefault(name, []).append(run)
            print(name, {k: v for k, v in run.items() if k != "stages"}, flush=True)
    print("JSON", json.dumps(out), flush=True)


def one() -> None:
    """One indexing run on one GPU (for a profiler to watch): N 12 MP JPEGs under GPUS_TMP."""
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.multigpu import index_run

    embedder = ImageEmbedder(ModelSource(random_weights=True), "cuda:0", "float16").load()
    folder = Path(os.environ.get("GPUS_TMP", tempfile.mkdtemp()))
    files = photo_jpegs(folder / "12mp", int(os.environ.get("N", "1500")), (4000, 3000))
    print(index_run(files, Path(tempfile.mkdtemp(dir=folder)), [embedder], 1), flush=True)


def p50(f, n: int = 40) -> float:
    """The median of ``n`` calls of ``f`` after one more, in milliseconds (the CPU probes)."""
    import statistics

    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def httpparts() -> None:
    """#15: where a SigLIP 2 B/16 HTTP search at 100k spends its time (run under taskset with two
    CPUs): the text tower on the calling thread and on an executor thread (as the server runs
    it), each dtype; the 100k search alone; then the whole HTTP search."""
    import concurrent.futures

    from image_search.models.model import TextEmbedder
    from image_search.search.vectors import VectorIndex

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.conftest import unit_vectors
    from benchmarks.test_http_search import measure

    print("CPUs", sorted(os.sched_getaffinity(0)), "threads", torch.get_num_threads(), flush=True)
    source = ModelSource("google/siglip2-base-patch16-224", random_weights=True)
    texts = iter(f"a photo of a dog number {i}" for i in range(10**6))
    for dtype in ("bfloat16", "int8"):
        embed = TextEmbedder(source, dtype).load().embed_texts
        here = p50(lambda e=embed: e([next(texts)]))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            there = p50(lambda e=embed, p=pool: p.submit(e, [next(texts)]).result())
        print(f"text {dtype}: {here} ms on the calling thread, {there} ms on an executor thread", flush=True)
    vectors = VectorIndex.build([str(i) for i in range(100_000)], unit_vectors(100_000, seed=1))
    q = unit_vectors(1, seed=2)[0]
    print("search 100k top 60:", p50(lambda: vectors.search(q, 60)), "ms", flush=True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        there = p50(lambda: pool.submit(vectors.search, q, 60).result())
    print("... on an executor thread:", there, "ms", flush=True)
    folder = Path(tempfile.mkdtemp())
    print("HTTP bfloat16:", measure(folder, source, "bfloat16", loads=False), flush=True)


def searchparts() -> None:
    """#15: the 100k search's kernels on this host's CPUs (run under taskset with two CPUs): the
    text tower on a thread of its own before and after another thread ran a parallel region
    (libgomp spins less once more threads than CPUs are in its teams); the exact float32 scan as
    it is, torch's float32 / float16 / bfloat16 scans, the codes; one text-then-search thread."""
    import concurrent.futures

    from image_search.models.model import TextEmbedder
    from image_search.search.scoring import half_rows_faster
    from image_search.search.vectors import Query, VectorIndex

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.conftest import unit_vectors

    print("CPUs", sorted(os.sched_getaffinity(0)), "threads", torch.get_num_threads(), flush=True)
    source = ModelSource("google/siglip2-base-patch16-224", random_weights=True)
    texts = iter(f"a photo of a dog number {i}" for i in range(10**6))
    a = concurrent.futures.ThreadPoolExecutor(1)
    embed = a.submit(TextEmbedder(source, os.environ.get("TEXT_DTYPE", "bfloat16")).load).result().embed_texts
    text_only = lambda: a.submit(embed, [next(texts)]).result()  # noqa: E731
    print(f"text on its thread, the only team: {p50(text_only)} ms", flush=True)
    x = torch.randn(1000, 1000)
    torch.mm(x, x)
    print(f"text on its thread after the main thread ran a parallel region: {p50(text_only)} ms", flush=True)
    print(f"text on the main thread: {p50(lambda: embed([next(texts)]))} ms", flush=True)
    n = int(os.environ.get("N", 100_000))
    m = unit_vectors(n, seed=1)
    qs = unit_vectors(20, seed=2)
    q = qs[0]
    exact = VectorIndex.build([str(i) for i in range(n)], m, half=False)
    print(f"half rows faster here: {half_rows_faster()}", flush=True)
    print(f"exact float32 search {n} top 60: {p50(lambda: exact.search(q, 60))} ms", flush=True)
    t32 = torch.from_numpy(m)
    for name, dt in (("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        rows = t32.to(dt)
        tq = torch.from_numpy(q).to(dt)
        blocks = list(rows.split(16384))
        out = torch.empty(n, dtype=dt)
        outs = list(out.split(16384))

        def mv(blocks=blocks, tq=tq, outs=outs):
            for b, o in zip(blocks, outs, strict=True):
                torch.mv(b, tq, out=o)

        mm = lambda rows=rows, tq=tq: torch.mm(rows, tq[:, None])  # noqa: E731
        print(f"torch {name}: mv per block {p50(mv)} ms, mm whole {p50(mm, 10)} ms", flush=True)
    half = VectorIndex.build([str(i) for i in range(n)], m, half=True)
    print(f"float16 rows search {n} top 60: {p50(lambda: half.search(q, 60))} ms", flush=True)
    approx = VectorIndex.build([str(i) for i in range(n)], m, approximate_from=0)
    approx.search(q, 60)
    approx.settle()
    print(f"codes search {n} top 60: {p50(lambda: approx.search(q, 60))} ms", flush=True)
    for name, index in (("float32", exact), ("float16", half)):
        for queries in (4, 8):
            batch = [Query(v, 60) for v in qs[:queries]]
            took = p50(lambda i=index, b=batch: i.search_many(b), 10)
            print(f"{name} rows, {queries} queries at once: {took} ms", flush=True)
    for name, index in (("float32", exact), ("float16", half)):
        one = lambda i=index: a.submit(lambda: i.search(embed([next(texts)])[0], 60)).result()  # noqa: E731
        print(f"text then {name} search on the text thread: {p50(one)} ms", flush=True)
    a.shutdown()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            embed([next(texts)])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14), flush=True)


def serveparts() -> None:
    """#15: the server's sequence on one compute thread, the main thread running no torch (as in
    ``serve``): the text tower alone, the 100k search alone (float32 rows, float16 rows, float16
    converted to float32 in chunks), each after the other, and the text after reading 300 MB of
    other memory (does the scan push the tower's weights out of the cache?)."""
    import concurrent.futures

    from image_search.models.model import TextEmbedder
    from image_search.search.vectors import VectorIndex

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.conftest import unit_vectors

    print("CPUs", sorted(os.sched_getaffinity(0)), flush=True)
    compute = concurrent.futures.ThreadPoolExecutor(1)
    on = lambda f: lambda: compute.submit(f).result()  # noqa: E731
    source = ModelSource("google/siglip2-base-patch16-224", random_weights=True)
    text = compute.submit(TextEmbedder(source, "bfloat16").load).result()
    texts = iter(f"a photo of a dog number {i}" for i in range(10**6))
    embed = lambda: text.embed_texts([next(texts)])  # noqa: E731
    n = 100_000
    m = unit_vectors(n, seed=1)
    q = unit_vectors(1, seed=2)[0]
    f32 = compute.submit(VectorIndex.build, [str(i) for i in range(n)], m, half=False).result()
    f16 = compute.submit(VectorIndex.build, [str(i) for i in range(n)], m, half=True).result()
    other = compute.submit(lambda: torch.ones(75_000_000)).result()  # 300 MB

    def chunked(sub: int = 2048) -> None:
        buf = torch.empty(sub, 768)
        qq = torch.from_numpy(q)
        for block in f16._blocks:
            rows = torch.from_numpy(block)
            for s in range(0, len(rows), sub):
                part = rows[s : s + sub]
                buf[: len(part)].copy_(part)
                torch.mv(buf[: len(part)], qq)

    print(f"tokens alone {p50(on(lambda: text.tokens([next(texts)])))} ms", flush=True)
    print(f"text alone {p50(on(embed))} ms", flush=True)
    print(f"search float32 rows {p50(on(lambda: f32.search(q, 60)))} ms", flush=True)
    print(f"search float16 rows {p50(on(lambda: f16.search(q, 60)))} ms", flush=True)
    print(f"scan float16 via float32 chunks {p50(on(chunked))} ms", flush=True)
    print(f"text then float32 search {p50(on(lambda: f32.search(embed()[0], 60)))} ms", flush=True)
    print(f"text then 300 MB read {p50(on(lambda: (embed(), other.sum())))} ms", flush=True)
    print(f"300 MB read alone {p50(on(lambda: other.sum()))} ms", flush=True)
    print(f"text again alone {p50(on(embed))} ms", flush=True)


def gelufusion() -> None:
    """#15: SigLIP 2 B/16's text query with its MLPs' GELU fused into ``fc1`` (image_search.models.prepack)
    and without, on one thread of its own, alternating; TEXT_DTYPE (bfloat16) and the towers'
    outputs compared."""
    import concurrent.futures

    import image_search.models.prepack as packing
    from image_search.models.model import TextEmbedder

    print("CPUs", sorted(os.sched_getaffinity(0)), flush=True)
    compute = concurrent.futures.ThreadPoolExecutor(1)
    source = ModelSource("google/siglip2-base-patch16-224", random_weights=True)
    dtype = os.environ.get("TEXT_DTYPE", "bfloat16")
    fused = compute.submit(TextEmbedder(source, dtype).load).result()
    finder = packing._fusable_gelu
    packing._fusable_gelu = lambda module: None
    plain = compute.submit(TextEmbedder(source, dtype).load).result()
    packing._fusable_gelu = finder
    texts = iter(f"a photo of a dog number {i}" for i in range(10**6))
    same = compute.submit(
        lambda: (fused.embed_texts(["a red car"]) * plain.embed_texts(["a red car"])).sum()
    ).result()
    print(f"cosine fused to plain: {same:.6f}", flush=True)
    for _ in range(3):
        for name, text in (("fused", fused), ("plain", plain)):
            took = p50(lambda t=text: compute.submit(t.embed_texts, [next(texts)]).result())
            print(f"text {dtype} {name}: {took} ms", flush=True)


def cpu() -> None:
    """#15 on this host's CPU (run under taskset with two CPUs): the image towers and SigLIP 2's
    text query in bfloat16: eager with plain layers, eager with prepacked layers (the default,
    image_search.models.prepack), and compiled by inductor with freezing (COMPILE=1; ~80 s each)."""
    import numpy as np
    import torch._inductor.config as inductor

    import image_search.models.model as models
    from image_search.models.model import TextEmbedder

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.test_families import QUERIES, rate

    print("CPUs", sorted(os.sched_getaffinity(0)), "threads", torch.get_num_threads(), flush=True)
    inductor.freezing = True
    packing = models.prepack
    only = os.environ.get("ONLY", "text,siglip2-b16,siglip2-b16-naflex,vit-l14").split(",")
    variants = ["plain", "packed", *(["compiled+frozen"] if os.environ.get("COMPILE") else [])]
    ids = {
        "vit-l14": "openai/clip-vit-large-patch14",
        "siglip2-b16": "google/siglip2-base-patch16-224",
        "siglip2-b16-naflex": "google/siglip2-base-patch16-naflex",
    }
    for name in [n for n in ids if n in only]:
        source = ModelSource(ids[name], random_weights=True)
        for label in variants:
            models.prepack = packing if label == "packed" else (lambda model, rows: 0)
            start = time.perf_counter()
            e = ImageEmbedder(source, "cpu", "bfloat16", compile=label.startswith("compiled")).load()
            e.embed_pixels(e.blank(16))
            ready = time.perf_counter() - start
            print(f"{name} bf16 {label}: {rate(e, rounds=2):.2f} img/s (ready in {ready:.0f} s)", flush=True)
    if "text" in only:
        source = ModelSource(ids["siglip2-b16"], random_weights=True)
        for label in variants:
            models.prepack = packing if label == "packed" else (lambda model, rows: 0)
            t = TextEmbedder(source, "bfloat16").load()
            if label.startswith("compiled"):
                t.model = torch.compile(t.model)
            start = time.perf_counter()
            t.embed_texts(["warm up"])
            ready = time.perf_counter() - start
            times = []
            for query in QUERIES * 5:
                start = time.perf_counter()
                t.embed_texts([query])
                times.append(time.perf_counter() - start)
            p50 = float(np.median(times)) * 1000
            print(f"siglip2-b16 text bf16 {label}: p50 {p50:.1f} ms (ready in {ready:.0f} s)", flush=True)
    models.prepack = packing


def dups() -> None:
    """#18: near-duplicate pairs on this host's CPU (run under taskset with two CPUs), bfloat16
    where native: the benchmark's library at N rows (benchmarks/test_duplicates.py), the whole
    grouping checked against the planted groups; first the GEMM rate alone, the ceiling."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.test_duplicates import library

    try:  # image_search/duplicates/ as a package
        from image_search.duplicates import vectorjoin as join
        from image_search.duplicates.grouping import group
    except ImportError:  # a commit before it (BASE=1: the vector join lived in duplicates.py)
        from image_search.duplicates import group  # type: ignore[attr-defined,no-redef]

        try:
            from image_search import vectorjoin as join  # type: ignore[attr-defined,no-redef]
        except ImportError:
            from image_search import duplicates as join  # type: ignore[no-redef]
    BLOCK, _bf16_fast = join.BLOCK, join._bf16_fast
    TILE = getattr(join, "TILE", 2048)  # an older commit made no tiles

    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bf16 = _bf16_fast()
    dtype = torch.bfloat16 if bf16 else torch.float32
    cpus = sorted(os.sched_getaffinity(0))
    print("CPUs", cpus, "threads", torch.get_num_threads(), "bf16", bf16, flush=True)
    a, b = torch.randn(BLOCK, 768).to(dtype), torch.randn(TILE * 8, 768).to(dtype)
    out = torch.empty(BLOCK, TILE * 8, dtype=dtype)
    torch.matmul(a, b.T, out=out)
    start = time.perf_counter()
    for _ in range(20):
        for c in range(0, TILE * 8, TILE):
            torch.matmul(a, b[c : c + TILE].T, out=out[:, :TILE])
    gemm = time.perf_counter() - start
    rate = 20 * 8 * 2 * BLOCK * TILE * 768 / gemm / 1e9
    print(f"GEMM {BLOCK}x768 @ 768x{TILE}: {rate:.0f} GFLOP/s", flush=True)
    limit, before = float(os.environ.get("LIMIT_S", "330")), None
    for n in [int(x) for x in os.environ.get("N", "100000").split(",")]:
        if before is not None and before[1] * (n / before[0]) ** 2 > limit:
            print(f"near-duplicates at {n:,}: not run (~{before[1] * (n / before[0]) ** 2:.0f} s expected)")
            continue
        start = time.perf_counter()
        matrix, prints, hashes, planted = library(n)
        made = time.perf_counter() - start
        result = group(matrix, prints, hashes)
        same = sorted(sorted(g) for g in result.groups) == sorted(sorted(g) for g in planted)
        print(
            f"near-duplicates at {n:,}: {result.seconds:.1f} s ({result.candidates:,} candidate pairs, "
            f"{len(result.groups):,} groups, equal to the planted ones: {same}; "
            f"found from the {getattr(result, 'first', 'vectors')}; "
            f"library made in {made:.0f} s)",
            flush=True,
        )
        del matrix, prints, hashes, planted
        before = (n, result.seconds)


def gil() -> None:
    """Does nvJPEG hold the GIL? A pure-Python loop's rate alone, then beside a thread that decodes
    12 MP JPEGs (torchvision's op alone, then decode_batch with its crops and copies)."""
    import threading

    from torchvision.io import ImageReadMode, decode_jpeg

    from image_search.indexing.gpudecode import decode_batch

    folder = Path(os.environ.get("GPUS_TMP", tempfile.mkdtemp()))
    files = photo_jpegs(folder / "12mp", 64, (4000, 3000))
    data = [bytearray(f.read_bytes()) for f in files[:32]]
    tensors = [torch.frombuffer(b, dtype=torch.uint8) for b in data]
    spec, device = CropSpec(), torch.device("cuda:0")
    jobs = {
        "decode_jpeg": lambda: decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device),
        "decode_batch": lambda: decode_batch(data, [1] * 32, spec, device),
        "decode_batch, switch 0.5 ms": lambda: decode_batch(data, [1] * 32, spec, device),
    }

    def spin(seconds: float) -> float:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n / seconds

    print(f"python loop alone: {spin(2.0):,.0f}/s", flush=True)
    for name, job in jobs.items():
        job()
        torch.cuda.synchronize()
        done, stop = [0], threading.Event()

        def loop(job=job, done=done, stop=stop) -> None:
            while not stop.is_set():
                job()
                done[0] += 32

        thread = threading.Thread(target=loop)
        sys.setswitchinterval(0.0005 if "switch" in name else 0.005)
        thread.start()
        beside = spin(3.0)
        stop.set()
        thread.join()
        print(f"python loop beside {name}: {beside:,.0f}/s; {name} {done[0] / 3.0:.0f} img/s", flush=True)


if __name__ == "__main__":
    {
        "gil": gil,
        "one": one,
        "forward": forward,
        "decoders": decoders,
        "e2e": e2e,
        "families": families,
        "gpus": gpus,
        "variants": variants,
        "cpu": cpu,
        "httpparts": httpparts,
        "searchparts": searchparts,
        "serveparts": serveparts,
        "gelufusion": gelufusion,
        "dups": dups,
    }[sys.argv[1]]()
