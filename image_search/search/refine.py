"""Query vectors from text and judged images: pure functions of arrays, no I/O.

``refine_query`` is Rocchio's relevance feedback on the unit sphere. Each part is normalised
before the parts are combined: the text vector, the mean direction of the liked images and the
mean direction of the rejected ones. (The prototype averaged a unit text vector with raw image
vectors, so a few liked images drowned the text.)

Default weights were measured with ``benchmarks/test_refine.py``: a simulated user on clustered
unit vectors who likes what belongs to the wanted cluster and rejects the rest of the page. In 108
worlds (clusters of 20-800 photos, three spreads, three distances between neighbouring clusters,
photos spread over the sphere or CLIP-like in one cone with the text off to its side; users who
judge 4+4 or 2+1 photos a round) text 1.0, liked 3.0, rejected 0.4 is at least the textbook
Rocchio (1, 0.75, 0.15) at every round of every world, and reaches 0.93 precision@24 by round 4
on average (Rocchio 0.83). Liked images count three times the text because a short query names
the subject but not the style or mood the user is ticking. The rejected weight stays low: at 0.75
(the weights before, chosen in one world) it fell 0.8 points behind Rocchio in easy worlds, where
both are near 1.0 and pushing away from a few near misses costs more than it gains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TEXT_WEIGHT = 1.0
LIKED_WEIGHT = 3.0
REJECTED_WEIGHT = 0.4

_EPS = 1e-8


class EmptyQuery(ValueError):
    """Nothing to search for: no text and no judged images."""


def _unit(vector: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(vector))
    return None if norm < _EPS else vector / norm


def _direction(rows: np.ndarray | Sequence[np.ndarray] | None) -> np.ndarray | None:
    """The mean direction of some vectors (each normalised first), or None."""
    if rows is None:
        return None
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.size == 0:
        return None
    matrix = matrix.reshape(-1, matrix.shape[-1])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    keep = norms[:, 0] > _EPS
    if not keep.any():
        return None
    return _unit((matrix[keep] / norms[keep]).mean(axis=0))


def refine_query(
    text: np.ndarray | None,
    positives: np.ndarray | Sequence[np.ndarray] | None = None,
    negatives: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    text_weight: float = TEXT_WEIGHT,
    liked_weight: float = LIKED_WEIGHT,
    rejected_weight: float = REJECTED_WEIGHT,
) -> np.ndarray:
    """The unit query vector for one round.

    ``text``: a unit vector or None (a round may have no text). ``positives`` and ``negatives``:
    arrays of shape (n, d), possibly empty. Liked images pull the query towards their mean
    direction, rejected ones push it away. Duplicates simply count twice in the mean.
    Raises :class:`EmptyQuery` when there is nothing to search for.
    """
    parts: list[np.ndarray] = []
    t = None if text is None else _unit(np.asarray(text, dtype=np.float32).reshape(-1))
    p = _direction(positives)
    n = _direction(negatives)
    if t is not None and text_weight:
        parts.append(text_weight * t)
    if p is not None and liked_weight:
        parts.append(liked_weight * p)
    if n is not None and rejected_weight:
        parts.append(-rejected_weight * n)
    if not parts:
        raise EmptyQuery("nothing to search for: give text, liked images or an image")
    query = _unit(np.sum(parts, axis=0))
    if query is None:  # the parts cancel exactly (say, the same image liked and rejected)
        raise EmptyQuery("the liked and rejected images cancel out: change the selection")
    return query.astype(np.float32)
