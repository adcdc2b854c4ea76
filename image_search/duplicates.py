"""Near-duplicate groups: the same picture at another resolution or compression, or a burst.

Two photos are near-duplicates when their CLIP vectors agree (cosine >= ``similarity``) and their
perceptual fingerprints confirm it (:mod:`image_search.fingerprint`): CLIP alone groups two
different sunsets over the same sea, the fingerprint alone groups recoloured variants. Identical
files (same content hash) are always one group. Pairs join into groups transitively.

Finding the pairs is an exact self-join of the vector matrix, in row blocks against the rows after
them (the upper triangle). On CPUs with AVX-512 BF16 the block products run in bfloat16, three to
four times faster than float32; a bfloat16 score is within 0.012 of the true cosine (inputs and
output rounded, each relative error <= 2^-8, |x.y| <= 1), so candidates are taken 0.02 below the
threshold and every candidate is checked again in float32: the result is the exact one.
Measured: ``benchmarks/test_duplicates.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import BadValue
from .fingerprint import COLOUR, HASH_BITS, Fingerprints

if TYPE_CHECKING:
    from .library import Library

SIMILARITY = 0.92
BLOCK = 1024
MARGIN = 0.02
# Candidate pairs kept at most (32 MB of indices): a threshold so low that more pairs pass is
# refused instead of filling memory with n² pairs.
MAX_PAIRS = 2_000_000

Progress = Callable[[int, int], None]  # (done, total)


class TooManyPairs(BadValue):
    """The similarity asked for is so low that almost every pair of photos passes it."""


@dataclass(frozen=True)
class Settings:
    similarity: float = SIMILARITY
    hash_bits: int = HASH_BITS
    colour: float = COLOUR


@dataclass
class Grouping:
    groups: list[list[int]]  # row indices, each group sorted by the caller's preference later
    compared: int  # rows that took part in the self-join (fingerprinted, not flat)
    candidates: int  # pairs whose vectors agreed
    confirmed: int  # pairs the fingerprints confirmed
    seconds: float


def _bf16_fast() -> bool:
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def similar_pairs(
    matrix: np.ndarray,
    threshold: float,
    *,
    bf16: bool | None = None,
    max_pairs: int = MAX_PAIRS,
    on_progress: Progress | None = None,
) -> np.ndarray:
    """Every pair (i < j) of rows of a unit-vector matrix with cosine >= ``threshold``: an
    (m, 2) int array. Exact (see the module's note on bfloat16). :class:`TooManyPairs` when more
    than ``max_pairs`` candidates pass, before they are gathered. ``on_progress(done, total)``
    after each block, in compared pairs (the later blocks have fewer)."""
    import torch

    n = len(matrix)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    exact = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
    use_bf16 = _bf16_fast() if bf16 is None else bf16
    work = exact.to(torch.bfloat16) if use_bf16 else exact
    floor = threshold - MARGIN if use_bf16 else threshold - 1e-6
    found: list[np.ndarray] = []
    total = 0
    buffer = torch.empty((BLOCK, n), dtype=work.dtype)
    pairs_total = n * (n - 1) // 2
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        if on_progress is not None:
            # Pairs compared before this block: all those with a first row above ``start``.
            on_progress(pairs_total - (n - start) * (n - start - 1) // 2, pairs_total)
        scores = buffer[: stop - start, : n - start]
        torch.matmul(work[start:stop], work[start:].T, out=scores)
        # Only pairs after the diagonal: the square block's lower triangle and diagonal go.
        square = scores[:, : stop - start]
        square.masked_fill_(~torch.ones_like(square, dtype=torch.bool).triu(1), -2.0)
        rows = torch.nonzero(scores.amax(dim=1) >= floor).flatten()
        if not len(rows):
            continue
        passing = scores[rows] >= floor
        total += int(passing.sum())
        if total > max_pairs:
            raise TooManyPairs(
                f"similarity {threshold:g} finds more than {max_pairs:,} candidate pairs among {n:,} "
                "photos: raise it"
            )
        hits = torch.nonzero(passing)
        i, j = rows[hits[:, 0]] + start, hits[:, 1] + start
        true = (exact[i] * exact[j]).sum(dim=1)  # float32, the exact test
        keep = true >= threshold
        found.append(torch.stack([i[keep], j[keep]], dim=1).numpy())
    if on_progress is not None:
        on_progress(pairs_total, pairs_total)
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return int(root)

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group(
    matrix: np.ndarray,
    fingerprints: Sequence[bytes | None],
    content_hashes: Sequence[str | None],
    settings: Settings = Settings(),
    *,
    bf16: bool | None = None,
    on_progress: Progress | None = None,
) -> Grouping:
    """Near-duplicate groups among the rows of ``matrix`` (unit vectors), as lists of row indices
    (groups of two or more, each in row order; groups ordered by their first row)."""
    started = time.perf_counter()
    n = len(matrix)
    prints = Fingerprints(fingerprints)
    union = _Union(n)
    first_of: dict[str, int] = {}
    for i, content in enumerate(content_hashes):  # identical files
        if content:
            union.join(first_of.setdefault(content, i), i)
    rows = np.flatnonzero(prints.textured)
    pairs = (
        similar_pairs(matrix[rows], settings.similarity, bf16=bf16, on_progress=on_progress)
        if len(rows) > 1
        else None
    )
    candidates = confirmed = 0
    if pairs is not None and len(pairs):
        a, b = rows[pairs[:, 0]], rows[pairs[:, 1]]
        ok = prints.confirm(a, b, settings.hash_bits, settings.colour)
        candidates, confirmed = len(pairs), int(ok.sum())
        for x, y in zip(a[ok].tolist(), b[ok].tolist(), strict=True):
            union.join(x, y)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(union.find(i), []).append(i)
    groups = sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])
    return Grouping(groups, len(rows), candidates, confirmed, time.perf_counter() - started)


def keep_first(width: int | None, height: int | None, size: int | None, taken_at: float) -> tuple[float, ...]:
    """Sort key within a group: the copy to keep comes first (most pixels, then the largest
    file, then the oldest; ``taken_at`` in epoch seconds, NaN when unknown)."""
    taken = taken_at if not math.isnan(taken_at) else math.inf
    return (-(width or 0) * (height or 0), -(size or 0), taken)


@dataclass
class Groups:
    """A grouping of the library as it was at ``version``: keys per group, best copy first, the
    largest groups first."""

    version: int
    settings: Settings
    groups: list[list[str]]
    grouping: Grouping
    without_fingerprint: int


def group_library(library: Library, settings: Settings, on_progress: Progress | None = None) -> Groups:
    """The library's near-duplicate groups, off the event loop (the web page's finder thread, the
    command line's): from a consistent copy of the index, so searches and the indexer go on."""
    version = library.version
    keys, matrix = library.index.snapshot()
    # Removed since the copy: left out; so is the RAW of a RAW + JPEG pair (one shot, not a copy
    # to delete: its JPEG stands for it). Membership tests only: the loop may change the set.
    hidden = library.stacks.hidden
    found = [(i, library.meta.get(k)) for i, k in enumerate(keys) if k not in hidden]
    rows = [i for i, meta in found if meta is not None]
    metas = {keys[i]: meta for i, meta in found if meta is not None}
    keys = [keys[i] for i in rows]
    grouping = group(
        matrix[rows],
        [metas[k].fingerprint for k in keys],
        [metas[k].hash for k in keys],
        settings,
        on_progress=on_progress,
    )
    rank = lambda k: keep_first(metas[k].width, metas[k].height, metas[k].size, metas[k].taken_at)  # noqa: E731
    groups = sorted(
        (sorted((keys[i] for i in g), key=rank) for g in grouping.groups),
        key=lambda g: (-len(g), metas[g[0]].path),
    )
    missing = sum(m.fingerprint is None for m in metas.values())
    return Groups(version, settings, groups, grouping, missing)
