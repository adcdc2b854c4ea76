"""The refine math as a library function: pure arrays in, a unit vector out."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
import pytest

from image_search.errors import BadValue
from image_search.search.queries import TextQueries, parse_query
from image_search.search.refine import EmptyQuery, refine_query


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


RNG = np.random.default_rng(0)
T = unit(RNG.normal(size=16)).astype(np.float32)
IMGS = unit(RNG.normal(size=(6, 16))).astype(np.float32)
EMPTY = np.zeros((0, 16), dtype=np.float32)


def test_text_only_is_the_text() -> None:
    assert np.allclose(refine_query(T, EMPTY, EMPTY), T, atol=1e-6)
    assert np.allclose(refine_query(T, None, None), T, atol=1e-6)


def test_empty_raises() -> None:
    with pytest.raises(EmptyQuery):
        refine_query(None, EMPTY, EMPTY)


def test_no_text_follows_the_liked_images() -> None:
    q = refine_query(None, IMGS[:3], EMPTY)
    assert np.isclose(np.linalg.norm(q), 1, atol=1e-6)
    assert np.allclose(q, unit(IMGS[:3].mean(axis=0)), atol=1e-6)


def test_only_negative_pushes_away() -> None:
    q = refine_query(None, EMPTY, IMGS[:2])
    assert np.isclose(np.linalg.norm(q), 1, atol=1e-6)
    assert (IMGS[:2] @ q).max() < 0
    with_text = refine_query(T, EMPTY, IMGS[:1])
    assert IMGS[0] @ with_text < IMGS[0] @ T  # rejecting moves the query away from the image


def test_single_liked_image_pulls_towards_it() -> None:
    q = refine_query(T, IMGS[:1], EMPTY)
    assert IMGS[0] @ q > IMGS[0] @ T and np.isclose(np.linalg.norm(q), 1, atol=1e-6)


def test_parts_are_normalised_so_raw_vectors_do_not_drown_the_text() -> None:
    """The prototype averaged a unit text with raw image vectors: scaling images changed the answer."""
    a = refine_query(T, IMGS[:2], EMPTY)
    b = refine_query(T, IMGS[:2] * 40.0, EMPTY)
    assert np.allclose(a, b, atol=1e-6)
    assert T @ a > 0.3  # the text still counts


def test_duplicates_count_twice() -> None:
    once = refine_query(None, IMGS[[0, 1]], EMPTY)
    twice = refine_query(None, IMGS[[0, 0, 1]], EMPTY)
    assert IMGS[0] @ twice > IMGS[0] @ once


def test_liked_and_rejected_same_image_cancel() -> None:
    with pytest.raises(EmptyQuery, match="cancel"):
        refine_query(None, IMGS[:1], IMGS[:1], liked_weight=1.0, rejected_weight=1.0)


def test_weights_are_parameters() -> None:
    heavy = refine_query(T, IMGS[:1], EMPTY, liked_weight=10.0)
    light = refine_query(T, IMGS[:1], EMPTY, liked_weight=0.1)
    assert IMGS[0] @ heavy > IMGS[0] @ light


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("beach + sunset - people", [(1.0, "beach"), (1.0, "sunset"), (-1.0, "people")]),
        ("2:dog + cat", [(2.0, "dog"), (1.0, "cat")]),
        ("black-and-white portrait", [(1.0, "black-and-white portrait")]),
        ("- crowds", [(-1.0, "crowds")]),
        ("0.5: fog + forest", [(0.5, "fog"), (1.0, "forest")]),
        ("  ", []),
        ("a + ", [(1.0, "a")]),
    ],
)
def test_query_arithmetic(query: str, terms: list[tuple[float, str]]) -> None:
    assert parse_query(query) == terms


async def test_query_text_weights_terms() -> None:
    """The one query-to-vector the web and `image-search search` use: terms embedded in one
    batch, weighted, summed and normalised."""
    table = {"dog": unit(np.array([1.0, 0, 0])), "cat": unit(np.array([0, 1.0, 0]))}

    class Embedder:
        def embed_texts(self, texts: list[str]) -> np.ndarray:
            return np.stack([table[t] for t in texts])

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        texts = TextQueries(Embedder(), executor)
        worker = asyncio.create_task(texts.batcher.run())
        v = await texts.vector("2:dog + cat")
        assert v is not None and np.allclose(v, unit(np.array([2.0, 1.0, 0])))
        minus = await texts.vector("dog - cat")
        assert minus is not None and minus @ table["cat"] < 0
        assert await texts.vector("") is None
        worker.cancel()


def test_parse_query_is_bounded_and_linear() -> None:
    """40k characters of spaces between two words froze the server for 9 s (a quadratic regex on
    the event loop); 20k terms meant 20k passes of the text model. Now the text and the terms are
    capped, and what passes is parsed in one pass over its words."""
    with pytest.raises(BadValue, match="longer than 1,000 characters"):
        parse_query("a" + " " * 40_000 + "b")
    with pytest.raises(BadValue, match="at most 16"):
        parse_query(" + ".join(["dog"] * 17))
    with pytest.raises(BadValue, match="weight is at most 100"):
        parse_query("9" * 400 + ":dog")
    assert parse_query("a" + " " * 990 + "b") == [(1.0, "a b")]
    assert len(parse_query(" + ".join(["dog"] * 16))) == 16
    worst = "+ " * 400 + "x"  # 400 operators: parsed in one pass (its time: benchmarks/test_refine.py)
    assert parse_query(worst) == [(1.0, "x")]
