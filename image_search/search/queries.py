"""Query text and judged images → one unit query vector, for the web server and the command line.

``parse_query`` reads the arithmetic (``beach + sunset - people``, ``2:dog + cat``) in one pass
over the words; :class:`TextQueries` embeds the terms on the CPU, batched across concurrent
callers and cached; :func:`session_vector` combines text, liked and rejected images
(``refine.refine_query``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from ..errors import BadValue
from .library import Library
from .refine import EmptyQuery, refine_query

TEXT_CACHE = 512
# Each term is a pass of the text model: the caps bound what one request can make it do.
MAX_QUERY_CHARS = 1000
MAX_TERMS = 16
MAX_WEIGHT = 100.0
_WEIGHT = re.compile(r"\d+(?:\.\d+)?")

T = TypeVar("T")
R = TypeVar("R")


def parse_query(query: str) -> list[tuple[float, str]]:
    """``"beach + sunset - people"`` → ``[(1, "beach"), (1, "sunset"), (-1, "people")]``;
    ``"2:dog + cat"`` → ``[(2, "dog"), (1, "cat")]``.

    Operators count only as words of their own with a space after them, so "black-and-white"
    and "a +1 phone" stay one term. Empty terms are dropped. Linear in the length of the query.
    :class:`BadValue` above MAX_QUERY_CHARS characters, MAX_TERMS terms or a weight of MAX_WEIGHT.
    """
    if len(query) > MAX_QUERY_CHARS:
        raise BadValue(f"the query is longer than {MAX_QUERY_CHARS:,} characters: say it in fewer words")
    words = query.split()
    trailing_space = query[-1:].isspace()
    terms: list[tuple[float, str]] = []
    sign, current = 1.0, list[str]()
    for i, word in enumerate(words):
        if word in ("+", "-") and (i < len(words) - 1 or trailing_space):
            _add_term(terms, sign, current)
            sign, current = (-1.0 if word == "-" else 1.0), []
        else:
            current.append(word)
    _add_term(terms, sign, current)
    if len(terms) > MAX_TERMS:
        raise BadValue(f"the query has {len(terms)} terms; at most {MAX_TERMS} are combined")
    return terms


def _add_term(terms: list[tuple[float, str]], sign: float, words: list[str]) -> None:
    text, weight = " ".join(words), 1.0
    head, colon, rest = text.partition(":")
    if colon and _WEIGHT.fullmatch(head.strip()):
        weight, text = float(head), rest.strip()
        if not weight <= MAX_WEIGHT:
            raise BadValue(f"a term's weight is at most {MAX_WEIGHT:g} ({head.strip()[:20]} given)")
    if text:
        terms.append((sign * weight, text))


def combine_terms(terms: Sequence[tuple[float, str]], vectors: np.ndarray) -> np.ndarray | None:
    """Weighted sum of the terms' unit vectors, normalised (None if they cancel)."""
    weights = np.array([w for w, _ in terms], dtype=np.float32)[:, None]
    total = (weights * np.asarray(vectors, dtype=np.float32)).sum(axis=0)
    norm = float(np.linalg.norm(total))
    return None if norm < 1e-8 else total / norm


class Batcher(Generic[T, R]):
    """Runs ``fn(items) -> results`` in an executor. Requests that arrive while a batch runs go
    together into the next one: no added wait when idle, one model pass or one matrix product
    for many requests under load. Whoever creates it runs :meth:`run` as a task it owns."""

    def __init__(
        self, fn: Callable[[list[T]], list[R]], executor: concurrent.futures.Executor, max_batch: int = 16
    ) -> None:
        self.fn = fn
        self.executor = executor
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            batch = [(item, future) for item, future in batch if not future.cancelled()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    if not batch[0][1].done():
                        batch[0][1].set_exception(exc)
                    continue
                # One request's input broke the batch: each alone, so that only it fails (one
                # hostile query among 24 failed 15 of them, three rounds in a row).
                for item, future in batch:
                    try:
                        (value,) = await loop.run_in_executor(self.executor, self.fn, [item])
                    except Exception as alone:
                        if not future.done():
                            future.set_exception(alone)
                    else:
                        if not future.done():
                            future.set_result(value)
                continue
            for (_, future), value in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(value)


class Embeds(Protocol):
    def embed_texts(self, texts: list[str]) -> np.ndarray: ...


class TextQueries:
    """Query text → unit vector on the CPU, batched across concurrent callers, with an LRU cache.
    Run :attr:`batcher`'s ``run()`` as a task for as long as it is used."""

    def __init__(self, embedder: Embeds, executor: concurrent.futures.Executor) -> None:
        self.embedder = embedder
        self.batcher: Batcher[str, np.ndarray] = Batcher(self._embed, executor)
        self.cache: OrderedDict[str, np.ndarray | None] = OrderedDict()

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.embedder.embed_texts(texts))

    async def vector(self, text: str) -> np.ndarray | None:
        key = " ".join(text.split())
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        terms = parse_query(key)
        vector = None
        if terms:
            vectors = await asyncio.gather(*(self.batcher.submit(term) for _, term in terms))
            vector = combine_terms(terms, np.stack(vectors))
        self.cache[key] = vector
        if len(self.cache) > TEXT_CACHE:
            self.cache.popitem(last=False)
        return vector


@dataclass
class Session:
    """One round of a refine session: text, the ids liked and rejected, and the weights."""

    text: str = ""
    liked: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)


async def session_vector(
    library: Library,
    texts: TextQueries,
    session: Session,
    extra_positive: np.ndarray | None = None,
) -> np.ndarray:
    """The unit query vector of a refine session. :class:`UnknownImage` for a liked or rejected
    id the library lacks, :class:`EmptyQuery` when there is nothing to search for."""
    positives = library.vectors(session.liked, "liked")
    negatives = library.vectors(session.rejected, "rejected")
    text_vec = await texts.vector(session.text) if session.text.strip() else None
    if extra_positive is not None:
        positives = np.vstack([positives.reshape(-1, extra_positive.shape[1]), extra_positive])
    kwargs = {f"{name}_weight": value for name, value in session.weights.items()}
    return refine_query(text_vec, positives, negatives, **kwargs)


__all__ = [
    "Batcher",
    "EmptyQuery",
    "Session",
    "TextQueries",
    "combine_terms",
    "parse_query",
    "session_vector",
]
