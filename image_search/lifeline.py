"""Helper processes never outlive the command that started them. A command killed with SIGKILL
(the OOM killer, ``kill -9``) runs no clean-up: its forkserver and decoding workers, re-parented
to PID 1, went on holding memory (a test run once left 27 of them, ~5 GB).

- The forkserver watches its parent: it exits within :data:`INTERVAL` of the parent's death
  (:mod:`._forkserver` starts the watch there, through the forkserver's preload list).
- A worker the forkserver forks asks the kernel for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``). That signal follows the thread that forked it: the forkserver's main
  thread, which lives as long as the forkserver, so it is safe there and only there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

INTERVAL = 0.5  # seconds between two looks at the parent
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux); at once if it is already gone."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # it died before the request was in place
        os._exit(1)


def watch_parent(interval: float = INTERVAL) -> threading.Thread:
    """A daemon thread that ends this process as soon as its parent is no longer the one it had."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    thread = threading.Thread(target=watch, name="lifeline", daemon=True)
    thread.start()
    return thread
