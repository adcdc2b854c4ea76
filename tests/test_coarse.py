"""The first stage of big-library search: codes pick candidates, the rows score them exactly."""

from __future__ import annotations

import numpy as np
import pytest

import image_search.search.vectors as vectors_module
from image_search.search.vectors import Query, VectorIndex

D = 64


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in 60 loose clusters (photos are clustered; isotropic noise is the benchmark's job)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, D))
    m = centres[rng.integers(0, 60, n)] + 0.6 * rng.normal(size=(n, D))
    # float16 values, as the store holds them (a big index keeps its rows as float16)
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture(scope="module")
def pair() -> tuple[VectorIndex, VectorIndex, np.ndarray]:
    """The same rows twice: searched from codes, and searched exactly."""
    matrix = clustered(6000)
    keys = [f"k{i}" for i in range(len(matrix))]
    near = VectorIndex.build(keys, matrix, approximate_from=1000)
    near.depth = 300
    exact = VectorIndex.build(keys, matrix, approximate_from=10**9, half=False)
    (key, score), [(want_key, want_score)] = near.search(matrix[0], 1)[0], exact.search(matrix[0], 1)
    assert not near.approximate and key == want_key and abs(score - want_score) < 1e-6
    assert near.settle(120) and near.approximate and not exact.approximate
    assert near.nbytes < exact.nbytes * 0.6  # float16 rows beside 32 bytes of codes a row
    return near, exact, matrix


def test_results_equal_the_exact_search(pair: tuple[VectorIndex, VectorIndex, np.ndarray]) -> None:
    near, exact, matrix = pair
    rng = np.random.default_rng(9)
    queries = [unit(matrix[i] + 0.3 * rng.normal(size=D)) for i in rng.integers(0, len(matrix), 12)]
    mask = rng.random(len(matrix)) < 0.5
    for q in queries:
        for query in (Query(q, 10), Query(q, 8, allowed=mask), Query(q, 15, min_score=0.6)):
            got, want = near.search_many([query])[0], exact.search_many([query])[0]
            assert [k for k, _ in got] == [k for k, _ in want]
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    both = near.search_many([Query(queries[0], 5), Query(queries[1], 5, allowed=mask)])
    assert both == [near.search_many([Query(queries[0], 5)])[0], near.search(queries[1], 5, allowed=mask)]


def test_rows_changed_after_the_codes_are_scored_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors_module, "BLOCK", 700)  # candidates gathered from six blocks
    matrix = clustered(4000, seed=1)
    index = VectorIndex.build([f"k{i}" for i in range(len(matrix))], matrix, approximate_from=1000)
    index.depth = 200
    index.search(matrix[0], 1)  # the first search starts making the codes
    assert index.settle(120) and index.approximate
    rng = np.random.default_rng(2)
    moved_to, fresh = unit(rng.normal(size=D)), unit(rng.normal(size=D))
    index.upsert(["k5"], moved_to[None])  # its code still describes its old vector
    index.upsert(["new"], fresh[None])  # past the codes
    assert index.search(moved_to, 3)[0] == ("k5", pytest.approx(1.0, abs=1e-4))  # rows kept as float16
    assert index.search(fresh, 3)[0] == ("new", pytest.approx(1.0, abs=1e-4))  # rows kept as float16
    last = index.keys[-1]
    last_vector = index.vectors([last])[0]
    index.remove(["k7"])  # the last row takes k7's place, under k7's old code
    assert index.search(last_vector, 3)[0] == (last, pytest.approx(1.0, abs=1e-4))  # rows kept as float16
    assert all(key != "k7" for key, _ in index.search(matrix[7], 50))


def test_codes_are_remade_after_many_changes() -> None:
    matrix = clustered(3000, seed=3)
    index = VectorIndex.build([f"k{i}" for i in range(len(matrix))], matrix, approximate_from=1000)
    index.search(matrix[0], 1)
    assert index.settle(120) and index._codes is not None and index._codes.size == 3000
    index.upsert([f"n{i}" for i in range(200)], clustered(200, seed=4))  # > 2% beside the codes
    index.search(matrix[0], 1)
    assert index.settle(120) and index._codes.size == 3200 and not index._stale
    assert index.search(index.vectors(["n9"])[0], 1)[0][0] == "n9"


def test_deep_or_narrow_searches_score_every_row(pair: tuple[VectorIndex, VectorIndex, np.ndarray]) -> None:
    near, exact, matrix = pair
    mask = np.zeros(len(matrix), dtype=bool)
    mask[::40] = True  # 150 rows: the codes would have to give up most rows to find them
    for query in (
        Query(matrix[3], 1400),
        Query(matrix[3], 900, min_score=0.3),
        Query(matrix[3], 10, allowed=mask),
    ):
        assert near._depth(query, len(matrix)) is None
        got, want = near.search_many([query])[0], exact.search_many([query])[0]
        assert [k for k, _ in got] == [k for k, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_the_float16_scan_loses_no_row_to_rounding() -> None:
    """Rows within float16's rounding of each other (scores ~0.99, a float16 step there is 5e-4):
    the float16 scores reorder them, and the rescoring must still return the exact best."""
    rng = np.random.default_rng(11)
    for trial in range(20):
        q = unit(rng.normal(size=D))
        rows = q + rng.normal(size=(2000, D)) * 0.01
        rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)
        index = VectorIndex.build([f"r{i}" for i in range(len(rows))], rows, approximate_from=100)
        exact = rows.astype(np.float64) @ q.astype(np.float64)
        assert index.search(q, 0) == []
        for k in (1, 3, 25):
            got = index.search(q, k)  # no codes yet: every row scored in float16, then exactly
            # The exact best, up to float32's own rounding of a score (~1e-7 here; a float16
            # step is 5e-4): every row clearly above the k-th is found, none clearly below.
            kth = np.sort(exact)[-k]
            found = {int(key[1:]) for key, _ in got}
            assert len(found) == k and set(np.flatnonzero(exact > kth + 1e-6)) <= found, trial
            assert all(exact[i] >= kth - 1e-6 for i in found), trial
            assert np.allclose([s for _, s in got], exact[[int(key[1:]) for key, _ in got]], atol=1e-6)


def test_rows_mapped_from_the_snapshot_stay_in_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A big index loaded from the library's snapshot keeps its rows in the file mapped
    copy-on-write: not in its own memory, written rows copied privately, the file never written;
    every search equals one over the same rows held in memory, through writes, moves and deletes."""
    from image_search.search import snapshot

    matrix = clustered(3 * vectors_module.BLOCK + 500, seed=4)  # three whole blocks and a tail
    keys = [f"k{i}" for i in range(len(matrix))]
    columns = {name: [None] * len(keys) for name in (*snapshot.TEXT, *snapshot.NUMBERS, "fingerprint")}
    columns |= {"key": keys, "path": keys, "root": ["/p"] * len(keys), "taken": [0.0] * len(keys)}
    snapshot.save(tmp_path / "db.library", 7, "m", columns, matrix.astype(np.float16))
    loaded = snapshot.load(tmp_path / "db.library", 7, "m")
    assert loaded is not None
    mapped = VectorIndex.build(keys, loaded[1], approximate_from=1000)
    held = VectorIndex.build(keys, matrix.astype(np.float16), approximate_from=1000)
    block = vectors_module.BLOCK * D * 2
    assert mapped.mapped_bytes == 3 * block and mapped.nbytes == block  # the tail's block alone
    assert held.mapped_bytes == 0 and held.nbytes == 4 * block
    on_disk = np.load(tmp_path / "db.library" / "matrix.npy").copy()
    rng = np.random.default_rng(9)
    queries = [unit(v) for v in rng.normal(size=(5, D))]
    for step in range(3):
        fresh = clustered(50, seed=100 + step)
        changed = [keys[i] for i in rng.integers(0, len(keys), 40)] + [f"new{step}-{i}" for i in range(10)]
        gone = [keys[i] for i in rng.integers(0, len(keys), 30)]
        for index in (mapped, held):
            index.upsert(changed, fresh)
            index.remove(gone)
        for q in [*queries, fresh[0], fresh[-1]]:
            for query in (Query(q, 20), Query(q, 3000, min_score=0.1)):
                assert mapped.search_many([query]) == held.search_many([query])
    assert np.array_equal(np.load(tmp_path / "db.library" / "matrix.npy"), on_disk)  # never written
    assert mapped.mapped_bytes == 3 * block
