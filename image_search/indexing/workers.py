"""What runs beside the indexer's event loop: the decoding workers' start-up (a process pool),
whole-file reads for nvJPEG and the GPU path's thumbnail encoding (threads)."""

from __future__ import annotations

import os
import signal

import numpy as np

from ..lifeline import die_with_parent
from ..pictures.imaging import configure_pillow
from ..pictures.thumbs import Thumbnails

WORKER_NICENESS = 10


def worker_start(decoder_threads: int = 1, forked_by_server: bool = False) -> None:
    """In each decoding worker: Pillow as the indexer needs it (libheif with this worker's share
    of the cores), and a lower priority, so the CPU goes to searches (under `serve`) and the
    desktop first. A niced worker still takes every idle cycle, so indexing alone runs as fast as
    before. Forked by the forkserver, it dies with it (:mod:`.lifeline`)."""
    if forked_by_server:
        die_with_parent()
    configure_pillow(heif_threads=decoder_threads)
    # Ctrl-C reaches the whole process group: the parent stops its workers itself. A worker that
    # took the KeyboardInterrupt printed "Process ForkServerProcess-N: Traceback ..." on exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # pragma: no cover - a sandbox may forbid it
        pass


def worker_ping() -> None:
    """Nothing: submitted once per worker so the pool starts them all at once, ahead of the files."""


def read_file(path: str) -> bytearray:
    """The whole file, into a bytearray that nvJPEG's input tensor can share without a copy."""
    with open(path, "rb") as fh:
        data = bytearray(os.fstat(fh.fileno()).st_size)
        n = fh.readinto(data)
        if n < len(data):  # it shrank since: what was read
            del data[n:]
        more = fh.read()  # or grew
        return data + more if more else data


def save_gpu_thumbnail(thumbnails: Thumbnails, pixels: np.ndarray, content_hash: str) -> bool:
    """A GPU-decoded photo's thumbnail (already shrunk on the GPU), encoded on a thread."""
    from PIL import Image

    return thumbnails.save(Image.fromarray(pixels), content_hash)
