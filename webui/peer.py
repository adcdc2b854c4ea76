"""Who is on the other end of a loopback connection: the uid that owns the client's socket, read
from the kernel's socket tables (Linux ``/proc/net/tcp`` and ``/proc/net/tcp6``).

The client's socket is the row whose local address is the connection's peer and whose remote
address is the server's own end; its ``uid`` column is the account that opened it. Another local
account's connection is refused unless it brings the token (see :mod:`.security`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _decode(field: str) -> Address:
    """``0100007F:0BB8`` → (127.0.0.1, 3000): the kernel prints each 32-bit word in host order."""
    hex_ip, hex_port = field.split(":")
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return _ip(socket.inet_ntop(family, words)), int(hex_port, 16)


def _rows(tables: Iterable[str]) -> Iterable[list[str]]:
    for table in tables:
        try:
            with open(table, encoding="ascii") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield line.split()


def peer_uid(peer: tuple[str, int], local: tuple[str, int], tables: Iterable[str] = TABLES) -> int | None:
    """The uid owning the socket at ``peer`` connected to ``local``; None when it cannot be told
    (not Linux, no /proc, the connection already closed)."""
    want_peer = (_ip(peer[0]), int(peer[1]))
    want_local = (_ip(local[0]), int(local[1]))
    for fields in _rows(tables):
        try:
            if _decode(fields[1]) == want_peer and _decode(fields[2]) == want_local:
                return int(fields[7])
        except (ValueError, IndexError, OSError):
            continue
    return None
