"""How the refine weights were chosen: a simulated user on clustered unit vectors.

The library has 40 clusters in 8 families (clusters of one family are near each other: "beach
at sunset" beside "beach at noon"). The text vector points at the wanted cluster only roughly
(half the sessions precisely, half vaguely), so round 0 mixes in its neighbours. Each round the
user likes up to 4 of the 24 results that belong to the wanted cluster and rejects up to 4 that
do not; judged images leave the grid. The score is precision@24 after two refine rounds,
averaged over 2 x 40 libraries.
"""

from __future__ import annotations

import itertools

import numpy as np

from image_search.search.refine import LIKED_WEIGHT, REJECTED_WEIGHT, TEXT_WEIGHT, refine_query

D, FAMILIES, PER_FAMILY, PER_CLUSTER, PAGE = 64, 8, 5, 60, 24


def unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def library(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    families = unit(rng.normal(size=(FAMILIES, D)))
    centres = unit(families[:, None, :] + 0.35 * unit(rng.normal(size=(FAMILIES, PER_FAMILY, D))))
    centres = centres.reshape(-1, D)
    labels = np.repeat(np.arange(len(centres)), PER_CLUSTER)
    items = unit(centres[labels] + 0.55 * unit(rng.normal(size=(len(labels), D))))
    return items, labels


def session(items, labels, target, text, weights, rounds=2) -> float:
    liked: list[int] = []
    rejected: list[int] = []
    query = text
    for _ in range(rounds + 1):
        scores = items @ query
        scores[liked + rejected] = -np.inf
        page = np.argsort(-scores)[:PAGE]
        precision = float(np.mean(labels[page] == target))
        liked += [int(i) for i in page if labels[i] == target][:4]
        rejected += [int(i) for i in page if labels[i] != target][:4]
        query = refine_query(
            text,
            items[liked],
            items[rejected],
            text_weight=weights[0],
            liked_weight=weights[1],
            rejected_weight=weights[2],
        )
    return precision


def precision_for(weights, trials=40) -> float:
    rng = np.random.default_rng(42)
    results = []
    for text_noise in (0.7, 1.4):  # a precise and a vague query
        for _ in range(trials):
            items, labels = library(rng)
            target = int(rng.integers(labels.max() + 1))
            centre = unit(items[labels == target].mean(axis=0))
            text = unit(centre + text_noise * unit(rng.normal(size=D)))
            results.append(session(items, labels, target, text, weights))
    return float(np.mean(results))


def test_default_weights_are_the_measured_best(benchmark) -> None:
    grid = list(itertools.product([1.0], [0.5, 1.0, 1.5, 2.0, 3.0], [0.0, 0.25, 0.4, 0.5, 0.75, 1.0, 1.5]))
    table = {w: precision_for(w) for w in grid}
    no_feedback = precision_for((1.0, 0.0, 0.0))
    best = max(table, key=table.get)
    default = (TEXT_WEIGHT, LIKED_WEIGHT, REJECTED_WEIGHT)
    benchmark.extra_info.update(
        text_only=round(no_feedback, 3),
        default=round(table[default], 3),
        best=list(best),
        best_precision=round(table[best], 3),
        table={f"{w[1]}/{w[2]}": round(p, 3) for w, p in table.items()},
    )
    benchmark.pedantic(precision_for, args=(default, 5), rounds=1, iterations=1)
    print("\nliked/rejected weight → precision@24 after 2 rounds:")
    for w, p in sorted(table.items()):
        print(f"  {w[1]:>4} / {w[2]:<4}  {p:.3f}{'  <- default' if w == default else ''}")
    print(f"  text only: {no_feedback:.3f}")
    assert table[default] >= table[best] - 0.01
    assert table[default] > no_feedback + 0.1


# -- refine against the textbook, in wider worlds ---------------------------------------------------
#
# Each world: cluster sizes (a third of to twice the size given, so clusters differ), the spread of
# photos around their cluster's centre, how near a family's clusters sit to each other, and whether
# the photos are CLIP-like: all in one cone (mean cosine between random photos ~0.85) with the text
# vectors off to one side of it (the modality gap), or spread over the sphere. The user likes up to
# ``k_like`` of the page's wanted photos and rejects up to ``k_reject`` others each round.

SIZES, SPREADS, NEARNESS, CONES = (60, 150, 400), (0.35, 0.5, 0.65), (0.25, 0.4, 0.6), (0.0, 1.0)


def world(rng: np.random.Generator, size: int, spread: float, near: float, cone: float):  # type: ignore[no-untyped-def]
    shared = unit(rng.normal(size=D))
    families = unit(rng.normal(size=(FAMILIES, D)))
    centres = unit(families[:, None, :] + near * unit(rng.normal(size=(FAMILIES, PER_FAMILY, D)))).reshape(
        -1, D
    )
    labels = np.repeat(np.arange(len(centres)), rng.integers(size // 3, size * 2, size=len(centres)))
    items = unit(unit(centres[labels] + spread * unit(rng.normal(size=(len(labels), D)))) + cone * shared)
    return items, labels, shared


def rocchio(text: np.ndarray, liked: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """The textbook (Rocchio 1971, as in Manning et al.'s IR book): 1, 0.75, 0.15 on the raw means."""
    query = (
        text
        + (0.75 * liked.mean(axis=0) if len(liked) else 0)
        - (0.15 * rejected.mean(axis=0) if len(rejected) else 0)
    )
    return query / np.linalg.norm(query)


def ours(text: np.ndarray, liked: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    return refine_query(text, liked, rejected)


def rounds_of(method, items, labels, target, text, k_like=4, k_reject=4, rounds=5) -> list[float]:  # type: ignore[no-untyped-def]
    liked: list[int] = []
    rejected: list[int] = []
    query, precision = text, []
    for _ in range(rounds + 1):
        scores = items @ query
        scores[liked + rejected] = -np.inf
        page = np.argsort(-scores)[:PAGE]
        wanted = np.isin(labels[page], target)
        precision.append(float(wanted.mean()))
        liked += [int(i) for i, w in zip(page, wanted, strict=True) if w][:k_like]
        rejected += [int(i) for i, w in zip(page, wanted, strict=True) if not w][:k_reject]
        query = method(text, items[liked], items[rejected])
    return precision


def sessions(method, params, wanted=1, trials=20, **user) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Precision@24 at rounds 0-5 of each session (rows): a precise and a vague query on
    ``trials`` libraries each; the same libraries and queries for every method (one seed per
    world), so two methods' sessions pair up."""
    rng = np.random.default_rng(7)
    runs = []
    for text_noise in (0.7, 1.4):
        for _ in range(trials):
            items, labels, shared = world(rng, *params)
            target = rng.choice(labels.max() + 1, size=wanted, replace=False)
            centre = sum(items[labels == t].mean(axis=0) for t in target)
            centre = unit(centre - shared * (centre @ shared))
            gap = unit(rng.normal(size=D)) if params[3] else 0
            text = unit(centre + text_noise * unit(rng.normal(size=D)) + gap)
            runs.append(rounds_of(method, items, labels, target, text, **user))
    return np.array(runs)


def behind(ours_runs: np.ndarray, textbook_runs: np.ndarray) -> tuple[float, float]:
    """Over rounds 1-5: the smallest mean margin over the textbook, and the smallest margin less
    two standard errors of the paired sessions' differences (negative beyond the noise: behind)."""
    diff = (ours_runs - textbook_runs)[:, 1:]
    mean = diff.mean(axis=0)
    error = diff.std(axis=0, ddof=1) / np.sqrt(len(diff))
    return float(mean.min()), float((mean + 2 * error).min())


def test_refine_is_never_behind_rocchio(benchmark) -> None:
    """At every round of every world, precision@24 not below the textbook's beyond the
    simulation's noise (two standard errors of the paired sessions); at least 0.85 by round 4
    on average. Users who judge fewer photos (2 liked, 1 rejected a round) too."""
    worlds = list(itertools.product(SIZES, SPREADS, NEARNESS, CONES))
    table = {}
    for user in ({}, {"k_like": 2, "k_reject": 1}):
        for params in worlds:
            table[(params, str(user))] = (sessions(ours, params, **user), sessions(rocchio, params, **user))
    margins = {k: behind(o, r) for k, (o, r) in table.items()}
    closest = min(margins, key=lambda k: margins[k][0])
    round4 = float(np.mean([o[:, 4].mean() for (o, _) in table.values()]))
    textbook4 = float(np.mean([r[:, 4].mean() for (_, r) in table.values()]))
    # Two wanted clusters at once ("dogs or cats"): printed, not asserted.
    two = {p: (sessions(ours, p, wanted=2), sessions(rocchio, p, wanted=2)) for p in worlds[::3]}
    benchmark.extra_info.update(
        worlds=len(table), round4=round(round4, 3), rocchio_round4=round(textbook4, 3),
        closest_margin=round(margins[closest][0], 3), closest_world=str(closest),
        two_wanted_closest=round(min(behind(o, r)[0] for o, r in two.values()), 3),
    )  # fmt: skip
    benchmark.pedantic(sessions, args=(ours, worlds[0]), kwargs={"trials": 2}, rounds=1, iterations=1)
    print(f"\n{len(table)} worlds: round 4 precision@24 {round4:.3f} (Rocchio {textbook4:.3f}); "
          f"closest mean margin {margins[closest][0]:+.3f} in {closest}")  # fmt: skip
    for p, (o, r) in two.items():
        print(f"  two wanted {p}: ours {np.round(o.mean(0), 3)} Rocchio {np.round(r.mean(0), 3)}")
    beyond_noise = {k: m for k, m in margins.items() if m[1] < 0}
    assert not beyond_noise, {k: (table[k][0].mean(0), table[k][1].mean(0)) for k in beyond_noise}
    assert round4 >= 0.85


def test_the_worst_query_parses_in_linear_time(benchmark) -> None:
    """1,000 queries of 400 operators: ~0.1 s when parsing is linear (floor 5 s; it was quadratic
    once, and a 40 KB query took 9 s)."""
    from image_search.search.queries import parse_query

    worst = "+ " * 400 + "x"
    benchmark.pedantic(lambda: [parse_query(worst) for _ in range(1000)], rounds=3, iterations=1)
    assert benchmark.stats.stats.max < 5.0
