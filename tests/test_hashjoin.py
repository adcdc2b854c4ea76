"""The pairs of close perceptual hashes (multi-index hashing) against every pair compared, and
near-duplicate groups found from the fingerprints first against the vectors first."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from image_search.duplicates import grouping as duplicates
from image_search.duplicates import hashjoin
from image_search.duplicates.grouping import Settings, group


def _hashes(n: int, seed: int = 0, bunched: bool = False) -> np.ndarray:
    """Random 64-bit hashes, a tenth of them a few bits from another; ``bunched``: most of them
    share one of a few values in their low 32 bits (real photos are not random bits)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, n, dtype=np.uint64)
    for a, b in rng.integers(0, n, (n // 10, 2)):
        flips = rng.choice(64, int(rng.integers(0, 13)), replace=False)
        h[b] = h[a] ^ np.uint64(sum(1 << int(f) for f in flips))
    if bunched:
        common = rng.integers(0, 2**32, 3, dtype=np.uint64)
        some = rng.random(n) < 0.7
        h[some] = (h[some] & ~np.uint64(2**32 - 1)) | common[rng.integers(0, 3, int(some.sum()))]
    return h


def _every_pair(h: np.ndarray, radius: int) -> set[tuple[int, int]]:
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(d <= radius, 1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def _found(blocks) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    return [tuple(p) for b in blocks for p in b.tolist()]


@pytest.mark.parametrize("bunched", [False, True], ids=["spread", "bunched"])
@pytest.mark.parametrize("widths", [(21, 21, 22), (16, 16, 16, 16), (13, 13, 13, 13, 12), (8,) * 8])
@pytest.mark.parametrize("radius", [0, 3, 10, 12])
def test_chunks_find_every_close_pair_once(widths: tuple[int, ...], radius: int, bunched: bool) -> None:
    h = _hashes(1500, seed=radius, bunched=bunched)
    expected = _every_pair(h, radius)
    found = _found(hashjoin._chunked(h, radius, widths, threads=2))
    assert len(found) == len(set(found)), "a pair found by two chunks comes out once"
    assert set(found) == expected
    assert all(i < j for i, j in found)


def test_the_plan_follows_the_size() -> None:
    assert hashjoin.plan(1000, 10).chunks == ()  # few rows: pair by pair
    assert hashjoin.plan(100_000, 10).chunks == (16, 16, 16, 16)
    assert hashjoin.plan(1_000_000, 10).chunks == (16, 16, 16, 16)
    assert hashjoin.plan(5_000_000, 10).chunks == (21, 21, 22)
    assert hashjoin.plan(1_000_000, 40).chunks == ()  # a wide radius: no chunking helps
    h = _hashes(3000, seed=7)
    assert set(_found(hashjoin.close_pairs(h, 10))) == _every_pair(h, 10)
    for n in (0, 1, 2):
        assert _found(hashjoin.close_pairs(h[:n], 64)) == ([(0, 1)] if n == 2 else [])


def test_crowded_hashes_stop_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    h = np.full(4000, 0x0123456789ABCDEF, dtype=np.uint64)  # one value: every pair meets
    with pytest.raises(hashjoin.Crowded):
        list(hashjoin._chunked(h, 10, (21, 21, 22), threads=2, max_met=1_000_000))
    # Without a limit a crowd is expanded in slices, and still found whole, each pair once.
    monkeypatch.setattr(hashjoin, "SLICE_PAIRS", 1000)
    progress: list[tuple[int, int]] = []
    found = _found(
        hashjoin._chunked(h[:300], 10, (21, 21, 22), threads=1, on_progress=lambda *p: progress.append(p))
    )
    assert sorted(found) == sorted(_every_pair(h[:300], 10))
    probes = sum(math.comb(w, d) for w in (21, 21, 22) for d in range(10 // 3 + 1))  # 4,918
    assert progress[-1] == (probes, probes) == (len(progress), len(progress))


def _library(n: int, seed: int = 5) -> tuple[np.ndarray, list[bytes], list[str]]:
    """Unit vectors sharing one direction, fingerprints random; planted: near copies (both
    witnesses agree), look-alikes (vectors agree, hashes far), re-colourings (hash close, colours
    far) and hash twins (hash and colours close, vectors far)."""
    rng = np.random.default_rng(seed)
    d = 64
    shared = rng.normal(size=d)
    m = shared / np.linalg.norm(shared) * 2 + rng.normal(size=(n, d)) * 0.35
    raw = rng.integers(0, 256, (n, 57), dtype=np.uint8)
    raw[:, 0] = 1
    order = rng.permutation(n)
    for k, (a, b) in enumerate(order[: (n // 5) * 2].reshape(-1, 2)):
        kind = k % 4
        if kind in (0, 1):  # vectors close
            m[b] = m[a] + rng.normal(size=d) * 0.02
        if kind in (0, 2, 3):  # hash within a few bits
            raw[b, 1:9] = raw[a, 1:9]
            raw[b, 1 + int(rng.integers(0, 8))] ^= 1 << int(rng.integers(0, 8))
        if kind in (0, 3):  # colours close
            raw[b, 9:] = np.clip(raw[a, 9:].astype(int) + rng.integers(-2, 3, 48), 0, 255)
    m = (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)
    return m, [r.tobytes() for r in raw], [f"{i:08x}" for i in range(n)]


def _brute_groups(matrix: np.ndarray, prints: list[bytes], settings: Settings) -> list[list[int]]:
    f = duplicates.Fingerprints(prints)
    i, j = np.nonzero(np.triu(matrix @ matrix.T >= settings.similarity, 1))
    ok = f.confirm(i, j, settings.hash_bits, settings.colour)
    union = duplicates._Union(len(matrix))
    for a, b in zip(i[ok].tolist(), j[ok].tolist(), strict=True):
        union.join(a, b)
    members: dict[int, list[int]] = {}
    for r in range(len(matrix)):
        members.setdefault(union.find(r), []).append(r)
    return sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])


def test_fingerprints_first_find_the_same_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix, prints, hashes = _library(3000)
    settings = Settings(similarity=0.9)
    first = group(matrix, prints, hashes, settings)
    assert first.first == "fingerprints"
    expected = _brute_groups(matrix, prints, settings)
    assert len(expected) > 100 and first.groups == expected
    monkeypatch.setattr(duplicates, "HASH_FIRST_PAIRS", -1)
    by_vectors = group(matrix, prints, hashes, settings)
    assert by_vectors.first == "vectors" and by_vectors.groups == expected
    assert by_vectors.confirmed == first.confirmed
    # A radius no chunking helps, in a library this big: the vectors, not every pair of hashes.
    monkeypatch.setattr(duplicates, "HASH_FIRST_PAIRS", 1e9)
    monkeypatch.setattr(duplicates, "HASH_PAIRS_FROM", 1000)
    wide = Settings(similarity=0.9, hash_bits=24)
    assert hashjoin.plan(3000, 24).chunks == ()
    widely = group(matrix, prints, hashes, wide)
    assert widely.first == "vectors" and widely.groups == _brute_groups(matrix, prints, wide)
    # A big index's rows are float16 (the store's values): scored in float32 all the same.
    monkeypatch.undo()
    half = matrix.astype(np.float16)
    expected_half = _brute_groups(half.astype(np.float32), prints, settings)
    assert group(half, prints, hashes, settings).groups == expected_half
    monkeypatch.setattr(duplicates, "HASH_FIRST_PAIRS", -1)
    assert group(half, prints, hashes, settings).groups == expected_half


def test_bunched_hashes_leave_it_to_the_vectors(monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    matrix, prints, hashes = _library(3000, seed=6)
    same = bytes.fromhex("0123456789abcdef")
    bunched = [p[:1] + same + p[9:] for p in prints]  # every hash equal: every pair is close
    settings = Settings(similarity=0.9)
    expected = _brute_groups(matrix, bunched, settings)
    monkeypatch.setattr(duplicates, "HASH_FIRST_PAIRS", 1_000_000)  # 3,000 rows make 4.5M pairs
    with caplog.at_level(logging.INFO, logger="image_search.duplicates.grouping"):
        result = group(matrix, bunched, hashes, settings)
    assert result.first == "vectors" and result.groups == expected
    assert "pairs of close hashes" in caplog.text
    # The sample can miss a bunch; the probes then meet far more pairs than planned and stop.
    monkeypatch.setattr(hashjoin, "share_within", lambda sample, radius: 0.0)
    monkeypatch.setattr(hashjoin, "plan", lambda n, r, s: hashjoin.Plan((16, 16, 16, 16), 0.0, 0.0))
    monkeypatch.setattr(duplicates, "MET_SLACK", 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="image_search.duplicates.grouping"):
        result = group(matrix, bunched, hashes, settings)
    assert result.first == "vectors" and result.groups == expected
    assert "pairs met" in caplog.text


def test_a_sample_measures_how_many_pairs_meet() -> None:
    h = _hashes(1200, seed=3, bunched=True)
    widths = (16, 16, 16, 16)
    x = h[:, None] ^ h[None, :]
    upper = np.triu(np.ones(x.shape, dtype=bool), 1)
    met = sum(
        int((upper & (np.bitwise_count(x & np.uint64(0xFFFF << (16 * c))) <= 2)).sum()) for c in range(4)
    )
    share = hashjoin._meeting_share(hashjoin._pair_xor(h), widths, 2)
    assert share * len(h) * (len(h) - 1) / 2 == pytest.approx(met)
    assert share > 20 * hashjoin._meeting_share(hashjoin._pair_xor(_hashes(1200, seed=3)), widths, 2)
    # For 100k hashes like these, the plan counts the pairs the sample says will meet.
    measured, spread = hashjoin.plan(100_000, 10, sample=h), hashjoin.plan(100_000, 10)
    assert measured.cost > 5 * spread.cost
    chunks = measured.chunks
    assert chunks != spread.chunks  # the bunched low bits make wider chunks cheaper
    assert measured.met == pytest.approx(
        hashjoin._meeting_share(hashjoin._pair_xor(h), chunks, 10 // len(chunks)) * 100_000 * 99_999 / 2
    )


def test_a_live_index_reads_only_what_it_needs() -> None:
    from image_search.duplicates.grouping import LiveRows
    from image_search.search.vectors import VectorIndex

    matrix, prints, hashes = _library(3000, seed=9)
    settings = Settings(similarity=0.9)
    keys = [f"k{i}" for i in range(len(matrix))]
    index = VectorIndex.build(keys, matrix)
    expected = group(matrix, prints, hashes, settings)
    live = group(LiveRows(index, keys), prints, hashes, settings)
    assert live.groups == expected.groups and len(expected.groups) > 100
    gone = expected.groups[0]
    index.remove([keys[gone[0]]])  # removed while grouping: it joins nothing
    without = matrix.copy()
    without[gone[0]] = 0
    after = group(LiveRows(index, keys), prints, hashes, settings)
    assert after.groups == _brute_groups(without, prints, settings) and gone not in after.groups
