"""Progress for long work (#16, item 5): a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from image_search.cli.progress import Bar
from image_search.duplicates.vectorjoin import BLOCK, similar_pairs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("image_search.cli.progress.REDRAW", 0.0)
    out = Terminal()
    bar = Bar("indexing", "img", out)
    bar.update(0, 200, 0.0)
    bar.update(50, 200, 25.0, 6.0)
    bar.update(200, 200, 31.5)
    bar.update(200, 200, 31.5)  # once finished, nothing more
    frames = out.getvalue().split("\r\033[K")[1:]
    assert len(frames) == 3
    assert frames[1].startswith("indexing [") and " 25%  50/200 img  25.0 img/s  ETA 0:00:06" in frames[1]
    bar_25 = frames[1].split("[", 1)[1].split("]", 1)[0]
    assert bar_25.count("#") == len(bar_25) // 4 and set(bar_25) == {"#", "-"}
    assert frames[2].endswith("100%  200/200 img  31.5 img/s\n") and "-" not in frames[2].split("]")[0]


def test_plain_lines_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()  # a pipe or a file: no control characters, a line now and then
    bar = Bar("grouping", "pairs", out)
    with caplog.at_level(logging.INFO, logger="image_search"):
        for done in range(0, 1001, 10):
            bar.update(done, 1000)
    assert out.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("grouping: 0/1000 pairs") and lines[-1] == "grouping: 1000/1000 pairs"
    assert len(lines) == 2  # the first and the last: the rest came within ten seconds


def test_duplicate_grouping_reports_its_progress() -> None:
    rng = np.random.default_rng(1)
    n = 2 * BLOCK + 100
    matrix = rng.standard_normal((n, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    seen: list[tuple[int, int]] = []
    similar_pairs(matrix, 0.95, on_progress=lambda done, total: seen.append((done, total)))
    total = n * (n - 1) // 2
    assert [t for _, t in seen] == [total] * 4 and seen[0][0] == 0 and seen[-1][0] == total
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and dones[1] == total - (n - BLOCK) * (n - BLOCK - 1) // 2
