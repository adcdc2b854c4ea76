"""The exact in-memory search index: a float32 matrix of unit vectors, cosine by matmul.

Built from the store at start and kept in step with it (``upsert``/``remove``). 100k x 768
is 300 MB and a query ~15 ms on 2 cores; see the README for what 1M+ costs.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Query:
    """One search: a unit vector, how many results, an optional row mask and score floor."""

    vector: np.ndarray
    k: int = 50
    allowed: np.ndarray | None = None
    min_score: float | None = None


BLOCK = 16384  # rows per block of the matrix


class VectorIndex:
    """Keys and their L2-normalised embeddings; top-k by cosine similarity."""

    def __init__(self, dim: int = 0) -> None:
        self.dim = dim
        self._keys: list[str] = []
        self._pos: dict[str, int] = {}
        # Rows live in fixed-size blocks: adding to 100k rows fills the last block or starts a
        # new one, never copies the 300 MB matrix (a copy stalled searches ~0.8 s under `serve`).
        self._blocks: list[np.ndarray] = []
        self._lock = threading.Lock()

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
    def build(cls, keys: Sequence[str], matrix: np.ndarray) -> VectorIndex:
        """From keys and their rows (float16 or float32; a memory-mapped file is read once)."""
        import torch

        index = cls(matrix.shape[1] if matrix.size else 0)
        index._keys = list(keys)
        index._pos = {k: i for i, k in enumerate(index._keys)}
        with warnings.catch_warnings():  # a read-only source (np.frombuffer) is only read here
            warnings.simplefilter("ignore", UserWarning)
            for start in range(0, len(matrix), BLOCK):
                rows = np.ascontiguousarray(matrix[start : start + BLOCK])
                block = index._new_block()
                # torch converts float16 to float32 ~7x faster than numpy (F16C, every core).
                torch.from_numpy(block[: len(rows)]).copy_(torch.from_numpy(rows))
        return index

    def _new_block(self) -> np.ndarray:
        block = np.empty((BLOCK, self.dim), dtype=np.float32)
        self._blocks.append(block)
        return block

    def _row(self, pos: int) -> np.ndarray:
        return self._blocks[pos // BLOCK][pos % BLOCK]

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        rows = [self._row(self._pos[k]) for k in keys if k in self._pos]
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def snapshot(self) -> tuple[list[str], np.ndarray]:
        """A consistent copy of every key and its row (for work that runs beside searches and
        updates, such as grouping near-duplicates)."""
        with self._lock:
            n = len(self._keys)
            if not n:
                return [], np.zeros((0, self.dim), dtype=np.float32)
            full = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
            return list(self._keys), full[:n].copy()

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
                self._keys.pop()
            while len(self._blocks) * BLOCK - len(self._keys) >= BLOCK:
                self._blocks.pop()

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
        """Several searches with one matrix product: the matrix (300 MB at 100k images) is read
        once for all of them, which is what bounds a search on a CPU."""
        with self._lock:
            if not self._keys or not queries:
                return [[] for _ in queries]
            vectors = np.stack([np.asarray(q.vector, dtype=np.float32) for q in queries], axis=1)
            n = len(self._keys)
            all_scores = np.empty((n, len(queries)), dtype=np.float32)
            for b, block in enumerate(self._blocks):
                start = b * BLOCK
                np.matmul(block[: min(BLOCK, n - start)], vectors, out=all_scores[start : start + BLOCK])
            return [self._top(np.ascontiguousarray(all_scores[:, j]), q) for j, q in enumerate(queries)]

    def _top(self, scores: np.ndarray, query: Query) -> list[tuple[str, float]]:
        if query.k <= 0:
            return []
        if query.allowed is not None:
            allowed = query.allowed
            if len(allowed) != len(scores):  # rows came or went since the mask was made
                allowed = np.resize(np.append(allowed, False), len(scores))
                allowed[len(query.allowed) :] = False
            scores = np.where(allowed, scores, -np.inf)
        k = min(query.k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        keys, floor = self._keys, query.min_score
        return [
            (keys[i], float(scores[i]))
            for i in top
            if np.isfinite(scores[i]) and (floor is None or scores[i] >= floor)
        ]
