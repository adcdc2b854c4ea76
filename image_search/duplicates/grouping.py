"""Near-duplicate groups: the same picture at another resolution or compression, or a burst.

Two photos are near-duplicates when their image vectors agree (cosine >= ``similarity``, measured
per library by :mod:`image_search.duplicates.calibration`) and their
perceptual fingerprints confirm it (:mod:`image_search.pictures.fingerprint`): CLIP alone groups two
different sunsets over the same sea, the fingerprint alone groups recoloured variants. Identical
files (same content hash) are always one group. Pairs join into groups transitively.

The pairs are found from the fingerprints first when they can be: a pair must have hashes within
``hash_bits``, and :mod:`image_search.duplicates.hashjoin` finds every such pair without comparing every pair
(multi-index hashing); each is then checked on the colours and the vectors (float32). At 1M photos
that is about a minute here where comparing every pair of vectors took most of an hour. When the
hashes are too bunched for that (a sample of rows says so, or the probes meet far more pairs than
estimated) or ``hash_bits`` is wide, the vectors find the candidates instead: an exact
self-join (:mod:`image_search.duplicates.vectorjoin`).
Measured: ``benchmarks/test_duplicates.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..pictures.fingerprint import COLOUR, HASH_BITS, Fingerprints
from ..search.scoring import float32
from . import hashjoin
from .vectorjoin import similar_pairs

if TYPE_CHECKING:
    from ..search.library import Library
    from ..search.vectors import VectorIndex

log = logging.getLogger(__name__)

SIMILARITY = 0.92
# Pairs with close hashes, estimated from a sample of rows, up to which the hashes find the
# candidates; the probes may meet this many times the pairs the sample says they will (and 10M
# more) before the vectors take over.
HASH_FIRST_PAIRS = 20_000_000
MET_SLACK = 4
SAMPLE_ROWS = 2_000  # rows whose hashes estimate how many pairs are close
# From this many photos, hashes that no chunking helps (a wide ``hash_bits``) are not compared
# pair by pair: the vectors' join on bounds does that work faster (10 ns a pair against 5 here).
HASH_PAIRS_FROM = 20_000

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class Settings:
    similarity: float = SIMILARITY
    hash_bits: int = HASH_BITS
    colour: float = COLOUR


@dataclass
class Grouping:
    groups: list[list[int]]  # row indices, each group sorted by the caller's preference later
    compared: int  # rows that took part in the self-join (fingerprinted, not flat)
    candidates: int  # pairs the first stage passed: vectors agreeing, or fingerprints agreeing
    confirmed: int  # pairs both witnesses confirmed
    seconds: float
    first: str = "vectors"  # which witness found the candidates: "vectors" or "fingerprints"


@dataclass
class LiveRows:
    """The rows of ``keys`` as ``index`` holds them when they are read: what :func:`group_library`
    groups, so that the hashes' candidates read only their own rows (a photo gone meanwhile reads
    as zeros and joins nothing) and every row is read only when the vectors find the candidates."""

    index: VectorIndex
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.index.rows_of([self.keys[i] for i in rows.tolist()])


def _take(matrix: np.ndarray | LiveRows, rows: np.ndarray) -> np.ndarray:
    """Rows of ``matrix`` as float32 (float16 rows, the store's values, convert exactly)."""
    return matrix.take(rows) if isinstance(matrix, LiveRows) else float32(matrix[rows])


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
    matrix: np.ndarray | LiveRows,
    fingerprints: Sequence[bytes | None],
    content_hashes: Sequence[str | None],
    settings: Settings = Settings(),
    *,
    bf16: bool | None = None,
    on_progress: Progress | None = None,
) -> Grouping:
    """Near-duplicate groups among the rows of ``matrix`` (unit vectors, float32 or float16: both
    are scored in float32), as lists of row indices
    (groups of two or more, each in row order; groups ordered by their first row)."""
    started = time.perf_counter()
    n = len(matrix)
    prints = Fingerprints(fingerprints)
    union = _Union(n)
    first_of: dict[str, int] = {}
    copy = np.zeros(n, dtype=bool)
    for i, content in enumerate(content_hashes):  # identical files: one group without a comparison
        if content:
            union.join(first_of.setdefault(content, i), i)
            copy[i] = first_of[content] != i
    # One of each set of identical files looks for the others' near-duplicates: 4,000 copies of
    # one photo made 7,998,000 candidate pairs (36 s, 1.29 GB), now none.
    rows = np.flatnonzero(prints.textured & ~copy)
    by_prints = _pairs_from_prints(matrix, prints, rows, settings, on_progress) if len(rows) > 1 else None
    first = "fingerprints"
    if by_prints is not None:
        confirmed_pairs, candidates = by_prints
    else:
        first, candidates, confirmed_pairs = "vectors", 0, np.zeros((0, 2), dtype=np.int64)
        pairs = (
            similar_pairs(_take(matrix, rows), settings.similarity, bf16=bf16, on_progress=on_progress)
            if len(rows) > 1
            else None
        )
        if pairs is not None and len(pairs):
            a, b = rows[pairs[:, 0]], rows[pairs[:, 1]]
            ok = prints.confirm(a, b, settings.hash_bits, settings.colour)
            candidates, confirmed_pairs = len(pairs), np.stack([a[ok], b[ok]], axis=1)
    for x, y in confirmed_pairs.tolist():
        union.join(x, y)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(union.find(i), []).append(i)
    groups = sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])
    return Grouping(groups, len(rows), candidates, len(confirmed_pairs), time.perf_counter() - started, first)


def _pairs_from_prints(
    matrix: np.ndarray | LiveRows,
    prints: Fingerprints,
    rows: np.ndarray,
    settings: Settings,
    on_progress: Progress | None,
) -> tuple[np.ndarray, int] | None:
    """The confirmed pairs (rows of ``matrix``) found from the hashes first, and how many pairs
    the fingerprints confirmed before the vectors were asked; None when the hashes cannot find
    the candidates cheaply (the module's note). Nothing is gathered before it is confirmed, so
    a low ``similarity`` cannot fill memory here (:class:`TooManyPairs` is the vectors' guard)."""
    import torch

    hashes, bits = prints.hash[rows], settings.hash_bits
    n = len(rows)
    sample = (
        hashes if n <= SAMPLE_ROWS else hashes[np.random.default_rng(2).choice(n, SAMPLE_ROWS, replace=False)]
    )
    expected = hashjoin.share_within(sample, bits) * n * (n - 1) / 2
    if expected > HASH_FIRST_PAIRS:
        log.info("near-duplicate pairs: ~%d pairs of close hashes; the vectors find the candidates", expected)
        return None
    plan = hashjoin.plan(n, bits, sample)
    if not plan.chunks and n >= HASH_PAIRS_FROM:
        log.info(
            "near-duplicate pairs: %d hash bits leave nothing to probe; the vectors find the candidates", bits
        )
        return None
    found, candidates = [], 0
    try:
        for block in hashjoin.close_pairs(
            hashes,
            bits,
            chosen=plan,
            threads=_threads(),
            max_met=MET_SLACK * plan.met + 1e7,
            on_progress=on_progress,
        ):
            a, b = rows[block[:, 0]], rows[block[:, 1]]
            ok = prints.confirm(a, b, bits, settings.colour)
            a, b = a[ok], b[ok]
            candidates += len(a)
            # float32 (float16 rows converted exactly), as the vectors' own check
            x, y = torch.from_numpy(_take(matrix, a)), torch.from_numpy(_take(matrix, b))
            true = (x * y).sum(dim=1).numpy()
            keep = true >= settings.similarity
            found.append(np.stack([a[keep], b[keep]], axis=1))
    except hashjoin.Crowded as crowded:
        log.info("near-duplicate pairs: %s; the vectors find the candidates", crowded)
        return None
    return (np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)), candidates


def _threads() -> int:
    import os

    return max(1, min(4, len(os.sched_getaffinity(0))))


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
    command line's), reading the rows it needs from the index as they are then (a photo removed
    meanwhile joins nothing), so searches and the indexer go on and nothing is copied whole."""
    version = library.version
    keys = library.index.key_list()
    # Removed since: left out (their rows read as zeros); so is the RAW of a RAW + JPEG pair (one
    # shot, not a copy to delete: its JPEG stands for it). Membership tests only: the loop may
    # change the set.
    hidden = library.stacks.hidden
    found = [(i, library.meta.get(k)) for i, k in enumerate(keys) if k not in hidden]
    rows = [i for i, meta in found if meta is not None]
    metas = {keys[i]: meta for i, meta in found if meta is not None}
    keys = [keys[i] for i in rows]
    grouping = group(
        LiveRows(library.index, keys),
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
