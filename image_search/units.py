"""systemd user units: one template each, rendered for an install (``image-search install-service``)
and kept in systemd/ for reading (a test checks those files match what is rendered here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

DEFAULT_EXEC = "%h/.local/lib/image-search/venv/bin/image-search"

_COMMON_SERVICE = """\
Restart=on-failure
RestartSec=10
# The daemon sends WATCHDOG=1 every few seconds from its working loop; it stops when a batch has
# made no progress for 10 minutes, and systemd then restarts it.
WatchdogSec=60
# Loading ViT-L/14 and warming it can take a while on a first start (the model download too).
TimeoutStartSec=900
TimeoutStopSec=20
Environment=PYTHONUNBUFFERED=1
# Indexing must not slow the desktop down.
Nice=10
CPUSchedulingPolicy=batch
IOSchedulingClass=idle
# Hardening: the picture folders are only read; only the data and cache folders are written.
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths=%h/.local/share/image-search %h/.cache/image-search -%h/.cache/huggingface
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# Files it creates (database, thumbnails, album folders) are this user's alone.
UMask=0077
# ViT-L/14 and 1M vectors fit well below this; a runaway request cannot take the desktop's memory.
MemoryHigh=6G
MemoryMax=8G
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# The GPU stays reachable: PrivateDevices= would hide /dev/dri, /dev/kfd and /dev/nvidia*, and
# ProcSubset=pid would hide /proc/net/tcp, which tells the owner's browser from other accounts.
DevicePolicy=closed
DeviceAllow=char-drm rw
DeviceAllow=/dev/kfd rw
DeviceAllow=char-nvidiactl rw
DeviceAllow=char-nvidia-frontend rw
DeviceAllow=char-nvidia-uvm rw
"""

UNITS = {
    "image-search.service": """\
[Unit]
Description=image-search: semantic search over your photos (daemon and web UI)
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec} serve
{common}
[Install]
WantedBy=default.target
""",
    "image-search-daemon.service": """\
[Unit]
Description=image-search daemon: keeps a SurrealDB server's index equal to your picture folders
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec} daemon
{common}
[Install]
WantedBy=default.target
""",
    "image-search-web.service": """\
[Unit]
Description=image-search web UI against a SurrealDB server (the daemon runs elsewhere)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec} web
{common}
[Install]
WantedBy=default.target
""",
}


DEFAULT_WRITABLE = "%h/.local/share/image-search %h/.cache/image-search -%h/.cache/huggingface"


def render(name: str, executable: str = DEFAULT_EXEC, writable: str = DEFAULT_WRITABLE) -> str:
    """The unit; ``writable`` is its ReadWritePaths= (see :func:`writable_paths`)."""
    common = _COMMON_SERVICE.replace(f"ReadWritePaths={DEFAULT_WRITABLE}", f"ReadWritePaths={writable}")
    return UNITS[name].format(exec=executable, common=common)


def writable_paths(required: Sequence[Path], optional: Sequence[Path] = (), home: Path | None = None) -> str:
    """ReadWritePaths= for these folders (``%h`` for the home folder, ``-`` before the optional
    ones, each once): under ProtectSystem=strict everything else is read-only, so a database or
    cache moved elsewhere must be named here."""
    home = home or Path.home()

    def spelled(path: Path) -> str:
        path = path.expanduser().absolute()
        return "%h/" + str(path.relative_to(home)) if path.is_relative_to(home) else str(path)

    names = [spelled(p) for p in required] + ["-" + spelled(p) for p in optional]
    return " ".join(dict.fromkeys(names))


def install(
    directory: Path, executable: str, names: list[str], writable: str = DEFAULT_WRITABLE
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = directory / name
        path.write_text(render(name, executable, writable))
        written.append(path)
    return written
