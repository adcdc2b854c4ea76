"""Scoring the search index's rows: torch products over its blocks, on the calling thread.

Every product runs in torch, on the calling thread's OpenMP team, none in numpy: numpy's BLAS
keeps threads of its own that spin for a while after each product, and beside the text tower's
team they took the cores from the next query's text (two Xeon cores: text 22.8 ms, search
13.9 ms, one thread doing both 90.9 ms; docs/how-it-works.md, "One thread for the CPU's tensors").
Rows are float16 or float32 (:func:`half_rows_faster`); the index keeps them in blocks.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import numpy as np


def float32(rows: np.ndarray) -> np.ndarray:
    """Rows as float32 (float16 rows converted by torch: F16C on every core, ~7x numpy's speed)."""
    if rows.dtype == np.float32:
        return rows
    import torch

    out = np.empty(rows.shape, dtype=np.float32)
    torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(rows)))
    return out


@functools.cache
def half_rows_faster() -> bool:
    """Whether torch scores float16 rows at least as fast as float32 ones on this CPU: timed once
    per process, on 16,384 random rows of 768 (50 MB in float32, past most caches), each dtype
    three times in turn (~110 ms on the 2-core EPYC). Where float16 is converted as it loads
    (F16C; the 2-core EPYC) it reads half the bytes: 7.3 against 18 ms at 100k rows. Where torch
    hands float16 to oneDNN (CPUs with AVX512-FP16, such as the device host's Xeon) it took 20
    against 13.6 ms."""
    import torch

    rows = torch.rand(16384, 768, generator=torch.Generator().manual_seed(0))  # values do not matter
    kinds = {torch.float32: (rows, rows[0].clone()), torch.float16: (rows.half(), rows[0].half())}
    times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in kinds}
    for _ in range(3):
        for dtype, (matrix, vector) in kinds.items():
            start = time.perf_counter()
            torch.mv(matrix, vector)
            times[dtype].append(time.perf_counter() - start)
    return min(times[torch.float16]) <= min(times[torch.float32])


def _spans(blocks: Sequence[np.ndarray], n: int) -> list[tuple[int, np.ndarray]]:
    """Each block's first row number and its rows that hold one of the ``n`` rows."""
    out, start = [], 0
    for block in blocks:
        if start >= n:
            break
        out.append((start, block[: min(len(block), n - start)]))
        start += len(block)
    return out


def scores(blocks: Sequence[np.ndarray], n: int, vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Every float32 row's score for each vector, one row of scores per vector: the rows are read
    once for all of them."""
    import torch

    out = np.empty((len(vectors), n), dtype=np.float32)
    q = torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32) for v in vectors]))
    for start, block in _spans(blocks, n):
        rows = torch.from_numpy(block)
        if len(vectors) == 1:
            torch.mv(rows, q[0], out=torch.from_numpy(out[0, start : start + len(rows)]))
        else:
            out[:, start : start + len(rows)] = torch.mm(rows, q.T).T.numpy()
    return out


def half_scores(blocks: Sequence[np.ndarray], n: int, vector: np.ndarray) -> np.ndarray:
    """Every float16 row's score in float16 (within ``vectors.HALF_ERROR`` of the exact one),
    as float32."""
    import torch

    q = torch.from_numpy(np.asarray(vector, dtype=np.float32)).half()
    half = np.empty(n, dtype=np.float16)
    for start, block in _spans(blocks, n):
        torch.mv(torch.from_numpy(block), q, out=torch.from_numpy(half[start : start + len(block)]))
    return half.astype(np.float32)


def exact(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """The float32 scores of a few rows (float16 or float32)."""
    import torch

    out = np.zeros(len(rows), dtype=np.float32)
    if len(rows):
        q = torch.from_numpy(np.asarray(vector, dtype=np.float32))
        torch.mv(torch.from_numpy(float32(rows)), q, out=torch.from_numpy(out))
    return out
