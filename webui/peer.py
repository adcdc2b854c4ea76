"""Who is on the other end of a loopback connection: the uid that owns the client's socket.

Asked of the kernel for that one socket (:func:`diag_uid`: a ``sock_diag`` netlink request, the
one ``ss`` makes, answered by a lookup, not a scan), or, where netlink is refused, read from its
socket tables (Linux ``/proc/net/tcp`` and ``/proc/net/tcp6``): the client's socket is the row
whose local address is the connection's peer and whose remote address is the server's own end;
its ``uid`` column is the account that opened it. Parsing the tables costs a line per socket on
the machine: with 15k sockets of another account the owner's connections went from 6 to 146 ms.
Another local account's connection is refused unless it brings the token (see :mod:`.security`)."""

from __future__ import annotations

import ipaddress
import socket
import struct
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


# sock_diag (linux/inet_diag.h): one request for one socket, by its four-tuple.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
_REQUEST = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
_ID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order)
_TAIL = struct.Struct("=I2I")  # interface, cookie (INET_DIAG_NOCOOKIE)
_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_MSG_UID = 4 + 48 + 3 * 4  # inet_diag_msg: family..retrans (4), id (48), expires, rqueue, wqueue; then uid


def _packed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, family: int) -> bytes:
    if family == socket.AF_INET6 and isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    return ip.packed.ljust(16, b"\0")


def diag_uid(peer: tuple[str, int], local: tuple[str, int], family: int) -> int | None:
    """The uid owning the client's socket of this TCP connection, asked of the kernel by its
    addresses (the client's socket: source = ``peer``, destination = ``local``); None when the
    kernel does not know it. OSError where netlink sock_diag is not allowed."""
    src, dst = _ip(peer[0]), _ip(local[0])
    request = (
        _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + _ID.pack(int(peer[1]), int(local[1]), _packed(src, family), _packed(dst, family))
        + _TAIL.pack(0, 0xFFFFFFFF, 0xFFFFFFFF)
    )
    message = _HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + request
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.sendto(message, (0, 0))
        answer = nl.recv(8192)
    length, kind, _, _, _ = _HEADER.unpack_from(answer)
    if kind == NLMSG_ERROR or length < _HEADER.size + _MSG_UID + 4:
        return None
    (uid,) = struct.unpack_from("=I", answer, _HEADER.size + _MSG_UID)
    return int(uid)


def owner(peer: tuple[str, int], local: tuple[str, int], tables: Iterable[str] = TABLES) -> int | None:
    """The uid owning the client's socket: by sock_diag (IPv4 then IPv6 sockets: a client on
    ``::ffff:127.0.0.1`` has one of either), else from the socket tables. Blocking: call it on a
    thread."""
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            if family == socket.AF_INET and ":" in peer[0] and _ip(peer[0]).version == 6:
                continue
            uid = diag_uid(peer, local, family)
            if uid is not None:
                return uid
        return None
    except OSError:
        return peer_uid(peer, local, tables)
