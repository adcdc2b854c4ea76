"""Text embedding on the CPU with the ViT-L/14 text tower: int8 ≤ 10 ms p50 on 2 cores."""

from __future__ import annotations

import numpy as np
import pytest

from image_search.models.model import ModelSource, TextEmbedder

QUERY = "a dog running on the beach at sunset"


@pytest.fixture(scope="module")
def towers(vit_l14: ModelSource) -> dict[str, TextEmbedder]:
    return {dtype: TextEmbedder(vit_l14, dtype).load() for dtype in ("int8", "float32")}


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_text_embedding(benchmark, towers: dict[str, TextEmbedder], vit_l14: ModelSource, dtype: str) -> None:
    embedder = towers[dtype]
    tokens = len(embedder.tokenizer(QUERY)["input_ids"])
    benchmark.pedantic(embedder.embed_texts, args=([QUERY],), rounds=50, iterations=1, warmup_rounds=3)
    benchmark.extra_info.update(weights="random" if vit_l14.random_weights else "real", tokens=tokens)
    if dtype == "int8":
        assert benchmark.stats.stats.median <= 0.010


def test_int8_matches_float32(towers: dict[str, TextEmbedder]) -> None:
    queries = [QUERY, "mountains", "a red car in the snow", "birthday party with balloons"]
    cos = (towers["int8"].embed_texts(queries) * towers["float32"].embed_texts(queries)).sum(axis=1)
    assert float(np.min(cos)) >= 0.99, cos
