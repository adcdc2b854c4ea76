"""Which process holds the library, and where it answers.

The embedded database is one process's at a time (SurrealKV locks its folder). While ``serve`` or
``web`` holds it, they leave a small file beside the database folder saying where their API
answers; the library commands (``search``, ``status``, ``duplicates``, ``albums``, ``album``) read
it and become clients of that process instead of failing on the lock. The file is the owner's
alone (0600 in the 0700 data folder), like the database itself; it is removed at a clean exit,
and one left by a process that died is recognised by its process id and ignored.

A SurrealDB server (``ws://``) has no lock and no such file: every command opens it directly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import Config, beside_database

WILDCARD = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True)
class Service:
    """A running ``serve``/``web``: its API's base URL (loopback), process id and access token."""

    url: str
    pid: int
    token: str | None = None


def service_file(config: Config) -> Path | None:
    """``DIR.service.json`` beside an embedded database folder ``DIR``; None for mem:// and servers."""
    return beside_database(config.database_url, ".service.json")


def is_loopback(host: str) -> bool:
    """Only a real loopback address (or the name localhost) is loopback; an empty host binds
    every interface and is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_url(host: str, port: int) -> str:
    """Where a client on this machine reaches a listener on ``host``: a wildcard becomes loopback."""
    if host in WILDCARD:
        host = "::1" if ":" in host else "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's process reused the number: not ours
        return False
    return True


def find(config: Config) -> Service | None:
    """The process that holds this configuration's database now, if one announced itself."""
    path = service_file(config)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        service = Service(str(data["url"]), int(data["pid"]), data.get("token") or None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if service.pid == os.getpid() or not _alive(service.pid):
        return None
    return service


@contextlib.contextmanager
def announced(config: Config, url: str, token: str | None) -> Iterator[Path | None]:
    """Say where this process answers, until the block ends (written atomically, owner-only)."""
    path = service_file(config)
    if path is None:
        yield None
        return
    data = {"url": url, "pid": os.getpid(), "token": token}
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(temporary, path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(path.read_text(encoding="utf-8"))["pid"] == os.getpid():  # not a successor's
                path.unlink()
