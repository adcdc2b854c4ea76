"""The first stage of a search over a big library: which rows are worth scoring exactly.

Scoring every row exactly in float32 reads 3 GB per query, ~170 ms at 1M rows
on 2 cores (memory bound). Past ``VectorIndex.approximate_from`` rows a query instead scans
compact codes of every row (FAISS's 4-bit product quantisation with SIMD lookup tables, "fast
scan": two dimensions per 4-bit code, 384 bytes -> 192 bytes a 768-d row) for its best few
thousand candidates, and only those are scored exactly, from the index's own rows. Measured on
1M synthetic isotropic vectors (the hardest case: no clusters), 2 cores: ~20 ms for the codes,
the true best 60 within the best 3,000-5,000 candidates for every query tried. Scores, filters
and ``min_score`` stay exact; only which rows are looked at is approximate. docs/scale.md.

The codes are a copy made at one moment; rows written, moved or removed afterwards are kept in
the index's list of positions that are always scored exactly, until a rebuild on a thread
(FAISS lets go of the GIL) replaces the codes.
"""

from __future__ import annotations

import numpy as np

TRAIN_ROWS = 65_536  # rows the quantiser learns from (16 centroids per pair of dimensions)
SEED = 1234


def available(dim: int) -> bool:
    """Whether codes can be made for vectors of this size (an even number of dimensions, FAISS present)."""
    if dim < 2 or dim % 2:
        return False
    try:
        import faiss  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency; a broken install searches exactly
        return False
    return True


class Codes:
    """4-bit product-quantised codes of rows ``0 .. size-1``, searched for candidate positions."""

    def __init__(self, dim: int) -> None:
        import faiss

        self.dim = dim
        self.size = 0
        self._index = faiss.index_factory(dim, f"PQ{dim // 2}x4fs", faiss.METRIC_INNER_PRODUCT)

    @classmethod
    def encode(cls, blocks: list[np.ndarray], n: int, block_rows: int) -> Codes:
        """Codes for the first ``n`` rows held in ``blocks`` (float32 or float16, ``block_rows``
        rows each), read as they are: a row that changes meanwhile must be marked stale by the caller."""
        codes = cls(blocks[0].shape[1])
        rng = np.random.default_rng(SEED)
        picks = np.sort(rng.choice(n, size=min(n, TRAIN_ROWS), replace=False))
        sample = np.stack([blocks[p // block_rows][p % block_rows] for p in picks])
        codes._index.train(sample.astype(np.float32))
        for start in range(0, n, block_rows):
            block = blocks[start // block_rows]
            codes._index.add(np.ascontiguousarray(block[: min(block_rows, n - start)], dtype=np.float32))
        codes.size = n
        return codes

    def candidates(self, vectors: np.ndarray, depth: int) -> np.ndarray:
        """Each query's ``depth`` best positions by approximate score, one row per query (-1: none)."""
        depth = max(1, min(depth, self.size))
        _, found = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), depth)
        return found

    @property
    def nbytes(self) -> int:
        return self.size * ((self.dim // 2 + 1) // 2)
