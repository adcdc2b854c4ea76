"""Every pair of 64-bit perceptual hashes within a few bits of each other, without comparing
every pair: the first stage of near-duplicate grouping in a big library.

Multi-index hashing (Norouzi, Punjani and Fleet, CVPR 2012): the 64 bits are cut into ``m``
chunks; two hashes at most ``r`` bits apart differ in at most ``r // m`` bits of at least one
chunk (pigeonhole). Each chunk sorts the rows by its value; a row is probed against the rows
whose value differs from its own in at most ``r // m`` of the chunk's bits (one probe per such
mask), and every pair met is checked on the whole hash. A pair is kept only by the first chunk
that can find it, so each comes out once. The work is about ``probes x n`` plus the pairs that
share a probed value: for 1M hashes spread like random bits and ``r = 10``, three chunks of
21-22 bits probed within 3 bits (4,686 probes a row, ~2·10^9 pairs met), against 5·10^11 pairs
compared one by one. How to cut is chosen by that estimate; few rows, or a wide radius, are
compared pair by pair. Hashes bunched into few values (real photos are not random bits) make
more pairs meet than estimated: the caller counts what comes out and may stop early.

Pure numpy; the probes run on ``threads`` threads (numpy lets go of the GIL in them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

BITS = 64
# Costs in nanoseconds on this project's 2-core machine (measured at 3k-1M rows): a probe's
# fixed cost, a row probed, a pair met, a pair compared one by one.
PROBE_COST = 200_000
ROW_COST = 8
MET_COST = 8
BRUTE_COST = 10
BRUTE_ROWS = 1024  # rows of one block compared against every later row
SLICE_PAIRS = 4_000_000  # pairs met expanded at once (~150 MB of indices)

Progress = Callable[[int, int], None]  # (done, total)


class Crowded(Exception):
    """The hashes are bunched: far more pairs meet in the probes than hashes spread like random
    bits would make meet (the caller's ``max_met``)."""


@dataclass(frozen=True)
class Plan:
    """How to find the pairs: ``chunks`` widths (empty: pair by pair) and the estimated cost."""

    chunks: tuple[int, ...]
    cost: float
    met: float  # pairs the probes meet (or compared pair by pair)


def _masks(width: int, within: int) -> list[int]:
    """Every value of ``width`` bits with at most ``within`` bits set, fewest first."""
    return [
        sum(1 << b for b in bits)
        for d in range(within + 1)
        for bits in itertools.combinations(range(width), d)
    ]


def _widths(m: int) -> tuple[int, ...]:
    base, extra = divmod(BITS, m)
    return tuple(base + (1 if i >= m - extra else 0) for i in range(m))


def plan(n: int, radius: int, sample: np.ndarray | None = None) -> Plan:
    """The cheapest way, by the estimate in the module's note, for ``n`` hashes. How many pairs
    meet in a chunk's probes is measured on ``sample`` (some of the hashes: their bits may be
    biased or tied, as a photo library's are) or, without one, taken as for random bits."""
    pairs = n * (n - 1) / 2
    best = Plan((), BRUTE_COST * pairs, pairs)
    sampled = None if sample is None else _pair_xor(sample)
    for m in range(3, 9):  # 3 chunks: 22 bits at most, a table of 4M values
        within = radius // m
        widths = _widths(m)
        probes = sum(math.comb(w, d) for w in widths for d in range(within + 1))
        if sampled is None:
            met = sum(math.comb(w, d) * pairs / 2**w for w in widths for d in range(within + 1))
        else:
            met = _meeting_share(sampled, widths, within) * pairs
        cost = probes * (PROBE_COST + ROW_COST * n) + MET_COST * met
        if cost < best.cost:
            best = Plan(widths, cost, met)
    return best


def _pair_xor(sample: np.ndarray) -> np.ndarray:
    """The XOR of every pair ``i < j`` of ``sample``'s hashes."""
    i, j = np.triu_indices(len(sample), 1)
    return sample[i] ^ sample[j]


def _meeting_share(pair_xor: np.ndarray, widths: tuple[int, ...], within: int) -> float:
    """The share of sampled pairs (their hashes' XOR) meeting in the probes, once per chunk in
    which they do."""
    if not len(pair_xor):
        return 0.0
    met, shift = 0, 0
    for width in widths:
        bits = np.uint64(((1 << width) - 1) << shift)
        met += int((np.bitwise_count(pair_xor & bits) <= within).sum())
        shift += width
    return met / len(pair_xor)


def share_within(sample: np.ndarray, radius: int) -> float:
    """The share of pairs of ``sample`` within ``radius`` bits of each other."""
    x = _pair_xor(sample)
    return float((np.bitwise_count(x) <= radius).mean()) if len(x) else 0.0


def close_pairs(
    hashes: np.ndarray,
    radius: int,
    *,
    chosen: Plan | None = None,
    threads: int = 2,
    max_met: float = math.inf,
    on_progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Blocks of ``(k, 2)`` int64 row pairs ``i < j`` whose hashes (uint64) differ in at most
    ``radius`` bits; every such pair exactly once. :class:`Crowded` (before the probe that would
    pass it) when the probes would meet more than ``max_met`` pairs in all. ``chosen``: the
    plan (default: :func:`plan` for random bits)."""
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return
    chosen = chosen or plan(n, radius)
    if not chosen.chunks:
        yield from _pair_by_pair(h, radius, on_progress)
    else:
        yield from _chunked(h, radius, chosen.chunks, threads, max_met, on_progress)


def _pair_by_pair(h: np.ndarray, radius: int, on_progress: Progress | None) -> Iterator[np.ndarray]:
    n = len(h)
    for start in range(0, n - 1, BRUTE_ROWS):
        stop = min(start + BRUTE_ROWS, n)
        if on_progress is not None:
            on_progress(start, n)
        near = np.bitwise_count(h[start:stop, None] ^ h[None, start + 1 :]) <= radius
        i, j = np.nonzero(near)
        j += start + 1
        i += start
        keep = i < j
        if keep.any():
            yield np.stack([i[keep], j[keep]], axis=1).astype(np.int64)
    if on_progress is not None:
        on_progress(n, n)


def _chunked(
    h: np.ndarray,
    radius: int,
    widths: tuple[int, ...],
    threads: int,
    max_met: float = math.inf,
    on_progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    within = radius // len(widths)
    shifts = [int(s) for s in np.cumsum((0, *widths[:-1]))]
    chunk_bits = [np.uint64(((1 << w) - 1) << s) for w, s in zip(widths, shifts, strict=True)]
    masks = [_masks(w, within) for w in widths]
    total, done = sum(map(len, masks)), 0
    met = [0]  # pairs met so far, added to by the probes' threads (a guard: a lost add is harmless)
    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    try:
        for c, (width, shift) in enumerate(zip(widths, shifts, strict=True)):
            table = _Table(h, shift, width)

            def probe(mask: int, table: _Table = table, c: int = c) -> np.ndarray:
                pairs = table.probe(mask, radius, met, max_met)
                return _keep_first_chunk(pairs, h, chunk_bits[:c], within)

            for pairs in pool.map(probe, masks[c]):
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                if len(pairs):
                    yield pairs
    finally:  # stopped early (crowded, or the caller stopped reading): no probe left running
        pool.shutdown(cancel_futures=True)


def _keep_first_chunk(pairs: np.ndarray, h: np.ndarray, earlier: list[np.uint64], within: int) -> np.ndarray:
    """The pairs no earlier chunk finds (an earlier chunk, its bits in ``earlier``, finds those
    within ``within`` bits in it)."""
    if not earlier or not len(pairs):
        return pairs
    x = h[pairs[:, 0]] ^ h[pairs[:, 1]]
    found_before = np.zeros(len(pairs), dtype=bool)
    for bits in earlier:
        found_before |= np.bitwise_count(x & bits) <= within
    return pairs[~found_before]


class _Table:
    """The rows sorted by one chunk's value, with where each value's rows start."""

    def __init__(self, h: np.ndarray, shift: int, width: int) -> None:
        key = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]
        self.hash = h[self.order]
        counts = np.bincount(key, minlength=1 << width)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.counts = counts

    def probe(self, mask: int, radius: int, met: list[int], max_met: float) -> np.ndarray:
        """Row pairs ``i < j`` (original rows) within ``radius`` whose chunk values differ by
        ``mask``; each unordered pair of values once (from the smaller), or, for mask 0, each
        pair within one value once. Adds the pairs met to ``met[0]``; :class:`Crowded` instead
        when that would pass ``max_met``."""
        key = self.key
        if mask == 0:
            # Sorted positions p < q of one value: q runs from p + 1 to the value's end.
            ends = self.starts[key + 1]
            first = np.arange(len(key))
            count = ends - first - 1
            start = first + 1
        else:
            other = key ^ mask
            first = np.flatnonzero(other > key)
            other = other[first]
            count = self.counts[other]
            start = self.starts[other]
        nonzero = np.flatnonzero(count)
        first, count, start = first[nonzero], count[nonzero], start[nonzero]
        total = int(count.sum())
        met[0] += total
        if met[0] > max_met:
            raise Crowded(f"{met[0]:,} pairs met in the hashes' tables (expected at most {max_met:,.0f})")
        pieces = [
            self._near(first[a:b], count[a:b], start[a:b], radius)
            for a, b in _slices(np.cumsum(count), SLICE_PAIRS)
        ]
        return np.concatenate(pieces) if pieces else np.zeros((0, 2), dtype=np.int64)

    def _near(self, first: np.ndarray, count: np.ndarray, start: np.ndarray, radius: int) -> np.ndarray:
        p = np.repeat(first, count)
        offsets = np.arange(len(p)) - np.repeat(np.cumsum(count) - count, count)
        q = np.repeat(start, count) + offsets
        near = np.bitwise_count(self.hash[p] ^ self.hash[q]) <= radius
        i, j = self.order[p[near]], self.order[q[near]]
        return np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)


def _slices(ends: np.ndarray, most: int) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of items whose counts (cumulative ``ends``) add up to about ``most`` each
    (one item more when a single item passes it)."""
    out, a, n = [], 0, len(ends)
    while a < n:
        before = int(ends[a - 1]) if a else 0
        b = max(a + 1, int(np.searchsorted(ends, before + most, side="right")))
        out.append((a, min(b, n)))
        a = b
    return out
