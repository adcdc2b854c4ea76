"""The exact in-memory index against brute force."""

from __future__ import annotations

import numpy as np

from image_search.vectors import VectorIndex


def units(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_top_k_equals_brute_force() -> None:
    matrix = units(1000)
    keys = [f"k{i}" for i in range(1000)]
    index = VectorIndex.build(keys, matrix.astype(np.float16))
    query = units(1, seed=5)[0]
    expected = np.argsort(-(matrix.astype(np.float16).astype(np.float32) @ query))[:10]
    assert [k for k, _ in index.search(query, 10)] == [keys[i] for i in expected]
    scores = [s for _, s in index.search(query, 10)]
    assert scores == sorted(scores, reverse=True)


def test_upsert_remove_mask_and_min_score() -> None:
    index = VectorIndex()
    matrix = units(5)
    index.upsert(["a", "b", "c", "d", "e"], matrix)
    assert len(index) == 5 and index.search(matrix[2], 1)[0][0] == "c"
    index.upsert(["c"], matrix[0:1])  # replaced in place
    assert len(index) == 5 and index.search(matrix[2], 1)[0][0] != "c"
    index.remove(["a", "zz"])
    assert len(index) == 4 and "a" not in index
    allowed = np.array([k == "e" for k in ["b", "c", "d", "e"]])
    assert [k for k, _ in index.search(matrix[1], 3, allowed=allowed)] == ["e"]
    assert index.search(matrix[1], 5, min_score=0.999)[0][0] == "b"
    assert VectorIndex().search(matrix[0], 5) == []
