"""Progress for long work on the command line (indexing, re-embedding, duplicate grouping): a bar
redrawn in place on a terminal, sized to it; a plain log line every ten seconds (and at the end)
where the output is a file, a pipe or the journal."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import Any, TextIO

log = logging.getLogger("image_search")

EVERY = 10.0  # seconds between plain lines
REDRAW = 0.1  # seconds between redraws of the bar


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Bar:
    """``bar.update(done, total, rate, eta)``; ``bar(progress)`` takes the indexer's progress."""

    def __init__(self, label: str, unit: str, stream: TextIO | None = None) -> None:
        self.label, self.unit = label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.last = -1e9
        self.ended = False
        self.started: float | None = None

    def __call__(self, progress: Any) -> None:
        self.update(progress.done, progress.total, progress.rate, progress.eta)

    def update(self, done: int, total: int, rate: float | None = None, eta: float | None = None) -> None:
        now, finished = time.monotonic(), total > 0 and done >= total
        if self.started is None:
            self.started = now
        if eta is None and 0 < done < total:  # from the pace so far
            eta = (now - self.started) * (total - done) / done
        if self.ended or (now - self.last < (REDRAW if self.tty else EVERY) and not finished):
            return
        self.last = now
        facts = f"{done}/{total} {self.unit}"
        if rate is not None:
            facts += f"  {rate:.1f} {self.unit}/s"
        if not finished:
            facts += f"  ETA {duration(eta) if eta is not None else '?'}"
        if not self.tty:
            log.info("%s: %s", self.label, facts)
        else:
            share = done / total if total else 0.0
            width = shutil.get_terminal_size((80, 24)).columns
            room = max(10, min(40, width - len(self.label) - len(facts) - 10))
            filled = int(room * share)
            bar = "#" * filled + "-" * (room - filled)
            self.stream.write(f"\r\033[K{self.label} [{bar}] {share:4.0%}  {facts}")
            if finished:
                self.stream.write("\n")
            self.stream.flush()
        self.ended = finished
