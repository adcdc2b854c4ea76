"""The exact in-memory index against brute force."""

from __future__ import annotations

import numpy as np
import pytest

import image_search.search.vectors as vectors_module
from image_search.search.vectors import Query, VectorIndex


def units(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


HALF = pytest.mark.parametrize("half", [False, True], ids=["float32-rows", "float16-rows"])


@HALF
def test_top_k_equals_brute_force(half: bool) -> None:
    matrix = units(1000)
    keys = [f"k{i}" for i in range(1000)]
    index = VectorIndex.build(keys, matrix.astype(np.float16), half=half)
    query = units(1, seed=5)[0]
    expected = np.argsort(-(matrix.astype(np.float16).astype(np.float32) @ query))[:10]
    assert [k for k, _ in index.search(query, 10)] == [keys[i] for i in expected]
    scores = [s for _, s in index.search(query, 10)]
    assert scores == sorted(scores, reverse=True)


@HALF
def test_upsert_remove_mask_and_min_score(half: bool) -> None:
    index = VectorIndex(half=half)
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


@HALF
@pytest.mark.parametrize("block", [7, 64, 16384])
def test_growth_and_removal_keep_every_key_at_its_vector(
    block: int, half: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are appended into blocks and removed by moving the last row into the gap."""
    monkeypatch.setattr(vectors_module, "BLOCK", block)
    rng = np.random.default_rng(3)
    start = rng.standard_normal((20, 8)).astype(np.float32)
    index = VectorIndex.build([f"b{i}" for i in range(20)], start, half=half)
    truth: dict[str, np.ndarray] = {k: index.vectors([k])[0] for k in index.keys}
    for step in range(40):
        keys = [f"k{step}-{i}" for i in range(rng.integers(1, 200))]
        vectors = rng.standard_normal((len(keys), 8)).astype(np.float32)
        index.upsert(keys, vectors)
        held = vectors.astype(np.float16).astype(np.float32) if half else vectors  # a float16 row: rounded
        truth.update(zip(keys, held, strict=True))
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
    index = VectorIndex.build(keys, matrix, half=False)
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


@HALF
def test_several_queries_at_once_equal_one_at_a_time(half: bool) -> None:
    """A batch reads the matrix once for all its queries (float32 rows) or scans once per query
    (float16 rows); either way each query gets what it gets alone, masks and floors included."""
    matrix = units(3000, d=64).astype(np.float16)
    keys = [f"k{i}" for i in range(3000)]
    index = VectorIndex.build(keys, matrix, half=half)
    rng = np.random.default_rng(9)
    mask = rng.random(3000) < 0.3
    queries = [
        Query(units(1, 64, seed=1)[0], 20),
        Query(units(1, 64, seed=2)[0], 7, allowed=mask),
        Query(matrix[5].astype(np.float32), 50, min_score=0.3),
    ]
    together = index.search_many(queries)
    alone = [index.search(q.vector, q.k, allowed=q.allowed, min_score=q.min_score) for q in queries]
    assert [[k for k, _ in r] for r in together] == [[k for k, _ in r] for r in alone]
    exact = matrix.astype(np.float32)
    for query, found in zip(queries, together, strict=True):
        scores = exact @ query.vector
        if query.allowed is not None:
            scores[~query.allowed] = -np.inf
        best = np.argsort(-scores, kind="stable")[: query.k]
        if query.min_score is not None:
            best = best[scores[best] >= query.min_score]
        assert [k for k, _ in found] == [keys[i] for i in best]
        assert np.allclose([s for _, s in found], scores[best], atol=1e-6)


@pytest.mark.parametrize("half", [False, True])
def test_equal_scores_come_back_in_key_order(half: bool) -> None:
    """Copies of one picture score alike: the same list whatever order the rows were loaded in,
    the last place included."""
    matrix = units(40)
    matrix[[3, 17, 29]] = matrix[5]  # four identical rows
    keys = [f"k{i:02d}" for i in range(40)]
    copies = sorted(keys[i] for i in (3, 5, 17, 29))
    for order in (np.arange(40), np.arange(40)[::-1], np.random.default_rng(1).permutation(40)):
        index = VectorIndex.build([keys[i] for i in order], matrix[order].astype(np.float16), half=half)
        assert [k for k, _ in index.search(matrix[5], 4)] == copies
        assert [k for k, _ in index.search(matrix[5], 2)] == copies[:2]
