"""Near-duplicate candidates from the vectors: an exact self-join of the vector matrix, in row
blocks against the rows after them (the upper triangle), a tile of scores at a time, used when
the perceptual hashes cannot find them (:mod:`image_search.duplicates.grouping`). On CPUs with AVX-512
BF16 the products run in bfloat16 (AMX where present), several times faster than float32; a
bfloat16 score is within 0.012 of the true one (inputs and output rounded, each relative error
<= 2^-8, |x.y| <= 1), so candidates are taken 0.02 below the threshold and every candidate is
checked again in float32: the result is the exact one.

Past ``BOUNDS_FROM`` photos the join runs on fewer coordinates: each row's coordinates in the
library's main directions (the eigenvectors of its second moment, largest first) and one more,
the length of the rest. Their dot product bounds the cosine from above (Cauchy-Schwarz on the
rest), so every pair above the threshold still passes, and an unrelated pair passes only when the
directions left out could hide enough agreement. How many directions: the fewest of ``DIMS`` that
let few pairs of a sample of rows through; when none does, or the bounds let too many through
after all, every coordinate is used. The benchmark's CLIP-shaped vectors keep 159-191 of 768.
Measured: ``benchmarks/test_duplicates.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import BadValue

log = logging.getLogger(__name__)

BLOCK = 2048  # rows of one block
TILE = 4096  # columns of one tile of scores (32 MB in float32, 16 in bfloat16)
MARGIN = 0.02  # a bfloat16 dot product of unit vectors against the true one: within 0.012
BOUND_ERROR = 1e-4  # a float32 one of bounds (<= 769 terms of magnitude <= 1): within 5e-5
# Bounds from the main directions (see the module's note): tried from this many rows, with these
# many directions, the fewest whose bounds let through few pairs of a sample of rows.
BOUNDS_FROM = 20_000
DIMS = (63, 95, 127, 159, 191, 223, 255, 383)  # with the rest's length, 32·k coordinates (AMX tiles)
SAMPLE_ROWS = 2_000
BASIS_ROWS = 50_000
# Candidate pairs kept at most (32 MB of indices): a threshold so low that more pairs pass is
# refused instead of filling memory with n² pairs.
MAX_PAIRS = 2_000_000
Progress = Callable[[int, int], None]  # (done, total)


class TooManyPairs(BadValue):
    """The similarity asked for is so low that almost every pair of photos passes it."""


def _bf16_fast() -> bool:
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def similar_pairs(
    matrix: np.ndarray,
    threshold: float,
    *,
    bf16: bool | None = None,
    max_pairs: int = MAX_PAIRS,
    on_progress: Progress | None = None,
    dims: int | None = None,
) -> np.ndarray:
    """Every pair (i < j) of rows of a unit-vector matrix with cosine >= ``threshold``: an
    (m, 2) int array. Exact (see the module's note on bfloat16 and bounds). :class:`TooManyPairs`
    when more than ``max_pairs`` candidates pass, before they are gathered. ``on_progress(done,
    total)`` after each block, in compared pairs (the later blocks have fewer). ``dims``: the
    main directions the bounds keep (None: chosen from a sample; 0: none, every coordinate)."""
    import torch

    n = len(matrix)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    exact = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
    use_bf16 = _bf16_fast() if bf16 is None else bf16
    margin = MARGIN if use_bf16 else BOUND_ERROR
    wanted = dims != 0 and (dims is not None or n >= BOUNDS_FROM)
    basis = _basis(exact) if wanted else None
    if basis is not None and dims is None:
        dims = _choose_dims(exact, basis, threshold - margin, max_pairs // 4)
    if basis is not None and dims:
        log.info("near-duplicate pairs: bounds from %d of %d directions", dims, exact.shape[1])
        try:
            work = _bounding(exact, basis[:, :dims])
            return _join(
                exact,
                work.to(torch.bfloat16) if use_bf16 else work,
                threshold,
                margin,
                max_pairs,
                on_progress,
            )
        except TooManyPairs:  # the bounds let too much through: every coordinate decides
            log.info("near-duplicate pairs: the bounds let too many through; every coordinate decides")
    work = exact.to(torch.bfloat16) if use_bf16 else exact
    return _join(exact, work, threshold, margin, max_pairs, on_progress)


def _basis(exact: Any) -> Any:
    """The rows' main directions, most of their length first: eigenvectors of the second moment
    of up to ``BASIS_ROWS`` rows (any orthonormal basis keeps the bounds true; a good one keeps
    them tight)."""
    import torch

    n = len(exact)
    picked = (
        exact
        if n <= BASIS_ROWS
        else exact[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:BASIS_ROWS]]
    )
    moment = picked.double().T @ picked.double()
    _, vectors = torch.linalg.eigh(moment)
    return vectors.flip(1).float().contiguous()  # largest first


def _bounding(exact: Any, basis: Any) -> Any:
    """Rows as ``dims + 1`` coordinates whose dot products bound the cosines from above: the rows
    in the first ``dims`` main directions (Px), then the length of the rest (|Rx|): x.y = Px.Py +
    Rx.Ry <= Px.Py + |Rx||Ry| (Cauchy-Schwarz). |Rx| is raised by 1e-3 for float32's cancellation
    in |x|² - |Px|² (<= 1e-6), so the bound stays an upper bound."""
    import torch

    kept = exact @ basis
    rest = (exact.square().sum(1) - kept.square().sum(1)).clamp_(min=0).sqrt_() + 1e-3
    return torch.cat([kept, rest[:, None]], dim=1).contiguous()


def _choose_dims(exact: Any, basis: Any, floor: float, budget: int) -> int | None:
    """The fewest main directions whose bounds, on a sample of pairs, would let at most
    ``budget`` pairs of all through; None when none would (or the matrix is small)."""
    import torch

    n, d = exact.shape
    if n < BOUNDS_FROM:
        return None
    generator = torch.Generator().manual_seed(1)
    sample = exact[torch.randperm(n, generator=generator)[:SAMPLE_ROWS]]
    upper = torch.ones((len(sample), len(sample)), dtype=torch.bool).triu(1)
    share = 1 / int(upper.sum())
    for dims in [k for k in DIMS if k < d * 2 // 3]:
        bounds = _bounding(sample, basis[:, :dims])
        passing = int(((bounds @ bounds.T) >= floor)[upper].sum())
        if passing * share * n * (n - 1) / 2 <= budget:
            return dims
    return None


def _comparable(dtype: Any, floor: float) -> tuple[Callable[[Any], Any], Any]:
    """How to compare scores with ``floor`` fast: bfloat16 scores as their int16 bit patterns
    (for a positive floor these order like the values, and every negative value is below; the
    floor's pattern is cut toward zero, so no score at or above it is missed), which CPUs reduce
    several times faster than bfloat16 itself; other scores as they are."""
    import torch

    if dtype != torch.bfloat16 or floor <= 0:
        return (lambda scores: scores), floor
    bits = int(np.array(floor, dtype=np.float32).view(np.int32)) >> 16
    return (lambda scores: scores.view(torch.int16)), bits


def _join(
    exact: Any, work: Any, threshold: float, margin: float, max_pairs: int, on_progress: Progress | None
) -> np.ndarray:
    """The self-join of ``work``'s rows (whose dot products are at most ``margin`` below the
    cosines of ``exact``'s, or above them), every candidate checked on ``exact``."""
    import torch

    n = len(exact)
    floor = threshold - margin
    look, bar = _comparable(work.dtype, floor)
    found: list[np.ndarray] = []
    total = 0
    # Scores are made a tile at a time and looked at while the tile is still in the cache: a
    # row block against every later row at once wrote and read back 4 GB a block at 1M rows.
    tile = torch.empty((BLOCK, TILE), dtype=work.dtype)
    below = ~torch.ones((BLOCK, BLOCK), dtype=torch.bool).triu(1)  # the diagonal and under
    pairs_total = n * (n - 1) // 2
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        if on_progress is not None:
            # Pairs compared before this block: all those with a first row above ``start``.
            on_progress(pairs_total - (n - start) * (n - start - 1) // 2, pairs_total)
        rows = work[start:stop]
        for first in range(start, n, TILE):
            scores = tile[: stop - start, : min(TILE, n - first)]
            torch.matmul(rows, work[first : first + TILE].T, out=scores)
            if first == start:  # only pairs after the diagonal
                scores[:, : stop - start].masked_fill_(below[: stop - start, : stop - start], -2.0)
            hit_rows = torch.nonzero(look(scores).amax(dim=1) >= bar).flatten()
            if not len(hit_rows):
                continue
            hits = torch.nonzero(look(scores[hit_rows]) >= bar)
            total += len(hits)
            if total > max_pairs:
                raise TooManyPairs(
                    f"similarity {threshold:g} finds more than {max_pairs:,} candidate pairs among "
                    f"{n:,} photos: raise it"
                )
            i, j = hit_rows[hits[:, 0]] + start, hits[:, 1] + first
            true = (exact[i] * exact[j]).sum(dim=1)  # float32, the exact test
            keep = true >= threshold
            found.append(torch.stack([i[keep], j[keep]], dim=1).numpy())
    if on_progress is not None:
        on_progress(pairs_total, pairs_total)
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
