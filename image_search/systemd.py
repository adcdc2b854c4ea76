"""systemd: the notify protocol (READY, STATUS, WATCHDOG, STOPPING) for every long-running
command, and journald logging.

Uses systemd-python (the `systemd` extra) when installed; otherwise writes the same datagrams
to $NOTIFY_SOCKET itself. Without NOTIFY_SOCKET every call does nothing.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from typing import Any

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET")
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval = (
            int(usec) / 1e6 / 2 if usec and usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        )
        self._sd: Any = None
        if self.address:
            try:  # the systemd extra (systemd-python); it has no type information
                self._sd = importlib.import_module("systemd.daemon")
            except ImportError:
                self._sd = None

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        message = "\n".join(fields)
        try:
            if self._sd is not None:
                self._sd.notify(message)
                return
            address = self.address
            if address.startswith("@"):
                address = "\0" + address[1:]
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(message.encode())
        except OSError as exc:  # systemd gone: nothing to tell, nothing to break
            log.debug("notify failed: %s", exc)

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")


def journald_handler() -> logging.Handler | None:
    """A journald log handler when running under systemd with systemd-python installed."""
    if not os.environ.get("JOURNAL_STREAM") and not os.environ.get("INVOCATION_ID"):
        return None
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER="image-search")
    return handler
