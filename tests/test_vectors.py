"""The exact in-memory index against brute force."""

from __future__ import annotations

import numpy as np
import pytest

import image_search.vectors as vectors_module
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
    allowed = np.array([k == "e" for k in index.keys])  # a mask follows the row order
    assert [k for k, _ in index.search(matrix[1], 3, allowed=allowed)] == ["e"]
    assert index.search(matrix[1], 5, min_score=0.999)[0][0] == "b"
    assert VectorIndex().search(matrix[0], 5) == []


@pytest.mark.parametrize("block", [7, 64, 16384])
def test_growth_and_removal_keep_every_key_at_its_vector(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are appended into blocks and removed by moving the last row into the gap."""
    monkeypatch.setattr(vectors_module, "BLOCK", block)
    rng = np.random.default_rng(3)
    index = VectorIndex.build([f"b{i}" for i in range(20)], rng.standard_normal((20, 8)).astype(np.float32))
    truth: dict[str, np.ndarray] = {k: index.vectors([k])[0] for k in index.keys}
    for step in range(40):
        keys = [f"k{step}-{i}" for i in range(rng.integers(1, 200))]
        vectors = rng.standard_normal((len(keys), 8)).astype(np.float32)
        index.upsert(keys, vectors)
        truth.update(zip(keys, vectors, strict=True))
        gone = list(rng.choice(sorted(truth), size=min(len(truth), 30), replace=False))
        index.remove(gone)
        for key in gone:
            del truth[key]
    assert len(index) == len(truth) and set(index.keys) == set(truth)
    for key, vector in truth.items():
        assert np.array_equal(index.vectors([key])[0], vector)
    query = rng.standard_normal(8).astype(np.float32)
    best = max(truth, key=lambda k: float(truth[k] @ query))
    assert index.search(query, 1)[0][0] == best


def test_a_mask_made_before_rows_arrived_still_searches() -> None:
    index = VectorIndex.build(["a", "b"], np.eye(2, dtype=np.float32))
    mask = np.array([False, True])
    index.upsert(["c"], np.array([[0.0, 1.0]], dtype=np.float32))
    assert [k for k, _ in index.search(np.array([0.0, 1.0], dtype=np.float32), 3, allowed=mask)] == ["b"]


def test_rows_of_keys_are_read_whole_in_order() -> None:
    rng = np.random.default_rng(1)
    n = vectors_module.BLOCK + 10  # two blocks
    keys = [f"k{i}" for i in range(n)]
    matrix = rng.normal(size=(n, 8)).astype(np.float32)
    index = VectorIndex.build(keys, matrix)
    index.remove(["k3"])  # the last row moves into its place
    assert index.key_list() == list(index.keys) and "k3" not in index.key_list()
    wanted = ["k5", "k3", f"k{n - 1}", "k0"]
    got = index.rows_of(wanted, chunk=3)
    assert got.dtype == np.float32 and np.array_equal(got[[0, 2, 3]], matrix[[5, n - 1, 0]])
    assert not got[1].any(), "a key no longer held reads as zeros"
    got[:] = 0  # a copy: the index is untouched
    assert np.array_equal(index.vectors(["k0"])[0], matrix[0])
    # A big index holds float16 rows (the store's values): read as float32, exactly.
    half = matrix.astype(np.float16)
    big = VectorIndex.build(keys, half, approximate_from=100)
    assert np.array_equal(big.rows_of(keys[:50]), half[:50].astype(np.float32))
