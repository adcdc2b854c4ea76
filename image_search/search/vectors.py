"""The in-memory search index: a matrix of unit vectors, cosine by matmul.

Built from the store at start and kept in step with it (``upsert``/``remove``). Rows are float16
(the store's values, 150 MB at 100k x 768) or float32, whichever torch scores faster on this CPU
(:mod:`.scoring`); an exact query at 100k takes 7-14 ms on 2 cores. Past ``approximate_from`` rows
(an exact query costs ~55 ms at 300k, ~170 ms at 1M) a query first asks compact codes of every row
for its best few thousand candidates (``coarse.Codes``) and scores only those, exactly;
docs/scale.md.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import coarse, scoring

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """One search: a unit vector, how many results, an optional row mask and score floor."""

    vector: np.ndarray
    k: int = 50
    allowed: np.ndarray | None = None
    min_score: float | None = None


BLOCK = 16384  # rows per block of the matrix
APPROXIMATE_FROM = 150_000  # rows from which a search starts from codes (exact: ~30 ms here)
DEPTH = 5_000  # candidates a query scores exactly at least (16 per result asked for, if more)
DEPTH_PER_RESULT = 16
# A float16 score against the exact one, for unit vectors: the query rounded to float16 moves it
# by at most 2^-11 (|x.dq| <= 2^-11 |x||q|), the result rounded by at most 2^-12 (|s| <= 1);
# torch sums in float32 (on x86; tests/test_coarse.py fails where it does not). 4.9e-4 + 2.4e-4,
# rounded up.
HALF_ERROR = 1e-3
REBUILD_AFTER = 0.02  # new codes once this share of rows is scored exactly beside them


def _mapped_copy_on_write(matrix: np.ndarray) -> bool:
    """A float16 file mapping whose views may be written without writing the file."""
    return (
        isinstance(matrix, np.memmap)
        and matrix.mode == "c"
        and matrix.dtype == np.float16
        and matrix.flags.c_contiguous
        and matrix.flags.writeable
    )


class VectorIndex:
    """Keys and their L2-normalised embeddings; top-k by cosine similarity."""

    def __init__(
        self,
        dim: int = 0,
        approximate_from: int = APPROXIMATE_FROM,
        depth: int = DEPTH,
        half: bool | None = None,
    ) -> None:
        """``half``: float16 rows (exact all the same: the store holds float16), float32 rows, or
        None for whichever this CPU scores faster."""
        self.dim = dim
        self.approximate_from = approximate_from
        self.depth = depth
        self._keys: list[str] = []
        self._pos: dict[str, int] = {}
        # Rows live in fixed-size blocks: adding to 100k rows fills the last block or starts a
        # new one, never copies the 300 MB matrix (a copy stalled searches ~0.8 s under `serve`).
        self._blocks: list[np.ndarray] = []
        # float16 (what the store holds, so no less exact; half the memory, 1.5 GB at 1M x 768)
        # for an index that is big when built or where it scores faster; else float32. Chosen
        # when first needed, on the thread that builds or searches (the timing runs torch).
        self._half = half
        self._lock = threading.Lock()
        # The first stage past ``approximate_from`` rows: codes of rows 0..codes.size-1 as they
        # were when made; rows written or moved since (``_stale``) and rows past ``codes.size``
        # are always scored exactly. ``_touched`` collects changes while new codes are made.
        self._codes: coarse.Codes | None = None
        self._stale: set[int] = set()
        self._touched: set[int] | None = None
        self._encoding: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    @property
    def keys(self) -> list[str]:
        return self._keys

    def position(self, key: str) -> int | None:
        return self._pos.get(key)

    @classmethod
    def build(
        cls,
        keys: Sequence[str],
        matrix: np.ndarray,
        approximate_from: int = APPROXIMATE_FROM,
        half: bool | None = None,
    ) -> VectorIndex:
        """From keys and their rows (float16 or float32). A big index built from a file mapped
        copy-on-write (the library's snapshot, ``np.load(mmap_mode="c")``) keeps its rows there:
        its blocks are views of the file, paged in by the kernel as searches read them and
        dropped by it under memory pressure; a row written later is copied into private memory
        (its page alone), the file is never written. Any other source is copied."""
        import torch

        big = len(matrix) >= approximate_from
        index = cls(matrix.shape[1] if matrix.size else 0, approximate_from, half=True if big else half)
        index._keys = list(keys)
        index._pos = {k: i for i, k in enumerate(index._keys)}
        mapped = 0
        if index._dtype == np.float16 and _mapped_copy_on_write(matrix):
            mapped = len(matrix) // BLOCK * BLOCK
            index._blocks = [matrix[start : start + BLOCK] for start in range(0, mapped, BLOCK)]
        with warnings.catch_warnings():  # a read-only source (np.frombuffer) is only read here
            warnings.simplefilter("ignore", UserWarning)
            for start in range(mapped, len(matrix), BLOCK):
                rows = np.ascontiguousarray(matrix[start : start + BLOCK])
                block = index._new_block()
                # torch converts float16 to float32 ~7x faster than numpy (F16C, every core).
                torch.from_numpy(block[: len(rows)]).copy_(torch.from_numpy(rows))
        return index

    @property
    def _dtype(self) -> type[np.floating]:
        if self._half is None:
            self._half = scoring.half_rows_faster()
        return np.float16 if self._half else np.float32

    def _new_block(self) -> np.ndarray:
        block = np.empty((BLOCK, self.dim), dtype=self._dtype)
        self._blocks.append(block)
        return block

    def _row(self, pos: int) -> np.ndarray:
        return self._blocks[pos // BLOCK][pos % BLOCK]

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        rows = [self._row(self._pos[k]) for k in keys if k in self._pos]
        return np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, self.dim), np.float32)

    def key_list(self) -> list[str]:
        """A copy of the keys, in row order."""
        with self._lock:
            return list(self._keys)

    def rows_of(self, keys: Sequence[str], chunk: int = 16_384) -> np.ndarray:
        """The rows of ``keys`` as float32, in that order, each read whole under the lock (a
        chunk of keys at a time, so searches and writes go on between chunks); zeros for a key the
        index no longer holds (a zero vector scores 0 against anything). For work that runs beside
        searches and updates, such as grouping near-duplicates: it reads the rows it needs, not a
        copy of the matrix."""
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        for start in range(0, len(keys), chunk):
            with self._lock:
                for i, key in enumerate(keys[start : start + chunk], start):
                    pos = self._pos.get(key)
                    if pos is not None:
                        out[i] = self._row(pos)
        return out

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            if not self.dim and len(vectors):
                self.dim = vectors.shape[1]
            for key, vec in zip(keys, vectors, strict=True):
                pos = self._pos.get(key)
                if pos is None:
                    pos = len(self._keys)
                    if pos == len(self._blocks) * BLOCK:
                        self._new_block()
                    self._keys.append(key)
                    self._pos[key] = pos
                self._row(pos)[:] = vec
                self._changed(pos)

    def remove(self, keys: Sequence[str]) -> None:
        """Each removed row takes the last row's place: O(removed), not a copy of the matrix."""
        with self._lock:
            for key in keys:
                pos = self._pos.pop(key, None)
                if pos is None:
                    continue
                last = len(self._keys) - 1
                if pos != last:
                    moved = self._keys[last]
                    self._keys[pos] = moved
                    self._row(pos)[:] = self._row(last)
                    self._pos[moved] = pos
                    self._changed(pos)
                self._keys.pop()
            while len(self._blocks) * BLOCK - len(self._keys) >= BLOCK:
                self._blocks.pop()

    def _changed(self, pos: int) -> None:
        """Row ``pos`` holds another vector now: its code (if any) no longer describes it."""
        if self._codes is not None and pos < self._codes.size:
            self._stale.add(pos)
        if self._touched is not None:
            self._touched.add(pos)

    def _maybe_encode(self) -> None:
        """Start making codes on a thread when the index is big and has none, or too many rows
        are scored exactly beside them. Called by searches (a process that never searches never
        makes them; the first search after a start is exact and not slowed by making them)."""
        n = len(self._keys)
        if n < self.approximate_from or self._encoding is not None or not coarse.available(self.dim):
            return
        if self._codes is not None:
            beside = len(self._stale) + max(0, n - self._codes.size)
            if beside <= REBUILD_AFTER * n:
                return
        self._touched = set()
        self._encoding = threading.Thread(
            target=self._encode, args=(list(self._blocks), n), name="vector-codes", daemon=True
        )
        self._encoding.start()

    def _encode(self, blocks: list[np.ndarray], n: int) -> None:
        try:
            codes = coarse.Codes.encode(blocks, n, BLOCK)
        except Exception:  # searches stay exact: slower, never wrong
            log.exception("could not make the search codes; searching every row")
            codes = None
        with self._lock:
            if codes is not None:
                touched = self._touched or set()
                self._stale = {p for p in touched if p < codes.size}
                self._codes = codes
            self._touched = None
            self._encoding = None

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for codes being made (tests, benchmarks); True when none are."""
        thread = self._encoding
        if thread is not None:
            thread.join(timeout)
        return self._encoding is None

    @property
    def nbytes(self) -> int:
        """Memory held: the rows' blocks in memory and the codes (not the blocks that are views
        of a mapped file: :attr:`mapped_bytes`)."""
        held = sum(b.nbytes for b in self._blocks if not isinstance(b, np.memmap))
        return held + (self._codes.nbytes if self._codes else 0)

    @property
    def mapped_bytes(self) -> int:
        """Rows that stay in their mapped file (:meth:`build`): the kernel's page cache, not ours."""
        return sum(b.nbytes for b in self._blocks if isinstance(b, np.memmap))

    @property
    def approximate(self) -> bool:
        """Whether searches start from codes now."""
        return self._codes is not None

    def search(
        self,
        query: np.ndarray,
        k: int = 50,
        *,
        allowed: np.ndarray | None = None,
        min_score: float | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` best keys with their scores, best first. ``allowed`` is a boolean mask over rows."""
        return self.search_many([Query(query, k, allowed, min_score)])[0]

    def search_many(self, queries: Sequence[Query]) -> list[list[tuple[str, float]]]:
        """Several searches at once: the matrix (300 MB at 100k images), or the codes, is read once
        for all of them, which is what bounds a search on a CPU."""
        with self._lock:
            if not self._keys or not queries:
                return [[] for _ in queries]
            n = len(self._keys)
            depths = [self._depth(q, n) for q in queries]
            results: list[list[tuple[str, float]]] = [[] for _ in queries]
            exact = [j for j, d in enumerate(depths) if d is None]
            if exact and self._dtype == np.float16:
                for j in exact:
                    results[j] = self._exact_half(queries[j], n)
            elif exact:
                all_scores = scoring.scores(self._blocks, n, [queries[j].vector for j in exact])
                for scores, j in zip(all_scores, exact, strict=True):
                    results[j] = self._best(scores, None, queries[j], self._allowed(queries[j], n))
            near = [j for j, d in enumerate(depths) if d is not None]
            if near and self._codes is not None:
                found = self._codes.candidates(
                    np.stack([queries[j].vector for j in near]), max(depths[j] or 0 for j in near)
                )
                beside = np.concatenate(
                    [np.fromiter(self._stale, np.int64, len(self._stale)), np.arange(self._codes.size, n)]
                )
                for row, j in zip(found, near, strict=True):
                    results[j] = self._rescore(queries[j], np.concatenate([row[: depths[j]], beside]), n)
            self._maybe_encode()
            return results

    def _depth(self, query: Query, n: int) -> int | None:
        """How many candidates this query scores exactly, or None to score every row."""
        if self._codes is None or query.k <= 0:
            return None
        share = 1.0 if query.allowed is None else np.count_nonzero(query.allowed[:n]) / n
        if share <= 0:
            return None
        depth = math.ceil(max(self.depth, DEPTH_PER_RESULT * query.k) / share)
        return depth if depth <= n // 16 else None  # past that, a float16 scan is faster

    def _exact_half(self, query: Query, n: int) -> list[tuple[str, float]]:
        """Every row scored in float16 by torch (reads 1.5 GB at 1M: ~90 ms, memory bound; a
        float32 copy of each block first took ~1.3 s), then the rows that can be among the best
        scored exactly. A float16 score is within ``HALF_ERROR`` of the exact one, so every row of
        the exact top k scores at least the float16 k-th best less twice that: the result is exact."""
        if query.k <= 0:
            return []
        scores = scoring.half_scores(self._blocks, n, query.vector)
        allowed = self._allowed(query, n)
        if allowed is not None:
            scores[~allowed] = -np.inf
        k = min(query.k, n)
        floor = np.partition(scores, n - k)[n - k] - 2 * HALF_ERROR
        if query.min_score is not None:
            floor = max(floor, query.min_score - HALF_ERROR)
        return self._rescore(query, np.flatnonzero((scores >= floor) & np.isfinite(scores)), n)

    @staticmethod
    def _allowed(query: Query, n: int) -> np.ndarray | None:
        if query.allowed is None or len(query.allowed) == n:
            return query.allowed
        allowed = np.zeros(n, dtype=bool)  # rows came or went since the mask was made
        m = min(n, len(query.allowed))
        allowed[:m] = query.allowed[:m]
        return allowed

    def _rescore(self, query: Query, positions: np.ndarray, n: int) -> list[tuple[str, float]]:
        """Exact scores of the candidate rows (codes' picks, stale rows, rows past the codes)."""
        positions = np.unique(positions[(positions >= 0) & (positions < n)])
        allowed = self._allowed(query, n)
        if allowed is not None:
            positions = positions[allowed[positions]]
        rows = np.empty((len(positions), self.dim), dtype=self._dtype)
        which = positions // BLOCK
        bounds = np.searchsorted(which, np.arange(len(self._blocks) + 1))
        for b in np.unique(which):
            lo, hi = bounds[b], bounds[b + 1]
            np.take(self._blocks[b], positions[lo:hi] - b * BLOCK, axis=0, out=rows[lo:hi])
        scores = scoring.exact(rows, query.vector)
        return self._best(scores, positions, query, None)

    def _best(
        self, scores: np.ndarray, positions: np.ndarray | None, query: Query, allowed: np.ndarray | None
    ) -> list[tuple[str, float]]:
        """The query's best rows among ``scores`` (of rows ``positions``, or of every row)."""
        if query.k <= 0 or not len(scores):
            return []
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        k = min(query.k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        keys, floor = self._keys, query.min_score
        kth = scores[top].min()
        if np.isfinite(kth):  # every row tied with the k-th best competes for the last places
            top = np.union1d(top, np.flatnonzero(scores == kth))
        rows = top if positions is None else positions[top]
        # Best first; equal scores (copies of one picture) by key, so that every process that
        # holds the library, whatever its rows' order, gives the same list.
        order = np.lexsort((np.array([keys[r] for r in rows]), -scores[top]))[:k]
        top, rows = top[order], rows[order]
        return [
            (keys[r], float(scores[i]))
            for i, r in zip(top, rows, strict=True)
            if np.isfinite(scores[i]) and (floor is None or scores[i] >= floor)
        ]
