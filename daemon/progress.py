"""Progress: the daemon's state, its rate over the last 30 s, and the reports made of them (the
log, systemd's STATUS= and watchdog, and the ``status:daemon`` record a web server elsewhere reads)."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from image_search.indexing import Progress, StatusSnapshot, Summary
from image_search.store import Store, now
from image_search.systemd import Notifier

log = logging.getLogger("image_search.daemon")

STATUS_EVERY = 2.0
STUCK_AFTER = 600.0  # a work item without progress for this long stops the watchdog heartbeat
RATE_WINDOW = 30.0


@dataclass
class DaemonStatus:
    state: str = "starting"
    queue: int = 0
    rate: float = 0.0
    indexed_total: int = 0
    embedded_total: int = 0
    reused_total: int = 0
    failed_total: int = 0
    errors: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=20))
    offline_roots: list[str] = field(default_factory=list)
    last_reconcile: str | None = None
    paused: str | None = None

    @property
    def eta(self) -> float | None:
        return self.queue / self.rate if self.rate > 0 and self.queue else None

    def count(self, summary: Summary) -> None:
        self.indexed_total += summary.indexed + summary.reused
        self.embedded_total += summary.indexed
        self.reused_total += summary.reused
        self.failed_total += len(summary.failed)
        for path, error in summary.failed:
            self.errors.append({"path": path, "error": error})

    def line(self) -> str:
        eta = f", ETA {self.eta:.0f} s" if self.eta else ""
        return f"{self.state}: queue {self.queue}, {self.rate:.1f} img/s{eta}, {self.failed_total} failed"

    def snapshot(self) -> StatusSnapshot:
        return {
            "state": self.state,
            "queue": self.queue,
            "rate": round(self.rate, 2),
            "eta": self.eta,
            "indexed_total": self.indexed_total,
            "failed_total": self.failed_total,
            "errors": list(self.errors),
            "offline_roots": self.offline_roots,
            "last_reconcile": self.last_reconcile,
            "paused": self.paused,
            "updated_at": now(),
            "pid": os.getpid(),
        }


class RateMeter:
    """Files done per second over the last 30 s, from the indexer's progress callbacks. Each
    index run counts ``done`` from zero: the meter adds up what every run did, so a new batch of
    events does not read as a rate of zero (it did in 4 of 5 readings)."""

    def __init__(self) -> None:
        self.last_progress = time.monotonic()
        self._window: deque[tuple[float, int]] = deque(maxlen=64)
        self._total = 0
        self._run: tuple[float, int] = (0.0, 0)  # the run reporting (its start) and its done

    def __call__(self, progress: Progress) -> None:
        self.last_progress = time.monotonic()
        started, done = self._run
        if progress.started != started:  # another index run: it counts from zero
            done = 0
        self._total += max(0, progress.done - done)
        self._run = (progress.started, progress.done)
        self._window.append((self.last_progress, self._total))

    def rate(self, moment: float, busy: bool) -> float | None:
        """The rate now; None to keep the last one (busy, but too few points yet)."""
        window = [(t, d) for t, d in self._window if moment - t < RATE_WINDOW]
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            return max(0.0, (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))
        return None if busy else 0.0


class Reporter:
    """Every STATUS_EVERY seconds: refresh the status, tell systemd (STATUS=, WATCHDOG=1 unless a
    work item is stuck), write the status record, and log a progress line every 30 s."""

    def __init__(
        self,
        status: DaemonStatus,
        meter: RateMeter,
        notifier: Notifier,
        store: Store,
        pending: Callable[[], int],
        busy_since: Callable[[], float | None],
    ) -> None:
        self.status = status
        self.meter = meter
        self.notifier = notifier
        self.store = store
        self.pending = pending
        self.busy_since = busy_since
        self._last_log = 0.0

    @property
    def interval(self) -> float:
        return min(STATUS_EVERY, self.notifier.watchdog_interval or STATUS_EVERY)

    def stuck(self, moment: float) -> bool:
        since = self.busy_since()
        return (
            since is not None
            and moment - self.meter.last_progress > STUCK_AFTER
            and moment - since > STUCK_AFTER
        )

    async def report(self) -> None:
        moment = time.monotonic()
        self.status.queue = self.pending()
        rate = self.meter.rate(moment, self.busy_since() is not None)
        if rate is not None:
            self.status.rate = rate
        line = self.status.line()
        self.notifier.status(line)
        if not self.stuck(moment):
            self.notifier.watchdog()
        try:
            await self.store.set_status("daemon", dict(self.status.snapshot()))
        except Exception as exc:
            log.warning("cannot write the status record: %s", exc)
        if self.status.queue and moment - self._last_log > 30:
            log.info("%s", line)
            self._last_log = moment
