"""Queries to the embedded engine, encoded by cbor2's C encoder instead of the SDK's Python one.

The SDK (3.0.0b10) encodes every request with a CBOR encoder written in Python: a 500-row write
of image rows took 25-40 ms of the event loop's thread (holding the GIL the model threads and the
decoders' results need), as long as the engine took to store it on an empty database. cbor2's C
encoder makes the same bytes in 5-11 ms. The request is the one the SDK sends (``{"id",
"method": "query", "params": [sql, vars]}``), with SurrealDB's tags as the SDK writes them: a
record id is tag 8 ``[table, id]``, None is NONE (tag 6); tests compare the bytes with the SDK's
own for every kind of value this project sends.

Anything else the SDK knows how to send (its own types, sets, integers past 64 bits) is not
encoded here: :func:`encode` returns None and the caller sends the query the SDK's way. The
engine is reached through the SDK connection's handle (``_db``, the pinned SDK's embedded
connection); where it is missing the SDK's path is used for every query.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from surrealdb import RecordID

_I64 = (-(2**63), 2**63 - 1)
_PLAIN = (str, bytes, bool, float, dt.datetime)


class _NoneValue:
    """Stands for None in the request: cbor2 writes None as CBOR null, SurrealDB's NULL; the SDK
    writes NONE (tag 6), which is what an absent option<...> field is."""


_NONE = _NoneValue()


class Unsupported(TypeError):
    """A value this encoder leaves to the SDK."""


def _default(encoder: Any, value: Any) -> None:
    import cbor2

    if type(value) is RecordID:
        encoder.encode(cbor2.CBORTag(8, [value.table_name, value.id]))
    elif value is _NONE:
        encoder.encode(cbor2.CBORTag(6, None))
    else:
        raise Unsupported(type(value).__name__)


def _prepared(value: Any) -> Any:
    """``value`` with None as NONE; :class:`Unsupported` for what only the SDK encodes."""
    kind = type(value)
    if value is None:
        return _NONE
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise Unsupported("a key that is not text")
        return {k: _prepared(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_prepared(v) for v in value]
    if kind is int:
        if not _I64[0] <= value <= _I64[1]:
            raise Unsupported("int past 64 bits")
        return value
    if kind in _PLAIN or kind is RecordID:
        if kind is dt.datetime and value.tzinfo is None:
            raise Unsupported("naive datetime")
        return value
    raise Unsupported(kind.__name__)


def encode(sql: str, params: dict[str, Any], request_id: str) -> bytes | None:
    """The SDK's query request for ``sql`` with ``params``, or None if the SDK must encode it."""
    try:
        import cbor2
    except ImportError:  # pragma: no cover - a dependency; without it the SDK encodes
        return None
    try:
        body = {"id": request_id, "method": "query", "params": [sql, _prepared(params)]}
        return bytes(cbor2.dumps(body, default=_default, timezone=dt.UTC))
    except Unsupported:
        return None


def engine(db: Any) -> Any:
    """The embedded engine behind an SDK connection (its ``execute(bytes) -> bytes``), or None."""
    handle = getattr(getattr(db, "_connection", db), "_db", None)
    return handle if callable(getattr(handle, "execute", None)) else None
