"""What the commands print, safe to print: a file name is any bytes but NUL and "/", so a name
with a newline (``orig.jpg\\nz.jpg``) printed raw reads as two paths, and one with escape codes
can rewrite the terminal or forge a log line. Lines escape control characters (and bytes that are
not UTF-8) as ``\\xNN``; ``-0/--null`` prints the exact bytes, each path ended by NUL, for
``xargs -0``."""

from __future__ import annotations

import logging
import os
import sys
import unicodedata
from collections.abc import Iterable

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def printable(text: str) -> str:
    """``text`` with control characters and undecodable bytes (surrogates) escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif "\udc80" <= char <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def print_paths(paths: Iterable[str], null: bool) -> None:
    """One path a line (escaped), or with ``null`` each path's bytes followed by NUL."""
    if null:
        out = sys.stdout.buffer
        for path in paths:
            out.write(os.fsencode(path) + b"\0")
        out.flush()
        return
    for path in paths:
        print(printable(path))


def null_flag(p: object) -> None:
    p.add_argument(  # type: ignore[attr-defined]
        "-0",
        "--null",
        action="store_true",
        help="End each path with NUL instead of a newline, its bytes exact (for xargs -0).",
    )


class OneLine(logging.Filter):
    """Every log record one line, whatever its message holds: control characters escaped (a file
    name cannot forge a line), and a malformed request from a client (a request line that is not
    UTF-8) logged as one line without its traceback (it logged ~11, unauthenticated)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__module__ == "aiohttp.http_exceptions":
            reason = " ".join(str(getattr(exc, "message", exc)).split())
            record.msg, record.args = f"{record.getMessage()}: {reason}", None
            record.exc_info, record.exc_text = None, None
        message = record.getMessage()
        escaped = printable(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True
