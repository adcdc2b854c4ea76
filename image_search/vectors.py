"""The exact in-memory search index: a float32 matrix of unit vectors, cosine by matmul.

Built from the store at start and kept in step with it (``upsert``/``remove``). 100k x 768
is 300 MB and a query ~15 ms on 2 cores; see the README for what 1M+ costs.
"""

from __future__ import annotations

import threading
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


class VectorIndex:
    """Keys and their L2-normalised embeddings; top-k by cosine similarity."""

    def __init__(self, dim: int = 0) -> None:
        self.dim = dim
        self._keys: list[str] = []
        self._pos: dict[str, int] = {}
        self._matrix = np.zeros((0, dim), dtype=np.float32)
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
        index = cls(matrix.shape[1] if matrix.size else 0)
        index._keys = list(keys)
        index._pos = {k: i for i, k in enumerate(index._keys)}
        index._matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        return index

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        rows = [self._pos[k] for k in keys if k in self._pos]
        return self._matrix[rows].copy() if rows else np.zeros((0, self.dim), dtype=np.float32)

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            if not self.dim and len(vectors):
                self.dim = vectors.shape[1]
                self._matrix = np.zeros((0, self.dim), dtype=np.float32)
            new_keys, new_rows = [], []
            for key, vec in zip(keys, vectors, strict=True):
                pos = self._pos.get(key)
                if pos is None:
                    new_keys.append(key)
                    new_rows.append(vec)
                else:
                    self._matrix[pos] = vec
            if new_keys:
                start = len(self._keys)
                self._matrix = np.concatenate([self._matrix, np.stack(new_rows)])
                self._keys.extend(new_keys)
                self._pos.update({k: start + i for i, k in enumerate(new_keys)})

    def remove(self, keys: Sequence[str]) -> None:
        with self._lock:
            drop = {self._pos[k] for k in keys if k in self._pos}
            if not drop:
                return
            keep = [i for i in range(len(self._keys)) if i not in drop]
            self._matrix = self._matrix[keep]
            self._keys = [self._keys[i] for i in keep]
            self._pos = {k: i for i, k in enumerate(self._keys)}

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
            all_scores = self._matrix @ vectors
            return [self._top(np.ascontiguousarray(all_scores[:, j]), q) for j, q in enumerate(queries)]

    def _top(self, scores: np.ndarray, query: Query) -> list[tuple[str, float]]:
        if query.k <= 0:
            return []
        if query.allowed is not None:
            scores = np.where(query.allowed, scores, -np.inf)
        k = min(query.k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        keys, floor = self._keys, query.min_score
        return [
            (keys[i], float(scores[i]))
            for i in top
            if np.isfinite(scores[i]) and (floor is None or scores[i] >= floor)
        ]
